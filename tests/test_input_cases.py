"""What a TensorFlow user plausibly feeds `binarize` gets a working result or a `BitatError` naming the fix,
never a stack trace (issue 30): a global mixed-precision policy, labels encoded for another loss, a saved
binary model loaded without bitat_tf, and the other cases below, each as a new user would write it."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import make_cnn

import bitat_tf
from bitat_tf import BinarizeConfig, graph
from bitat_tf._compat import keras, larq, tf
from bitat_tf.errors import ConfigError, DatasetError, UnsupportedModelError

L = keras.layers
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
X = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
Y = np.arange(32) % 10
ONE_HOT = np.eye(10, dtype="float32")[Y]
CHEAP = {"steps_per_layer": 1, "finetune_steps": 0, "max_groups": 4, "bn_recalibration_batches": 1,
         "capture_batches": 1, "seed": 3}
SPARSE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CATEGORICAL = keras.losses.CategoricalCrossentropy(from_logits=True)


def _ds(*arrays, batch=16):
    return tf.data.Dataset.from_tensor_slices(arrays if len(arrays) > 1 else arrays[0]).batch(batch)


def _compiled(loss, model=None):
    model = make_cnn(keras) if model is None else model
    model.compile(loss=loss)
    return model


def _signed_kernels(model, names=("block1_a", "block1_b", "block2_a")):
    """Each binarized kernel as used (quantized scope); asserts it is +-alpha per output channel."""
    kernels = {}
    for name in names:
        layer = model.get_layer(name)
        alpha = graph.weight_quantizer(layer).alpha.numpy()
        with larq.context.quantized_scope(True):
            kernels[name] = layer.kernel.numpy()
        assert np.all(alpha > 0)
        for c in range(alpha.shape[-1]):
            assert set(np.unique(kernels[name][..., c])) <= {alpha[c], -alpha[c]}, name
    return kernels


# ---- a global mixed-precision policy ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_small(digits):
    """A small CNN trained briefly on digits, its data, and its float32 binarization (the reference)."""
    x, y, xt, yt = digits
    keras.utils.set_random_seed(0)
    model = make_cnn(keras, width=8)
    model.compile(keras.optimizers.Adam(1e-2), SPARSE)
    model.fit(x[:640], y[:640], batch_size=64, epochs=3, verbose=0)
    train, test = _ds(x[:640], y[:640], batch=64), _ds(xt, yt, batch=200)
    config = BinarizeConfig.paper(steps_per_layer=8, finetune_steps=4, learning_rate=3e-3, max_groups=4,
                                  capture_batches=1, bn_recalibration_batches=2, seed=5)
    reference = bitat_tf.binarize(model, train, validation_data=test, config=config, verbose=0)
    return model, train, test, config, reference


@pytest.fixture
def policy():
    """Sets a global policy as a user script does; the test's end restores float32 for the others."""
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("name,when", [("mixed_float16", "set before the model is built"),
                                       ("mixed_bfloat16", "set when binarize is called")])
def test_a_mixed_precision_policy_binarizes_in_float32_to_the_float32_result(digits_small, policy, name, when):
    """Larq's layers compute in float32 only; binarize sets the caller's policy aside for the run, so the
    binary model computes in float32, equals the float32 run's exactly, and the caller's policy is back."""
    model, train, test, config, reference = digits_small
    policy(name)
    if when.startswith("set before"):
        user_model = make_cnn(keras, width=8)
        assert user_model.get_layer("block1_a").compute_dtype != "float32"
        user_model.set_weights(model.get_weights())
        user_model.compile(loss=SPARSE)
    else:
        user_model = model
    result = bitat_tf.binarize(user_model, train, validation_data=test, config=config, verbose=0)
    assert keras.mixed_precision.global_policy().name == name
    assert {layer.compute_dtype for layer in result.model.layers} == {"float32"}
    kernels, expected = _signed_kernels(result.model), _signed_kernels(reference.model)
    for layer in kernels:
        np.testing.assert_array_equal(kernels[layer], expected[layer])
    # Equal to the float32 run is the point; the floors (chance 0.1) only say neither run is broken. The
    # float model's accuracy after its 3 epochs depends on the CPU's kernels: 72-85% on the machines seen.
    assert result.report.fp_accuracy == reference.report.fp_accuracy > 0.5
    assert result.report.binary_accuracy == reference.report.binary_accuracy > 0.2
    assert result.model.predict(X, verbose=0).dtype == np.float32
    if name == "mixed_float16":  # the export's copies of the model are float32 too
        assert isinstance(bitat_tf.export_lce(result.model), bytes)
        assert keras.mixed_precision.global_policy().name == name


