"""Every bad input gets an error that names the problem and the fix, never a silently wrong model."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import BinarizeConfig
from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError, DatasetError, UnsupportedModelError
from conftest import make_cnn


@pytest.fixture(scope="module")
def model():
    return make_cnn(keras)


def _ds(x, y=None, batch=16):
    data = (x,) if y is None else (x, y)
    return tf.data.Dataset.from_tensor_slices(data if y is not None else x).batch(batch)


X = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
Y = np.arange(32) % 10


@pytest.mark.parametrize("dataset,match", [
    (_ds(X), "not \\(x, y\\) pairs.*labels"),
    (_ds(X[:0], Y[:0]), "empty"),
    (_ds(np.zeros((32, 9, 9, 1), "float32"), Y), "shape.*expects"),
    (_ds(X, Y + 5), "labels in its first batch range over \\[5, 14\\].*10 outputs"),
    (_ds(X, np.zeros((32, 3), "int64")), "labels have shape"),
    (_ds(X, Y.astype("float32") + 0.5), "not class indices"),
    (_ds(np.where(X > 0.5, np.nan, X).astype("float32"), Y), "NaN"),
    (tf.data.Dataset.from_tensor_slices((X, Y)), "single examples.*batch"),
])
def test_bad_datasets(model, dataset, match):
    with pytest.raises(DatasetError, match=match):
        bitat_tf.binarize(model, dataset, verbose=0)


def test_not_a_dataset(model):
    with pytest.raises(DatasetError, match="from_tensor_slices"):
        bitat_tf.binarize(model, (X, Y), verbose=0)


def test_bad_validation_data_is_named(model):
    with pytest.raises(DatasetError, match="validation_data"):
        bitat_tf.binarize(model, _ds(X, Y), validation_data=_ds(X), verbose=0)


def test_infinite_dataset_needs_step_budgets(model):
    with pytest.raises(DatasetError, match="repeats forever.*steps_per_epoch=N.*steps_per_layer"):
        bitat_tf.binarize(model, _ds(X, Y).repeat(), verbose=0)


def test_infinite_dataset_runs_on_step_budgets(model):
    """With every phase's budget in steps a repeated dataset binarizes (no last phase by default)."""
    config = BinarizeConfig.paper(steps_per_layer=1, finetune_steps=1, keep_full_precision=["block1_b", "block2_a"],
                            bn_recalibration_batches=1)
    result = bitat_tf.binarize(model, _ds(X, Y).repeat(), validation_data=_ds(X, Y), config=config, verbose=0)
    assert [r.name for r in result.report.layers if r.binarized] == ["block1_a"]


