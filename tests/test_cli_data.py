"""`bitat-tf binarize MODEL --data PATH` on the user's own data: image folders, .npz, TFRecord."""

import json
import os

import numpy as np
import pytest

from bitat_tf._compat import keras, tf
from bitat_tf.cli import main
from bitat_tf.errors import DatasetError
from bitat_tf.userdata import load_user_data

L = keras.layers
FAST = ["--steps-per-layer", "1", "--finetune-steps", "0", "--max-groups", "4", "--batch-size", "8", "--verbose", "0"]


def _model(tmp_path, shape=(12, 12, 3), classes=3):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape)
    h = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    h = L.BatchNormalization()(h)
    h = L.Conv2D(8, 3, padding="same", name="conv")(h)
    model = keras.Model(inputs, L.Dense(classes, name="head")(L.GlobalAveragePooling2D()(h)))
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def _images(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 3


def _write_folder(root):
    x, y = _images()
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        tf.io.write_file(str(folder / f"{i}.png"), tf.io.encode_png(image))
    return root


def _write_tfrecord(path, image_key="image", label_key="label"):
    x, y = _images()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(x, y):
            feature = {image_key: tf.train.Feature(bytes_list=tf.train.BytesList(
                           value=[tf.io.encode_jpeg(image).numpy()])),
                       label_key: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return path


def _run(tmp_path, data, *extra):
    report = tmp_path / "report.json"
    out = tmp_path / "binary.keras"
    code = main(["binarize", str(_model(tmp_path)), "--data", str(data), *FAST, "--report", str(report),
                 "--output", str(out), *extra])
    assert code == 0
    rows = json.loads(report.read_text())
    assert [r["name"] for r in rows["layers"] if r["binarized"]] == ["conv"]
    assert rows["accuracy_split"] == "validation" and out.exists()
    return rows


def test_folder_of_class_folders_runs_end_to_end(tmp_path):
    _run(tmp_path, _write_folder(tmp_path / "photos"))


def test_npz_runs_end_to_end_and_is_resized(tmp_path):
    x, y = _images()
    np.savez(tmp_path / "data.npz", x=x, y=y)  # 16x16 images for a 12x12 model
    _run(tmp_path, tmp_path / "data.npz")


def test_tfrecord_with_named_features_runs_end_to_end(tmp_path):
    path = _write_tfrecord(tmp_path / "data.tfrecord", image_key="jpeg", label_key="cls")
    _run(tmp_path, path, "--image-key", "jpeg", "--label-key", "cls")


def test_export_verifies_on_the_users_data(tmp_path, capsys):
    data = _write_folder(tmp_path / "photos")
    _run(tmp_path, data)
    assert main(["export", str(tmp_path / "binary.keras"), str(tmp_path / "m.tflite"), "--verify-data",
                 str(data)]) == 0
    out = capsys.readouterr().out
    assert "LceBconv2d': 1" in out and "top-1 agreement" in out and (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("setup,match", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "one" / "only").mkdir(parents=True) or p / "one", "1 class folder.*at least two"),
    (lambda p: np.savez(p / "bad.npz", images=np.zeros((4, 12, 12, 3))) or p / "bad.npz", "arrays named 'x'"),
    (lambda p: np.savez(p / "flat.npz", x=np.zeros((4, 12)), y=np.zeros(4)) or p / "flat.npz",
     "x has shape \\(4, 12\\).*expected x of \\(n, height, width, 3\\)"),
    (lambda p: np.savez(p / "same.npz", x=np.zeros((4, 12, 12, 3)), y=np.zeros(4)) or p / "same.npz",
     "1 class; a classifier needs at least two"),
])
def test_bad_user_data_gets_a_clear_error(tmp_path, setup, match):
    with pytest.raises(DatasetError, match=match):
        load_user_data(str(setup(tmp_path)), input_shape=(12, 12, 3))


def test_labels_beyond_the_models_outputs_are_refused(tmp_path, capsys):
    x, _ = _images()
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(len(x)) % 5)  # 5 classes, 3 outputs
    assert main(["binarize", str(_model(tmp_path)), "--data", str(tmp_path / "data.npz"), *FAST]) == 2
    assert "range over [0, 4] but the model has 3 outputs" in capsys.readouterr().err


