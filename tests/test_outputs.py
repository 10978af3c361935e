"""Reading the user's model (`outputs.interpret`): output kind, loss, labels and accuracy, checked against what
Keras itself does with the same model, and the distillation divergence of each output kind."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import outputs
from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError, DatasetError, UnsupportedModelError
from bitat_tf.training import BitatTrainer

L = keras.layers
SCCE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
BCE_LOGITS = keras.losses.BinaryCrossentropy(from_logits=True)


def mlp(units, activation=None, *, head=(), seed=0):
    """Flatten -> fc1 (kept: first layer) -> fc2 (binarized) -> BN -> ReLU -> head (kept: classifier)."""
    init = keras.initializers.GlorotUniform(seed)
    inputs = keras.Input((8, 8, 1))
    h = L.Dense(32, activation="relu", name="fc1", kernel_initializer=init)(L.Flatten()(inputs))
    h = L.ReLU()(L.BatchNormalization(name="fc2_bn")(L.Dense(32, use_bias=False, name="fc2",
                                                              kernel_initializer=init)(h)))
    h = L.Dense(units, activation=activation, name="head", kernel_initializer=init)(h)
    for layer in head:
        h = layer(h)
    return keras.Model(inputs, h)


# ---- the reading, as a table --------------------------------------------------------------------------------
@pytest.mark.parametrize("units, activation, head, loss, labels, expected", [
    (10, None, (), SCCE_LOGITS, (None,), ("softmax", True, "sparse", "sparse_categorical_accuracy")),
    (10, "softmax", (), "sparse_categorical_crossentropy", (None,), ("softmax", False, "sparse",
                                                                     "sparse_categorical_accuracy")),
    (10, "softmax", (), keras.losses.sparse_categorical_crossentropy, (None, 1), ("softmax", False, "sparse",
                                                                                  "sparse_categorical_accuracy")),
    (10, "softmax", (), "categorical_crossentropy", (None, 10), ("softmax", False, "dense", "categorical_accuracy")),
    (10, None, (L.Softmax(),), "sparse_categorical_crossentropy", (None,), ("softmax", False, "sparse",
                                                                            "sparse_categorical_accuracy")),
    (10, "softmax", (L.Dropout(0.1),), "sparse_categorical_crossentropy", (None,), ("softmax", False, "sparse",
                                                                                    "sparse_categorical_accuracy")),
    (1, "sigmoid", (), "binary_crossentropy", (None,), ("sigmoid", False, "binary", "binary_accuracy")),
    (1, "sigmoid", (), "binary_crossentropy", (None, 1), ("sigmoid", False, "binary", "binary_accuracy")),
    (1, None, (), BCE_LOGITS, (None,), ("sigmoid", True, "binary", "binary_accuracy (logits > 0)")),
    (5, "sigmoid", (), "binary_crossentropy", (None, 5), ("sigmoid", False, "dense", "binary_accuracy")),
    (10, "softmax", (), "mse", (None, 10), ("softmax", False, "dense", "categorical_accuracy")),
    # not compiled: the crossentropy that fits the last layer and the labels
    (10, None, (), None, (None,), ("softmax", True, "sparse", "sparse_categorical_accuracy")),
    (10, None, (), None, (None, 10), ("softmax", True, "dense", "categorical_accuracy")),
    (10, "softmax", (), None, (None, 10), ("softmax", False, "dense", "categorical_accuracy")),
    (1, "sigmoid", (), None, (None, 1), ("sigmoid", False, "binary", "binary_accuracy")),
])
def test_supported_combinations(units, activation, head, loss, labels, expected):
    model = mlp(units, activation, head=head)
    if loss is not None:
        model.compile(loss=loss)
    task = outputs.interpret(model, labels)
    assert (task.distribution, task.logits, task.labels, task.accuracy_name) == expected


@pytest.mark.parametrize("units, activation, loss, labels, error, match", [
    (10, "softmax", SCCE_LOGITS, (None,), ConfigError, "already gives probabilities.*from_logits=True"),
    (10, None, "sparse_categorical_crossentropy", (None,), ConfigError,
     "unbounded values.*expects probabilities.*SparseCategoricalCrossentropy\\(from_logits=True\\)"),
    (1, None, "binary_crossentropy", (None,), ConfigError, "expects probabilities.*BinaryCrossentropy"),
    (10, "sigmoid", "categorical_crossentropy", (None, 10), ConfigError, "sigmoid probabilities.*softmax ones"),
    (10, None, "mse", (None, 10), ConfigError, "mean_squared_error does not say .*logits"),
    (1, "softmax", None, (None,), UnsupportedModelError, "softmax over one unit is always 1"),
    (1, None, None, (None,), ConfigError, "not compiled.*BinarizeConfig\\(loss=...\\)"),
    (10, "relu", None, (None,), ConfigError, "not compiled.*activation relu"),
    (10, "softmax", "sparse_categorical_crossentropy", (None, 10), DatasetError,
     "one-hot or soft labels.*takes class indices.*categorical_crossentropy"),
    (10, "softmax", "categorical_crossentropy", (None,), DatasetError, "class indices.*takes one-hot.*tf.one_hot"),
    (3, "sigmoid", "binary_crossentropy", (None,), DatasetError, "class indices.*0 or 1 for each unit"),
    (10, None, None, (None, 3), DatasetError, "labels have shape \\(None, 3\\), which fits neither"),
    (10, "softmax", {"head": "sparse_categorical_crossentropy"}, (None,), ConfigError, "per output"),
])
def test_contradictions_and_unknown_combinations_are_refused(units, activation, loss, labels, error, match):
    model = mlp(units, activation)
    with pytest.raises(error, match=match):
        outputs.interpret(model, labels, loss=loss)


def test_a_model_with_several_outputs_is_refused_naming_them():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, [L.Dense(2, name="digit")(inputs), L.Dense(1, name="parity")(inputs)])
    with pytest.raises(UnsupportedModelError, match="2 outputs \\(digit, parity\\).*one output"):
        outputs.interpret(model, (None,))


# ---- labels of a batch ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("units, activation, loss, y, match", [
    (10, None, SCCE_LOGITS, [3, 10, 1], "range over \\[1, 10\\] but the model has 10 outputs"),
    (10, None, SCCE_LOGITS, [3, -1, 1], "range over \\[-1, 3\\]"),
    (10, None, SCCE_LOGITS, [3.0, 1.5], "include 1.5, so they are not class indices"),
    (10, None, SCCE_LOGITS, [3.0, np.nan], "include nan"),
    (1, "sigmoid", "binary_crossentropy", [[0], [2]], "include 2 .*labels must be 0 or 1"),
    (10, "softmax", "categorical_crossentropy", [np.eye(10)[1] + np.eye(10)[2]], "are not one-hot: a row sums to 2"),
    (10, "softmax", "categorical_crossentropy", [np.eye(10)[1] * -1], "are not one-hot: they include -1"),
])
def test_labels_that_do_not_fit_are_named(units, activation, loss, y, match):
    model = mlp(units, activation)
    y = tf.constant(np.asarray(y, "float32"))
    task = outputs.interpret(model, y.shape, loss=loss)
    with pytest.raises(DatasetError, match="dataset labels in batch 4 " + match):
        task.check_batch(y, "dataset", "batch 4")


def test_soft_labels_and_the_ignored_class_fit():
    soft = outputs.interpret(mlp(10, "softmax"), (None, 10), loss="categorical_crossentropy")
    soft.check_batch(tf.constant([[0.05] * 8 + [0.3, 0.3]]), "dataset")  # label smoothing, mixup: rows of sum 1
    ignoring = outputs.interpret(mlp(10), (None,), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=-1))
    ignoring.check_batch(tf.constant([3, -1, 9]), "dataset")


# ---- distillation -------------------------------------------------------------------------------------------
def _np_kl(p, q):
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


@pytest.mark.parametrize("distribution, logits, units", [
    ("softmax", True, 10), ("softmax", False, 10), ("sigmoid", True, 1), ("sigmoid", False, 1), ("sigmoid", True, 5)])
def test_divergence_is_the_kl_of_the_output_distribution(distribution, logits, units):
    """KL over a softmax's classes, or the mean over sigmoid units of each Bernoulli's KL; from probabilities
    the same number as from the logits behind them; zero for equal outputs."""
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(6, units)).astype("float32") for _ in range(2))
    task = outputs.Task(None, "x", distribution, logits, units, "binary" if units == 1 else "dense", "test")
    if distribution == "softmax":
        p, q = tf.nn.softmax(a).numpy(), tf.nn.softmax(b).numpy()
        expected = np.mean(_np_kl(p, q))
    else:
        p, q = tf.sigmoid(a).numpy(), tf.sigmoid(b).numpy()
        expected = np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q)))
    inputs = (a, b) if logits else (p, q)
    assert float(task.divergence(*inputs)) == pytest.approx(expected, rel=1e-4)
    assert float(task.divergence(inputs[0], inputs[0])) == pytest.approx(0.0, abs=1e-6)
    assert expected > 1e-3



@pytest.mark.parametrize("distribution, logits, units, labels", [
    ("softmax", True, 10, "sparse"), ("softmax", False, 10, "dense"), ("sigmoid", True, 1, "binary")])
def test_corrected_distillation_teaches_the_label_where_the_teacher_is_wrong(distribution, logits, units, labels):
    """distill_target="corrected": the KL to the teacher on the examples it predicts right, the task loss
    (Keras' own, per example) on the others, averaged over the whole batch; all right = the plain KL."""
    rng = np.random.default_rng(0)
    teacher_out, student_out = (rng.normal(size=(8, units)).astype("float32") for _ in range(2))
    if not logits:
        teacher_out, student_out = (tf.nn.softmax(v).numpy() for v in (teacher_out, student_out))
    if distribution == "sigmoid":
        guess = (teacher_out[:, 0] > 0).astype("int32")
        y = np.where(np.arange(8) % 3 == 0, 1 - guess, guess)  # the teacher wrong on examples 0, 3, 6
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
    else:
        guess = teacher_out.argmax(-1)
        classes = np.where(np.arange(8) % 3 == 0, (guess + 1) % units, guess)
        y = classes if labels == "sparse" else np.eye(units, dtype="float32")[classes]
        loss = (keras.losses.SparseCategoricalCrossentropy(from_logits=logits) if labels == "sparse"
                else keras.losses.CategoricalCrossentropy(from_logits=logits))
    task = outputs.Task(loss, "x", distribution, logits, units, labels, "test")
    inputs = keras.Input((units,))
    trainer = BitatTrainer(keras.Model(inputs, inputs), teacher=keras.Model(inputs, inputs), distill_weight=1.0,
                           distill_target="corrected", task=task)
    right = np.arange(8) % 3 != 0
    per_example_kl = [float(task.divergence(teacher_out[i:i + 1], student_out[i:i + 1])) for i in range(8)]
    per_example_task = [float(loss(tf.constant(y[i:i + 1]), tf.constant(student_out[i:i + 1]))) for i in range(8)]
    expected = np.mean(np.where(right, per_example_kl, per_example_task))
    got = float(trainer.distillation(tf.constant(teacher_out), tf.constant(y), tf.constant(student_out)))
    assert got == pytest.approx(expected, rel=1e-5)
    assert abs(expected - np.mean(per_example_kl)) > 1e-3  # the wrong examples change the number
    everywhere_right = guess if labels != "dense" else np.eye(units, dtype="float32")[guess]
    assert float(trainer.distillation(tf.constant(teacher_out), tf.constant(everywhere_right),
                                      tf.constant(student_out))) == pytest.approx(np.mean(per_example_kl), rel=1e-5)


# ---- end to end: each supported combination binarizes, and its report agrees with Keras -------------------------
BINARY_LABELS = {  # digits 0-4 against 5-9, in the four shapes and dtypes a user may pass
    "(N,) int": lambda y: (y >= 5).astype("int32"),
    "(N, 1) int": lambda y: (y >= 5).astype("int32")[:, None],
    "(N,) float": lambda y: (y >= 5).astype("float32"),
    "(N, 1) float": lambda y: (y >= 5).astype("float32")[:, None],
}
COMBINATIONS = {  # name: (units, activation, loss, labels from digit classes)
    "logits + SparseCategoricalCrossentropy": (10, None, SCCE_LOGITS, lambda y: y),
    "softmax + 'sparse_categorical_crossentropy'": (10, "softmax", "sparse_categorical_crossentropy", lambda y: y),
    "softmax + one-hot 'categorical_crossentropy'": (10, "softmax", "categorical_crossentropy",
                                                     lambda y: np.eye(10, dtype="float32")[y]),
    **{f"sigmoid + 'binary_crossentropy', {k}": (1, "sigmoid", "binary_crossentropy", f)
       for k, f in BINARY_LABELS.items()},
    "one logit + BinaryCrossentropy(from_logits=True)": (1, None, BCE_LOGITS, BINARY_LABELS["(N,) int"]),
}
RUN = dict(steps_per_layer=2, finetune_steps=1, final_finetune_steps=2, distill_weight=0.5, max_groups=4,
           capture_rows=256, capture_batches=1, bn_recalibration_batches=2)


def _keras_accuracy(task):
    """What the user compiles to score the model as the report does: "accuracy", or for a logit Keras'
    BinaryAccuracy at threshold 0 (the string would threshold the logit at 0.5)."""
    return keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy") if task["accuracy"].endswith(
        "(logits > 0)") else "accuracy"