def test_one_hot_labels_are_accepted(model):
    onehot = np.eye(10, dtype="float32")[Y]
    result = bitat_tf.binarize(model, _ds(X, onehot), config=BinarizeConfig.paper(
        steps_per_layer=1, finetune_steps=0, keep_full_precision=["block1_b", "block2_a"],
        bn_recalibration_batches=1), verbose=0)
    assert [r.name for r in result.report.layers if r.binarized] == ["block1_a"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(variant="fancy"), "variant must be one of"),
    (dict(max_groups=0), "max_groups"),
    (dict(quant_weight=-1.0), "quant_weight"),
    (dict(quant_weight=float("nan")), "quant_weight"),
    (dict(learning_rate=2.0), "learning_rate"),
    (dict(epochs_per_layer=0), "quantisation budget is zero"),
    (dict(steps_per_layer=2.5), "steps_per_layer"),
    (dict(blocks="bogus"), "blocks"),
    (dict(blocks=[["a"], "b"]), "blocks"),
    (dict(threshold_init="max"), "threshold_init"),
    (dict(capture_rows=0), "capture_rows"),
    (dict(seed=-1), "seed"),
    (dict(keep_full_precision=["x"], force_binarize=["x"]), "both"),
    (dict(max_groups=True), "max_groups"),
])
def test_config_values_out_of_range(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BinarizeConfig(**kwargs)


def test_config_is_keyword_only_and_round_trips():
    with pytest.raises(TypeError):
        BinarizeConfig("bitat")  # noqa
    config = BinarizeConfig.paper(variant="intra", max_groups=4, keep_full_precision=["a"], blocks=[["a", "b"]])
    assert BinarizeConfig.from_config(config.get_config()) == config
    assert "variant='intra'" in repr(config)


def test_config_must_be_a_binarize_config(model):
    with pytest.raises(ConfigError, match="BinarizeConfig"):
        bitat_tf.binarize(model, _ds(X, Y), config={"variant": "bitat"}, verbose=0)


def test_keras3_model_gets_an_answer_not_a_stack_trace():
    import keras as keras3

    k3 = keras3.Sequential([keras3.Input((8, 8, 1)), keras3.layers.Conv2D(4, 3), keras3.layers.Lambda(
        lambda t: t * 2), keras3.layers.Flatten(), keras3.layers.Dense(10)])
    with pytest.raises(UnsupportedModelError, match="Keras 3|Lambda"):
        bitat_tf.binarize(k3, _ds(X, Y), verbose=0)


def test_model_that_is_not_a_model():
    with pytest.raises(UnsupportedModelError, match="tf_keras.Model"):
        bitat_tf.binarize("model.h5", _ds(X, Y), verbose=0)


def test_nan_past_the_first_batch_stops_at_the_layer_and_keeps_the_checkpoint(model, tmp_path):
    bad = X.copy()
    bad[20:] = np.nan  # the first batch is clean; later ones poison the loss
    config = BinarizeConfig.paper(steps_per_layer=2, finetune_steps=2, bn_recalibration_batches=1,
                            capture_batches=1, max_groups=4)
    with pytest.raises(DatasetError, match="NaN or infinite inputs during block1_a quantize"):
        bitat_tf.binarize(model, _ds(bad, Y), config=config, checkpoint_dir=tmp_path, verbose=0)
    assert not (tmp_path / "LATEST").exists()  # nothing half-trained was checkpointed


def test_two_runs_with_one_seed_are_identical(model):
    from bitat_tf._compat import larq

    config = BinarizeConfig.paper(steps_per_layer=3, finetune_steps=2, bn_recalibration_batches=1, max_groups=4,
                            seed=7)
    runs = [bitat_tf.binarize(model, _ds(X, Y), config=config, verbose=0) for _ in range(2)]
    for name in ("block1_a", "block1_b", "block2_a"):
        with larq.context.quantized_scope(True):
            a, b = (r.model.get_layer(name).kernel.numpy() for r in runs)
        np.testing.assert_array_equal(a, b)
    strip = lambda r: [(l["name"], l["val_accuracy"], l["final_terms"]) for l in r.report.to_dict()["layers"]]  # noqa
    assert strip(runs[0]) == strip(runs[1])


def test_diverging_loss_names_the_layer(model, monkeypatch):
    from bitat_tf import transforms
    from bitat_tf.errors import TrainingError

    original = transforms.RunPenalty.terms

    def exploding(self):
        terms = original(self)
        return {**terms, "quant": terms["quant"] * float("inf")}

    monkeypatch.setattr(transforms.RunPenalty, "terms", exploding)
    with pytest.raises(TrainingError, match="diverged during block1_a quantize"):
        bitat_tf.binarize(model, _ds(X, Y), config=BinarizeConfig.paper(steps_per_layer=2, finetune_steps=0,
                                                                  bn_recalibration_batches=1), verbose=0)


# ---- dtypes, paths, layer options, verbosity: every entry point answers with a BitatError ------------------
CHEAP = dict(steps_per_layer=1, finetune_steps=0, max_groups=4, bn_recalibration_batches=1, capture_batches=1)


@pytest.mark.parametrize("x,y,match", [
    (X, Y.astype(str), "labels are of dtype string.*integer class indices"),
    (X, Y > 4, "labels are of dtype bool.*tf.cast"),
    (X, Y.astype("complex64"), "labels are of dtype complex64"),
    (X.astype(str), Y, "inputs are of dtype string.*numbers"),
    (X > 0.5, Y, "inputs are of dtype bool"),
])
def test_labels_and_inputs_of_other_dtypes(model, x, y, match):
    with pytest.raises(DatasetError, match=match):
        bitat_tf.binarize(model, _ds(x, y), config=BinarizeConfig.paper(**CHEAP), verbose=0)


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_integer_and_float_labels_of_any_width_are_accepted(model, dtype):
    result = bitat_tf.binarize(model, _ds(X, Y.astype(dtype)), config=BinarizeConfig.paper(
        **CHEAP, keep_full_precision=["block1_b", "block2_a"]), verbose=0)
    assert result.report.binary_accuracy >= 0


def test_checkpoint_dir_that_is_a_file_is_refused_and_left_alone(model, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ConfigError, match="checkpoint_dir .*notes.txt' exists and is not a folder"):
        bitat_tf.binarize(model, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), checkpoint_dir=path, verbose=0)
    assert path.read_text() == "mine"
    with pytest.raises(ConfigError, match="cannot be created: .*notes.txt' is a file"):
        bitat_tf.binarize(model, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), checkpoint_dir=path / "sub",
                          verbose=0)