def test_cli_start_up_prints_no_native_noise():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}
    proc = subprocess.run([sys.executable, "-m", "bitat_tf", "binarize", "--help"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "--validation-split" in proc.stdout
    assert "cuInit" not in proc.stderr and "oneDNN" not in proc.stderr and "absl" not in proc.stderr, proc.stderr


def test_cli_runs_the_default_recipe_unless_told_paper():
    import bitat_tf
    from bitat_tf.cli import _config_from, build_parser

    parse = lambda *extra: _config_from(build_parser().parse_args(["binarize", "m.keras", "--data", "d", *extra]))  # noqa: E731
    assert parse() == bitat_tf.BinarizeConfig()
    assert parse("--paper", "--epochs-per-layer", "2") == bitat_tf.BinarizeConfig.paper(epochs_per_layer=2.0)
    assert parse("--final-finetune-epochs", "3").final_finetune_epochs == 3.0
    assert parse("--paper", "--final-finetune-epochs", "pass").final_finetune_epochs == "pass"
    assert parse("--final-pass-multiple", "3").final_pass_multiple == 3.0


def test_cifar_augmentation_is_the_same_on_every_run_and_new_every_epoch():
    """The benchmark's crops and flips come from the seed alone: two pipelines built with one seed yield the
    same batches (stateful random ops in a parallel map draw in thread order, and without a global seed
    from a fresh seed on every build), another seed other ones, and a second epoch other ones."""
    from bitat_tf import data

    def batches(seed, epochs=1):
        ds = data.load_cifar10("train", limit=64, batch_size=32, augment=True, shuffle=False, seed=seed)
        return [x.numpy() for x, _ in ds.repeat(epochs)]

    first, again = batches(0), batches(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, batches(1)))
    two = batches(0, epochs=2)
    assert not np.array_equal(two[0], two[2])  # the same images (no shuffle), augmented anew


def test_cifar_augmentation_crops_the_padded_image_and_mirrors_it():
    """Every augmented image is a 32 x 32 window of its image zero-padded by 4 (offsets 0..8), mirrored or
    not, and both the extreme offsets and both flips occur."""
    from bitat_tf import data

    load = dict(limit=128, batch_size=64, shuffle=False, seed=3)
    plain = np.concatenate([x.numpy() for x, _ in data.load_cifar10("train", **load)])
    augmented = np.concatenate([x.numpy() for x, _ in data.load_cifar10("train", augment=True, **load)])
    padded = np.pad(plain, [(0, 0), (4, 4), (4, 4), (0, 0)])

    def candidates(original):  # (row offset, column offset, mirrored), window
        for i in range(9):
            for j in range(9):
                window = original[i:i + 32, j:j + 32]
                yield (i, j, False), window
                yield (i, j, True), window[:, ::-1]

    found = []
    for original, image in zip(padded, augmented):
        matches = [key for key, window in candidates(original) if np.array_equal(image, window)]
        assert matches, "an augmented image is no crop of its padded original"
        found.append(matches[0])
    offsets = {o for i, j, _ in found for o in (i, j)}
    assert {0, 8} <= offsets and {m for *_, m in found} == {False, True}


def test_a_run_that_diverges_ends_with_a_message_and_exit_code_2_not_a_traceback(tmp_path, capsys, monkeypatch):
    """TrainingError is a RuntimeError, not a BitatError: the command line must still report it plainly."""
    from bitat_tf import cli
    from bitat_tf.errors import TrainingError

    def diverge(args):
        raise TrainingError("training diverged during block1 quantize (loss nan); lower the learning rate")

    monkeypatch.setattr(cli, "run_binarize", diverge)
    assert main(["binarize", str(_model(tmp_path)), "--data", "unused.npz", *FAST]) == 2
    assert "bitat-tf: error: training diverged" in capsys.readouterr().err


def test_epochs_alone_runs_the_recipe_chosen_for_the_budget_and_says_which(tmp_path, capsys):
    x, y = _images()
    np.savez(tmp_path / "data.npz", x=x, y=y)
    report = tmp_path / "report.json"
    assert main(["binarize", str(_model(tmp_path)), "--data", str(tmp_path / "data.npz"), "--epochs", "2",
                 "--seed", "1", "--batch-size", "8", "--verbose", "1", "--report", str(report)]) == 0
    recipe = json.loads(report.read_text())["recipe"]
    assert recipe["recipe"] == "default" and recipe["epochs"] == 2.0 and recipe["binarized_layers"] == 1
    assert f"recipe: {recipe['description']}: {recipe['reason']}" in capsys.readouterr().out


def test_epochs_with_configuration_flags_is_refused_before_anything_loads(tmp_path, capsys):
    argv = ["binarize", str(tmp_path / "missing.keras"), "--data", "digits", "--epochs", "2"]
    assert main([*argv, "--steps-per-layer", "1", "--max-groups", "2", "--deterministic"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 2 chooses the recipe" in err and "--max-groups, --steps-per-layer set them" in err
    assert "choose one" in err and "missing.keras" not in err
    assert main([*argv, "--paper"]) == 2 and "--paper sets them yourself" in capsys.readouterr().err


def test_deterministic_flag_sets_the_config():
    import bitat_tf
    from bitat_tf.cli import _config_from, _configuration_flags, build_parser

    parse = lambda *extra: build_parser().parse_args(["binarize", "m.keras", "--data", "d", *extra])
    assert _config_from(parse("--deterministic", "--seed", "3")) == bitat_tf.BinarizeConfig(deterministic=True,
                                                                                             seed=3)
    assert _config_from(parse()).deterministic is False
    assert _configuration_flags(parse("--seed", "3")) == []
    assert _configuration_flags(parse("--paper", "--deterministic")) == ["--paper"]  # --epochs passes both on