# ---- labels against the loss, and what else users feed ---------------------------------------------------
def _two_inputs():
    a, b = keras.Input((8, 8, 1)), keras.Input((8, 8, 1))
    h = L.Concatenate()([a, b])
    for name in ("stem", "c1", "c2"):
        h = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name=name)(h)))
    return keras.Model([a, b], L.Dense(10)(L.GlobalAveragePooling2D()(h)))


def _in_front(*layers, dtype="float32"):
    """A CNN behind `layers` (preprocessing or augmentation in the model)."""
    inputs = keras.Input((8, 8, 1), dtype=dtype)
    h = inputs
    for layer in layers:
        h = layer(h)
    for name in ("stem", "c1", "c2"):
        h = L.ReLU()(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", name=name)(h)))
    return _compiled(SPARSE, keras.Model(inputs, L.Dense(10)(L.GlobalAveragePooling2D()(h))))


def _sequential(build=None):
    layers = [L.Conv2D(8, 3, padding="same", name=n) for n in ("stem", "c1", "c2")] + [L.GlobalAveragePooling2D(),
                                                                                      L.Dense(10)]
    model = keras.Sequential(layers)
    if build:
        model.build(build)
    return _compiled(SPARSE, model)


def _ragged():
    rows = tf.RaggedTensor.from_row_lengths(tf.range(96, dtype=tf.float32), [3] * 32)
    return tf.data.Dataset.from_tensor_slices((rows, Y)).batch(16)


def _two_outputs():
    inputs = keras.Input((8, 8, 1))
    h = L.GlobalAveragePooling2D()(L.Conv2D(8, 3, name="stem")(inputs))
    return keras.Model(inputs, [L.Dense(10, name="digit")(h), L.Dense(1, name="parity")(h)])


def _softmax_lambda():
    model = make_cnn(keras)
    return keras.Model(model.inputs, L.Lambda(tf.nn.softmax)(model.outputs[0]))


# (model, dataset, binarize keyword arguments, error class, message pattern): refused before any training.
REFUSED = {
    "one-hot labels, sparse loss": (lambda: _compiled(SPARSE), lambda: _ds(X, ONE_HOT), {}, DatasetError,
                                    ("labels are one-hot.*loss sparse_categorical_crossentropy.*takes class "
                                     "indices; use categorical_crossentropy.*tf.argmax")),
    "class indices, categorical loss": (lambda: _compiled(CATEGORICAL), lambda: _ds(X, Y), {}, DatasetError,
                                        ("labels are class indices.*loss categorical_crossentropy.*takes "
                                         "one-hot.*tf.one_hot\\(y, 10\\)")),
    "(N, 1) indices, categorical loss": (lambda: _compiled(CATEGORICAL), lambda: _ds(X, Y[:, None]), {},
                                         DatasetError, "class indices \\(shape \\(16, 1\\)\\).*categorical_cross"),
    "validation one-hot, training indices": (
        lambda: _compiled(SPARSE), lambda: _ds(X, Y), {"validation_data": _ds(X, ONE_HOT)}, DatasetError,
        ("validation_data labels are one-hot.*takes class indices, as the training dataset's labels are; pass "
         "class indices.*tf.argmax")),
    "validation indices, training one-hot (loss from the labels)": (
        lambda: make_cnn(keras), lambda: _ds(X, ONE_HOT), {"validation_data": _ds(X, Y)}, DatasetError,
        ("validation_data labels are class indices.*categorical_crossentropy.*as the training dataset's labels "
         "are; one-hot encode them.*tf.one_hot\\(y, 10\\)")),
    "validation as a tuple of arrays (as in fit)": (
        lambda: _compiled(SPARSE), lambda: _ds(X, Y), {"validation_data": (X, Y)}, DatasetError,
        "validation_data must be a tf.data.Dataset.*from_tensor_slices"),
    "two inputs": (_two_inputs, lambda: tf.data.Dataset.from_tensor_slices(((X, X), Y)).batch(16), {},
                   DatasetError, "one input tensor"),
    "dict of inputs": (lambda: _compiled(SPARSE), lambda: tf.data.Dataset.from_tensor_slices(({"x": X}, Y)).batch(16),
                       {}, DatasetError, "one input tensor"),
    "dataset of dicts": (lambda: _compiled(SPARSE), lambda: _ds({"image": X, "label": Y}), {}, DatasetError,
                         "not \\(x, y\\) pairs.*dataset.map\\(lambda d"),
    "two outputs": (_two_outputs, lambda: _ds(X, Y), {}, UnsupportedModelError, "2 outputs \\(digit, parity\\)"),
    "a loss per output name": (lambda: _compiled({"classifier": SPARSE}), lambda: _ds(X, Y), {}, ConfigError,
                               "loss is given per output"),
    "last layer a Lambda, not compiled": (_softmax_lambda, lambda: _ds(X, Y), {}, ConfigError,
                                          "not compiled.*'lambda' \\(Lambda\\).*BinarizeConfig\\(loss="),
    "ragged inputs": (lambda: _compiled(SPARSE), _ragged, {}, DatasetError, "inputs of shape \\(None, None\\)"),
    "Sequential not built": (_sequential, lambda: _ds(X, Y), {}, UnsupportedModelError, "not built.*Input"),
    "augmentation layers in the model": (
        lambda: _in_front(keras.Sequential([L.RandomFlip("horizontal"), L.RandomRotation(0.1)], name="augment")),
        lambda: _ds(X, Y), {}, UnsupportedModelError,
        "random augmentation layers \\['augment.random_flip.*Augment in the dataset"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_inputs_that_cannot_work_are_refused_naming_the_fix(case):
    model, dataset, kwargs, error, match = REFUSED[case]
    with pytest.raises(error, match=match):
        bitat_tf.binarize(model(), dataset(), config=BinarizeConfig.paper(**CHEAP), verbose=0, **kwargs)


# (a global policy the user set before building the model, or None; model, dataset, the layers binarized):
# each trains and returns a binary model.
WORKS = {
    "uint8 images into Rescaling, int64 labels of shape (N, 1)": (
        None, lambda: _in_front(L.Rescaling(1 / 255), dtype="uint8"),
        lambda: _ds((X * 255).astype("uint8"), Y[:, None].astype("int64")), ["c1", "c2"]),
    "sample weights, float64 one-hot labels, label smoothing": (
        None, lambda: _compiled(keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)),
        lambda: _ds(X, ONE_HOT.astype("float64"), np.linspace(0.5, 1.5, 32).astype("float32")),
        ["block1_a", "block1_b", "block2_a"]),
    "Sequential built with build(), no Input": (None, lambda: _sequential((None, 8, 8, 1)), lambda: _ds(X, Y),
                                               ["c1", "c2"]),
    "a float16 policy (float16 weights)": ("float16", lambda: _compiled(SPARSE), lambda: _ds(X, Y),
                                           ["block1_a", "block1_b", "block2_a"]),
}


@pytest.mark.parametrize("case", list(WORKS))
def test_inputs_that_can_work_binarize(case, policy):
    user_policy, model, dataset, binarized = WORKS[case]
    if user_policy:
        policy(user_policy)  # and left set, as a script does
    result = bitat_tf.binarize(model(), dataset(), config=BinarizeConfig.paper(**CHEAP), verbose=0)
    assert [r.name for r in result.report.layers if r.binarized] == binarized
    _signed_kernels(result.model, binarized)
    assert {layer.compute_dtype for layer in result.model.layers if not isinstance(layer, L.InputLayer)} == {"float32"}


# ---- a saved binary model, loaded where bitat_tf was not used ---------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    model = _compiled(SPARSE)
    result = bitat_tf.binarize(model, _ds(X, Y), config=BinarizeConfig.paper(**CHEAP), verbose=0)
    paths = {}
    for extension in (".keras", ".h5"):
        paths[extension] = str(folder / f"binary{extension}")
        result.model.save(paths[extension])
    np.save(folder / "x.npy", X)
    np.save(folder / "expected.npy", result.model.predict(X, verbose=0))
    return folder, paths


@pytest.mark.parametrize("extension", [".keras", ".h5"])
def test_load_model_reads_both_formats(saved, extension):
    folder, paths = saved
    model = bitat_tf.load_model(paths[extension])
    assert isinstance(model.get_layer("block1_a"), larq.layers.QuantConv2D)
    assert isinstance(graph.weight_quantizer(model.get_layer("block1_a")), bitat_tf.ScaledSign)
    np.testing.assert_allclose(model.predict(X, verbose=0), np.load(folder / "expected.npy"), rtol=1e-6, atol=1e-6)


def test_load_model_refuses_bad_arguments_naming_them(saved, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        bitat_tf.load_model(tmp_path / "missing.keras")
    with pytest.raises(ConfigError, match="str or os.PathLike"):
        bitat_tf.load_model(3)
    with pytest.raises(ConfigError, match="custom_objects must be a dict"):
        bitat_tf.load_model(saved[1][".keras"], custom_objects=["ScaledSign"])
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    with pytest.raises(UnsupportedModelError, match="junk.keras.*could not be loaded.*custom_objects"):
        bitat_tf.load_model(junk)


# What Keras says when a binary model is loaded without bitat_tf's objects, by file format and whether the
# script imported Larq (Keras' message, which bitat_tf cannot change; docs/troubleshooting.md gives the fix).
KERAS_SAYS = {
    ("plain", ".keras"): "'str' object is not callable",
    ("plain", ".h5"): "Unknown layer: 'QuantConv2D'",
    ("larq", ".keras"): "`quantizer` must be `callable` or `None`, but got `<class 'str'>`",
    ("larq", ".h5"): "Unknown quantization function: 'ScaledSign'",
}
SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tf_keras
    paths, folder, said = json.loads(sys.argv[1]), sys.argv[2], {}
    def attempt(how):
        for extension, path in paths.items():
            try:
                tf_keras.models.load_model(path)
                said[how + " " + extension] = "loaded"
            except Exception as err:
                said[how + " " + extension] = f"{type(err).__name__}: {err}"
    attempt("plain")
    import larq
    attempt("larq")
    import bitat_tf
    attempt("import bitat_tf")
    x, expected = np.load(os.path.join(folder, "x.npy")), np.load(os.path.join(folder, "expected.npy"))
    for extension, path in paths.items():
        model = bitat_tf.load_model(path)
        said["load_model " + extension] = float(np.abs(model.predict(x, verbose=0) - expected).max())
    print("SAID " + json.dumps(said))
""")


def test_a_script_without_bitat_tf_meets_the_documented_messages_and_load_model_works(saved):
    """In a fresh process: Keras' own load fails (also after `import bitat_tf`, whose names load on first
    use) with a message docs/troubleshooting.md lists with its fix; `bitat_tf.load_model` loads both
    formats, the outputs equal to the saved model's."""
    folder, paths = saved
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(paths), str(folder)], capture_output=True,
                         text=True, env=env, timeout=600, check=False)
    lines = [line for line in run.stdout.splitlines() if line.startswith("SAID ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    said = json.loads(lines[0][len("SAID "):])
    with open(os.path.join(ROOT, "docs", "troubleshooting.md")) as f:
        docs = f.read()
    for (how, extension), message in KERAS_SAYS.items():
        assert message in said[f"{how} {extension}"], (how, extension, said[f"{how} {extension}"][:300])
        assert message in docs, message
        assert said[f"import bitat_tf {extension}"] != "loaded"  # importing the package registers nothing yet
    assert "bitat_tf.load_model(" in docs
    assert said["load_model .keras"] < 1e-6 and said["load_model .h5"] < 1e-6