@pytest.mark.parametrize("value,match", [(5, "must be a folder path .*got int 5"),
                                         (["ckpt"], "must be a folder path .*got list")])
def test_checkpoint_dir_of_another_type(model, value, match):
    with pytest.raises(ConfigError, match=match):
        bitat_tf.binarize(model, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), checkpoint_dir=value, verbose=0)


def test_damaged_checkpoint_dir_is_named(model, tmp_path):
    (tmp_path / "LATEST").write_text("stage-007")
    with pytest.raises(ConfigError, match="no readable checkpoint.*stage-007.*empty folder"):
        bitat_tf.binarize(model, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), checkpoint_dir=tmp_path, verbose=0)


@pytest.mark.parametrize("verbose", ["loud", 3, -1, 1.5])
def test_verbose_out_of_range(model, verbose):
    with pytest.raises(ConfigError, match="verbose must be 0 .*1 .*2"):
        bitat_tf.binarize(model, _ds(X, Y), verbose=verbose)


def _two_convs(**options):
    L = keras.layers
    inputs = keras.Input((8, 8, 4))
    h = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    h = L.Conv2D(8, 3, padding="same", name="conv", **options)(h)
    return keras.Model(inputs, L.Dense(10, name="classifier")(L.GlobalAveragePooling2D()(h)))


def test_grouped_convolution_stays_full_precision_and_cannot_be_forced():
    from bitat_tf import graph

    model = _two_convs(groups=2)
    plan = graph.make_plan(model, BinarizeConfig.paper(force_binarize=["classifier"]))
    assert plan["conv"].binarize is False and "groups=2" in plan["conv"].reason
    with pytest.raises(UnsupportedModelError, match="'conv' .*force_binarize.*groups=2.*remove it"):
        graph.make_plan(model, BinarizeConfig.paper(force_binarize=["conv"]))
    x4 = np.random.default_rng(0).random((32, 8, 8, 4)).astype("float32")
    with pytest.raises(UnsupportedModelError, match="no layer to binarize.*groups=2"):
        bitat_tf.binarize(model, _ds(x4, Y), config=BinarizeConfig.paper(**CHEAP), verbose=0)


@pytest.mark.parametrize("options", [dict(dilation_rate=2), dict(activation="relu"),
                                     dict(kernel_regularizer="l2", use_bias=True)])
def test_conv_options_the_graph_models_binarize(options):
    x4 = np.random.default_rng(0).random((32, 8, 8, 4)).astype("float32")
    result = bitat_tf.binarize(_two_convs(**options), _ds(x4, Y), config=BinarizeConfig.paper(**CHEAP), verbose=0)
    assert [r.name for r in result.report.layers if r.binarized] == ["conv"]