@pytest.mark.parametrize("name", list(COMBINATIONS))
def test_combination_binarizes_and_reports_what_keras_evaluates(digits, name):
    units, activation, loss, encode = COMBINATIONS[name]
    x, y, xt, yt = digits
    keras.utils.set_random_seed(0)
    model = mlp(units, activation)
    model.compile(keras.optimizers.Adam(3e-3), loss, ["accuracy"])
    model.fit(x, encode(y), batch_size=64, epochs=6, verbose=0)
    train = tf.data.Dataset.from_tensor_slices((x, encode(y))).batch(128)
    test = tf.data.Dataset.from_tensor_slices((xt, encode(yt))).batch(128)  # 397: a last batch of 13
    result = bitat_tf.binarize(model, train, validation_data=test, config=bitat_tf.BinarizeConfig(**RUN), verbose=0)
    task = result.report.task

    # Keras' "accuracy" picks the same function (for a logit it would threshold at 0.5, see _keras_accuracy)
    keras_choice = next(m for m in model.compiled_metrics.metrics if m.name == "accuracy").get_config()["fn"]
    assert task["accuracy"].startswith(keras_choice.__name__)

    # the accuracies are Keras' own for the same models, data and metric
    evaluated = []
    for scored in (model, result.model):
        scored.compile(loss=loss, metrics=[_keras_accuracy(task)])
        evaluated.append(scored.evaluate(test, verbose=0, return_dict=True)["accuracy"])
    assert result.report.fp_accuracy == pytest.approx(evaluated[0], abs=1e-6)
    assert result.report.binary_accuracy == pytest.approx(evaluated[1], abs=1e-6)
    assert 0.1 < result.report.binary_accuracy < 1.0 and result.report.fp_accuracy > 0.6

    # both terms train: the task loss and the distillation (zero for a one-unit model read as logits)
    quantize = result.history["fc2"]["quantize"]
    assert quantize["loss"][-1] > 1e-3 and quantize["distill_loss"][-1] > 1e-6
    assert result.history["final_end_to_end"]["distill_loss"][-1] > 1e-6
    expected_output = f"{'sigmoid' if units == 1 else 'softmax'} {'logits' if activation is None else 'probabilities'}"
    assert task["output"] == expected_output and task["units"] == units
    assert "- task: " + expected_output in result.report.to_markdown()