@pytest.fixture(scope="module")
def binary(model):
    return bitat_tf.binarize(model, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), verbose=0)


@pytest.mark.parametrize("name", ["export_lce", "export_tflite"])
def test_export_paths_and_models(binary, tmp_path, name):
    from bitat_tf import export

    fn = getattr(export, name)
    with pytest.raises(ConfigError, match=f"{name}: path .* is a folder; pass a file path"):
        fn(binary.model, tmp_path)
    with pytest.raises(ConfigError, match=f"{name}: path .*: the folder .*missing' does not exist"):
        fn(binary.model, tmp_path / "missing" / "m.tflite")
    with pytest.raises(UnsupportedModelError, match=f"{name}: model must be a tf_keras.Model, got str"):
        fn("binary.keras", tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_verify_export_arguments(binary, tmp_path):
    from bitat_tf import export

    flatbuffer = export.export_lce(binary.model, tmp_path / "m.tflite")
    with pytest.raises(ConfigError, match="not a TFLite model .*TFL3"):
        export.verify_export(binary.model, b"garbage", _ds(X, Y))
    with pytest.raises(ConfigError, match="'.*none.tflite' is not a file"):
        export.verify_export(binary.model, tmp_path / "none.tflite", _ds(X, Y))
    with pytest.raises(DatasetError, match="verify_export: dataset must be a tf.data.Dataset .*got tuple"):
        export.verify_export(binary.model, flatbuffer, (X, Y))
    with pytest.raises(DatasetError, match="verify_export: dataset yields inputs of shape .*expects"):
        export.verify_export(binary.model, flatbuffer, _ds(np.zeros((4, 9, 9, 1), "float32"), Y[:4]))
    with pytest.raises(DatasetError, match="verify_export: dataset yielded no examples"):
        export.verify_export(binary.model, flatbuffer, _ds(X[:0], Y[:0]))
    check = export.verify_export(binary.model, tmp_path / "m.tflite", _ds(X, Y))  # a path works too
    assert check.examples == len(X)


def test_cli_answers_bad_paths_with_a_message(tmp_path, capsys):
    from bitat_tf.cli import main

    assert main(["binarize", str(tmp_path / "none.keras"), "--data", "digits"]) == 2
    err = capsys.readouterr().err
    assert "bitat-tf: error: model '" in err and "none.keras' does not exist" in err
    (tmp_path / "junk.keras").write_text("not a model")
    assert main(["export", str(tmp_path / "junk.keras"), str(tmp_path / "m.tflite")]) == 2
    err = capsys.readouterr().err
    assert "bitat-tf: error: model" in err and "could not be loaded as a tf_keras model" in err
    assert main(["binarize", str(tmp_path / "junk.keras"), "--data", "digits",
                 "--output", str(tmp_path / "no" / "b.keras")]) == 2
    assert "--output" in capsys.readouterr().err


# ---- every batch, every phase, every model the checks can read ----------------------------------------------
def test_a_bad_label_in_a_later_batch_names_the_batch_not_a_stack_trace(model):
    """The first batch is clean; the third holds class 10 of a 10-class model. The train step checks every
    batch's labels before its loss reads them."""
    bad = Y.copy()
    bad[20] = 10  # batches of 8: the third batch
    config = BinarizeConfig.paper(steps_per_layer=4, finetune_steps=1, max_groups=4, bn_recalibration_batches=1,
                                  capture_batches=1)
    with pytest.raises(DatasetError, match="dataset labels in batch 3 of 4 \\(pass 1 over the dataset\\) range over "
                                           "\\[1, 10\\] but the model has 10 outputs.*during block1_a quantize"):
        bitat_tf.binarize(model, _ds(X, bad, batch=8), validation_data=_ds(X, Y), config=config, verbose=0)
    with pytest.raises(DatasetError, match="validation_data labels in batch 3 range over \\[1, 10\\]"):
        bitat_tf.binarize(model, _ds(X, Y), validation_data=_ds(X, bad, batch=8), config=config, verbose=0)


def test_validation_labels_must_be_encoded_as_the_training_labels(model):
    with pytest.raises(DatasetError, match="validation_data labels .*class indices.*takes one-hot"):
        bitat_tf.binarize(model, _ds(X, np.eye(10, dtype="float32")[Y]), validation_data=_ds(X, Y),
                          config=BinarizeConfig.paper(**CHEAP), verbose=0)


def test_a_softmax_model_compiled_for_logits_is_refused_before_training():
    softmax = make_cnn(keras)
    softmax = keras.Model(softmax.inputs, keras.layers.Softmax()(softmax.outputs[0]))
    softmax.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ConfigError, match="already gives probabilities.*from_logits=True"):
        bitat_tf.binarize(softmax, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), verbose=0)


def test_several_outputs_are_refused_naming_them():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, name="stem")(inputs))
    two = keras.Model(inputs, [keras.layers.Dense(10, name="digit")(h), keras.layers.Dense(1, name="parity")(h)])
    with pytest.raises(UnsupportedModelError, match="2 outputs \\(digit, parity\\)"):
        bitat_tf.binarize(two, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), verbose=0)


def test_an_input_of_open_size_is_binarized_at_the_data_size():
    """Input((None, None, 1)): the run works on a copy of the model at the dataset's 8 x 8 (captures and
    transforms are sized from layer shapes); data of open size too is refused."""
    open_size = make_cnn(keras, input_shape=(None, None, 1))
    result = bitat_tf.binarize(open_size, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), verbose=0)
    assert result.model.input_shape == (None, 8, 8, 1) and open_size.input_shape == (None, None, None, 1)
    assert [r.name for r in result.report.layers if r.binarized] == ["block1_a", "block1_b", "block2_a"]
    np.testing.assert_allclose(result.model.get_layer("stem")(X[:4]).numpy(),
                               open_size.get_layer("stem")(X[:4]).numpy(), rtol=1e-6)  # the weights carried over
    unsized = tf.data.Dataset.from_generator(lambda: iter([(X[:8], Y[:8])]), output_signature=(
        tf.TensorSpec((None, None, None, 1), tf.float32), tf.TensorSpec((None,), tf.int64)))
    with pytest.raises(DatasetError, match="needs one input size.*tf.image.resize"):
        bitat_tf.binarize(open_size, unsized, config=BinarizeConfig.paper(**CHEAP), verbose=0)


def test_the_default_config_trains_every_phase_on_a_dataset_of_three_batches(model):
    """An eighth of an epoch a layer of 3 batches rounds to 0 steps; every phase gets at least one, and the
    report says how many each took."""
    x = np.random.default_rng(1).random((48, 8, 8, 1)).astype("float32")
    result = bitat_tf.binarize(model, _ds(x, np.arange(48) % 10), verbose=0)
    steps = result.report.timing["phase_steps"]
    stages = [f"{n} {phase}" for n in ("block1_a", "block1_b", "block2_a") for phase in ("quantize", "fine-tune above")]
    assert list(steps) == stages + ["final end-to-end"]
    assert all(steps[s] == 1 for s in stages) and steps["final end-to-end"] == 7 * 6
    assert "- optimizer steps: quantize 3 phases x 1, fine-tune above 3 phases x 1, final end-to-end 42" in (
        result.report.to_markdown())


def test_reactnet_gives_each_of_its_two_phases_a_step(model):
    from bitat_tf.baselines import EndToEndConfig

    result = bitat_tf.binarize(model, _ds(X, Y), config=EndToEndConfig(epochs=0.1, bn_recalibration_batches=1),
                               verbose=0)
    assert result.report.timing["phase_steps"] == {"step 1/2 binary activations": 1, "step 2/2 binary weights": 1}
    with pytest.raises(ConfigError, match="two phases .*steps=1 .*steps >= 2"):
        EndToEndConfig(method="reactnet", steps=1)
