"""The one place that reads the user's model: what its output is, what trains it, how its labels are encoded
and which accuracy describes it. The task loss, the distillation term and every accuracy follow from it.

Keras itself decides these in three places, and a run must agree with all of them:
- the loss (`compile(loss=...)`, resolved by `keras.losses.get`) says whether it expects logits or
  probabilities (`from_logits`; a loss given as a string expects probabilities) and which labels it takes;
- the model's last layer says what the outputs are (a softmax, a sigmoid, or unbounded values);
- `compile(metrics=["accuracy"])` picks binary, sparse categorical or categorical accuracy from the shapes
  of labels and outputs (`compile_utils.MetricsContainer`).
`interpret` reads all three, refuses combinations that contradict each other (a softmax output trained
with `from_logits=True`, a linear output with a loss that expects probabilities) and returns a `Task`.
"""

import dataclasses
import re

from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError, DatasetError, UnsupportedModelError
from bitat_tf.losses import (LOSS_FAMILIES, binary_kl, class_name, default_loss, resolve as resolve_loss, softmax_kl,
                             string_name)

# What a final activation says the outputs are.
_ACTIVATIONS = {keras.activations.softmax: "softmax", keras.activations.sigmoid: "sigmoid",
                keras.activations.linear: "linear"}
# Layers after that activation that keep what it says (a pooled or flattened softmax is still a
# distribution; dropout is the identity at inference; a linear Activation changes nothing).
_KEEPS_KIND = (keras.layers.Flatten, keras.layers.Dropout, keras.layers.GlobalAveragePooling1D,
               keras.layers.GlobalAveragePooling2D, keras.layers.GlobalAveragePooling3D)
_OTHER_ACTIVATION_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.ELU)
_ACCURACIES = {"sparse": "sparse_categorical_accuracy", "dense": "categorical_accuracy",
               "binary": "binary_accuracy"}
_LABELS = {"sparse": "class indices", "dense": "one-hot or soft labels", "binary": "0/1 labels"}
_MARK = "bitat_tf label check"



@dataclasses.dataclass(frozen=True)
class Task:
    """What the model's outputs are and how it is trained and scored (`interpret` builds it).

    # Arguments
        loss: the task loss, as `compile(loss=...)` takes it.
        loss_name: its name, for the report.
        distribution: "softmax" (one class out of `units`) or "sigmoid" (each unit a yes/no).
        logits: whether the outputs are logits of that distribution (else its probabilities).
        units: size of the output's last axis.
        labels: "sparse" (class indices, shape (N,) or (N, 1)), "dense" (one-hot or soft rows for a
            softmax, 0/1 per unit for sigmoids) or "binary" (one unit: 0/1 of shape (N,) or (N, 1)).
        source: where the output kind was read, for messages and the report.
        ignore_class: a class index the loss skips (SparseCategoricalCrossentropy(ignore_class=...)).
    """

    loss: object
    loss_name: str
    distribution: str
    logits: bool
    units: int
    labels: str
    source: str
    ignore_class: int = None

    @property
    def accuracy_name(self):
        """Keras' metric for these labels and outputs; binary accuracy thresholds logits at 0."""
        if self.distribution == "sigmoid":
            return "binary_accuracy" + (" (logits > 0)" if self.logits else "")
        return _ACCURACIES[self.labels]

    def accuracy(self, y_true, y_pred):
        """Per-example accuracy as `compile(metrics=["accuracy"])` computes it (labels aligned with the
        outputs as `compile_utils.match_dtype_and_rank` and `squeeze_or_expand_dimensions` do).

        Two deliberate differences from the string "accuracy": a sigmoid output of several units is scored
        per unit (`BinaryAccuracy`; Keras would pick categorical accuracy from the shapes), and logits are
        thresholded at 0 (probability 0.5; Keras would threshold them at 0.5)."""
        y_true, y_pred = _aligned(y_true, y_pred)
        if self.distribution == "sigmoid":
            return keras.metrics.binary_accuracy(y_true, y_pred, threshold=0.0 if self.logits else 0.5)
        if self.labels == "sparse":
            return keras.metrics.sparse_categorical_accuracy(y_true, y_pred)
        return keras.metrics.categorical_accuracy(y_true, y_pred)

    def metric(self):
        """The accuracy as a Keras metric named "accuracy", for `compile(metrics=[...])`."""
        return keras.metrics.MeanMetricWrapper(self.accuracy, name="accuracy")

    def divergence(self, teacher, student, weights=None):
        """Mean KL divergence from the teacher's output distribution to the student's: over the classes of
        a softmax (from logits or from the probabilities), per unit for sigmoids (a Bernoulli each; the
        mean over units, as binary crossentropy averages them). `weights`: one per example, multiplying
        its term before the mean over the batch."""
        teacher, student = tf.cast(teacher, tf.float32), tf.cast(student, tf.float32)
        if self.distribution == "softmax":
            return softmax_kl(teacher, student, self.logits, weights)
        return binary_kl(teacher, student, self.logits, weights)

    def example_losses(self, y_true, y_pred):
        """The task loss of each example: Keras' loss before its reduction over the batch (shape (N,))."""
        loss = self.loss
        # labels as a column against (N, 1) outputs, so a one-unit loss is not averaged over the batch
        y_true, y_pred = _aligned(y_true, y_pred)
        values = loss.call(y_true, y_pred) if isinstance(loss, keras.losses.Loss) else loss(y_true, y_pred)
        values = tf.cast(values, tf.float32)
        return tf.reduce_mean(tf.reshape(values, [tf.shape(y_pred)[0], -1]), axis=-1)

    # ---- labels ----------------------------------------------------------------------------------------
    def label_fault(self, y):
        """(ok, lowest label, highest label, an offending value) of a batch of labels: each must be a class
        index in range, 0 or 1, or (one-hot and soft rows) a value in [0, 1] in a row summing to 1; the
        offending value is then a value outside [0, 1], else a row's sum. Graph-safe."""
        y = tf.reshape(tf.cast(y, tf.float32), [-1, self.units] if self.labels == "dense" else [-1])
        if self.labels == "sparse":
            fits = tf.equal(y, tf.floor(y)) & (y >= 0) & (y < self.units)
            if self.ignore_class is not None:
                fits |= tf.equal(y, float(self.ignore_class))
        else:
            fits = tf.equal(y, 0.0) | tf.equal(y, 1.0) if self.distribution == "sigmoid" else (y >= 0) & (y <= 1)
        values = tf.reshape(y, [-1])
        misfits = tf.reshape(tf.logical_not(fits), [-1])
        if self.labels == "dense" and self.distribution == "softmax":
            sums = tf.reduce_sum(y, axis=-1)  # reported when every value is in [0, 1]
            values = tf.concat([values, sums], axis=0)
            misfits = tf.concat([misfits, tf.abs(sums - 1.0) > 1e-2], axis=0)
        # The first offending value, by static shapes only (no boolean_mask); a 0 at the end for a batch of
        # no labels, where argmax would have nothing to reduce.
        values, misfits = tf.concat([values, [0.0]], axis=0), tf.concat([misfits, [False]], axis=0)
        sample = tf.gather(values, tf.argmax(tf.cast(misfits, tf.int32)))
        lowest, highest = tf.reduce_min(y), tf.reduce_max(y)
        ok = tf.logical_not(tf.reduce_any(misfits))
        return ok, lowest, highest, sample

    def checked(self, y):
        """`y`, after an assertion that every label fits (for the train step: the loss, and so the update,
        wait for it). `step_error` turns its failure into a `DatasetError` naming the batch."""
        ok, lowest, highest, sample = self.label_fault(y)
        check = tf.debugging.Assert(ok, [_MARK, lowest, highest, sample], name="bitat_label_check")
        with tf.control_dependencies([check]):
            return tf.identity(y)

    def check_batch(self, y, what, where="its first batch"):
        """Raise a `DatasetError` when a labels batch does not fit (eager)."""
        ok, lowest, highest, sample = (t.numpy() for t in self.label_fault(y))
        if not ok:
            raise DatasetError(self._fault_message(what, where, float(lowest), float(highest), float(sample)))

    def step_error(self, error, batch, steps_per_epoch, phase):
        """The `DatasetError` for a train step that failed its label check (`checked`), else None.

        `batch`: the failing batch's position in the run's stream of training batches (from 0)."""
        found = re.search(re.escape(_MARK) + r"\] \[([^\]]*)\] \[([^\]]*)\] \[([^\]]*)\]", str(error))
        if found is None:
            return None
        lowest, highest, sample = (float(v) for v in found.groups())
        if steps_per_epoch:
            where = (f"batch {batch % steps_per_epoch + 1} of {steps_per_epoch} (pass "
                     f"{batch // steps_per_epoch + 1} over the dataset)")
        else:
            where = f"batch {batch + 1} of the stream"
        return DatasetError(self._fault_message("dataset", where, lowest, highest, sample)
                            + f" Training stopped during {phase}, before a step on that batch; the checkpoint "
                              "keeps the last finished layer.")

    def _fault_message(self, what, where, lowest, highest, sample):
        head = f"{what} labels in {where}"
        if self.labels == "sparse" and not sample.is_integer():
            return (f"{head} include {sample:g}, so they are not class indices; pass integer class indices (or "
                    "one-hot vectors).")
        if self.labels == "sparse":
            return (f"{head} range over [{lowest:g}, {highest:g}] but the model has {self.units} outputs "
                    f"(classes 0..{self.units - 1}); remap the labels or change the classifier.")
        if self.distribution == "sigmoid":
            return (f"{head} include {sample:g} (range [{lowest:g}, {highest:g}]) but {self.source} scores each "
                    "unit as yes/no: labels must be 0 or 1.")
        fault = f"a row sums to {sample:g}" if 0 <= lowest and highest <= 1 else f"they include {sample:g}"
        return (f"{head} are not one-hot: {fault}, where {self.loss_name} needs rows of values in [0, 1] summing to "
                "1. For several labels per example, end the model in a sigmoid and train with "
                "binary_crossentropy.")

    def describe(self):
        """A JSON-serializable summary for the report."""
        output = f"{self.distribution} {'logits' if self.logits else 'probabilities'}"
        return {"output": output, "units": self.units, "read_from": self.source, "loss": self.loss_name,
                "labels": _label_words(self.labels, self.distribution), "accuracy": self.accuracy_name}


def interpret(model, label_shape, *, loss=None, what="dataset"):
    """Read `model`'s task: output kind, loss, label encoding and accuracy; a `Task`, or a `BitatError`.

    # Arguments
        model: a tf_keras model with one output.
        label_shape: shape of a batch of labels (its rank and last dimension decide the encoding, as in
            Keras: one fewer dimension than the outputs, or a last dimension of 1, means class indices).
        loss: the loss to train with (a string, function or Loss object: `config.loss` or the user's
            compiled loss). None: the model's compiled loss; if it has none, the crossentropy that fits a
            softmax or sigmoid output, or logits of a linear one (a softmax over several classes).
    """
    output = _single_output(model)
    units = output.shape[-1] if output.shape.rank else None
    if units is None:
        raise UnsupportedModelError(f"the model's output has shape {tuple(output.shape)}: its last axis (the "
                                    "classes) needs a fixed size.")
    structure, source = _structure(output)
    labels = _encoding(tf.TensorShape(label_shape), output.shape, what)
    identifier = getattr(model, "loss", None) if loss is None else loss
    if identifier is None:
        distribution, logits = _default_kind(structure, source, units)
        resolved = default_loss(distribution, logits, labels)
        family, name, config = LOSS_FAMILIES[resolved.fn], resolved.name, {}
    else:
        resolved, family, from_logits, name, config = resolve_loss(identifier)
        distribution, logits = _kind(structure, source, family, from_logits, name)
    if distribution == "softmax" and units == 1:
        raise UnsupportedModelError(f"{source} has one output unit, and a softmax over one unit is always 1 (the "
                                    f"loss {name} is a softmax crossentropy); a binary classifier ends in a "
                                    "sigmoid (or gives one logit) and trains with binary_crossentropy.")
    wanted = "binary" if units == 1 else "dense" if distribution == "sigmoid" else family[1] if family else labels
    if labels != wanted:
        validation = what == "validation_data"  # checked with the loss the training labels fit
        raise DatasetError(f"{what} labels are {_LABELS[labels]} (shape {tuple(label_shape)}) but the loss {name} on "
                           f"{source} with {units} units takes {_label_words(wanted, distribution)}"
                           + (", as the training dataset's labels are" if validation else "") + "; "
                           + _label_fix(labels, wanted, distribution, units, validation))
    return Task(resolved, name, distribution, logits, units, labels, source, config.get("ignore_class"))


def compiled_loss(model):
    """The loss `model` was compiled with (None if none); read it before conversions that drop it."""
    return getattr(model, "loss", None)


def _default_kind(structure, source, units):
    """No loss given or compiled: what the last layer says, logits for a linear layer of several units."""
    if structure in ("softmax", "sigmoid"):
        return structure, False
    if structure == "linear" and units > 1:
        return "softmax", True
    raise ConfigError(f"the model was not compiled and {source} does not say what its outputs are (a softmax, a "
                      "sigmoid, or the logits of a linear layer of several units); pass the loss it was trained "
                      "with as BinarizeConfig(loss=...), e.g. keras.losses.BinaryCrossentropy(from_logits=True) "
                      "for a binary classifier's logit.")


def _single_output(model):
    outputs = tf.nest.flatten(getattr(model, "outputs", None) or [])
    if len(outputs) != 1:
        names = [t.name.split("/")[0] for t in outputs]
        raise UnsupportedModelError(
            f"the model has {len(outputs)} outputs ({', '.join(names)}); bitat_tf binarizes models with one output"
            " (one loss, one accuracy). Binarize the one you need, e.g. keras.Model(model.inputs, "
            f"model.outputs[0]), or join the heads into one output.")
    return outputs[0]


def _structure(output):
    """What the layer that computes `output` says it is: "softmax", "sigmoid", "linear", "other" (another
    activation) or "unknown" (a layer that applies none), and a description for messages."""
    layer = output._keras_history.layer
    while isinstance(layer, _KEEPS_KIND) or (isinstance(layer, keras.layers.Activation)
                                            and layer.activation is keras.activations.linear):
        inbound = tf.nest.flatten(layer.input)
        if len(inbound) != 1:
            break
        layer = inbound[0]._keras_history.layer
    what = f"the output layer '{layer.name}' ({type(layer).__name__}"
    if isinstance(layer, keras.layers.Softmax):
        return ("softmax" if layer.axis in (-1, [-1]) else "other"), what + ", a softmax)"
    if isinstance(layer, _OTHER_ACTIVATION_LAYERS):
        return "other", what + ")"
    activation = getattr(layer, "activation", None)
    if activation is None or not callable(activation):
        return "unknown", what + ")"
    kind = _ACTIVATIONS.get(activation, "other")
    return kind, what + f", activation {getattr(activation, '__name__', type(activation).__name__)})"


def _encoding(label_shape, output_shape, what="dataset"):
    """Keras' reading of the labels against the outputs: "sparse", "dense" or "binary"."""
    units, out_rank, rank = output_shape[-1], output_shape.rank, label_shape.rank
    if rank is not None and rank >= 1 and (rank == out_rank - 1 or (rank == out_rank and label_shape[-1] == 1)):
        return "binary" if units == 1 else "sparse"
    if rank == out_rank and label_shape[-1] == units:
        return "dense"
    raise DatasetError(f"{what} labels have shape {tuple(label_shape) if rank is not None else '(unknown rank)'}, "
                       f"which fits neither class indices (batch,) nor one-hot (batch, {units}) for a model with "
                       f"outputs {tuple(output_shape)}.")


def _kind(structure, source, family, from_logits, name):
    """(distribution, logits) of the outputs: the loss's reading checked against the last layer's."""
    expects = family[0] if family else None
    if family is None:  # another loss: only the last layer can say
        if structure in ("softmax", "sigmoid"):
            return structure, False
        raise ConfigError(f"the loss {name} does not say whether {source} gives logits of a softmax or of "
                          "sigmoids; end the model in a softmax or sigmoid, or train it with a crossentropy "
                          "(e.g. keras.losses.SparseCategoricalCrossentropy(from_logits=True)) and pass that as "
                          "BinarizeConfig(loss=...).")
    if from_logits:
        if structure in ("softmax", "sigmoid"):
            raise ConfigError(f"{source} already gives probabilities, but the loss {name} has from_logits=True, "
                              "so Keras takes them for logits and trains on the wrong values; compile with "
                              f"from_logits=False (or the string '{string_name(name)}') or remove the "
                              f"{structure}.")
        return expects, True
    if structure == expects or structure == "unknown":
        return expects, False
    if structure in ("linear", "other"):
        raise ConfigError(f"{source} gives unbounded values (logits), but the loss {name} expects probabilities "
                          "(from_logits=False, which a loss given as a string means), so Keras clips them into "
                          f"[0, 1]. Compile with keras.losses.{class_name(name)}(from_logits=True), or pass it "
                          "as BinarizeConfig(loss=...).")
    raise ConfigError(f"{source} gives {structure} probabilities but the loss {name} expects {expects} ones; "
                      f"bitat_tf cannot tell how to distil or score this combination. Use "
                      f"{'binary_crossentropy' if structure == 'sigmoid' else 'a categorical crossentropy'} "
                      f"with a {structure} output.")


def _label_words(labels, distribution):
    return "0 or 1 per unit" if labels == "dense" and distribution == "sigmoid" else _LABELS[labels]


def _label_fix(labels, wanted, distribution, units, validation=False):
    if distribution == "sigmoid":
        return f"pass labels of shape (batch, {units}) with 0 or 1 for each unit."
    if validation and labels == "sparse" and wanted == "dense":
        return f"one-hot encode them as the training labels are, in a dataset.map (tf.one_hot(y, {units}))."
    if validation and labels == "dense" and wanted == "sparse":
        return "pass class indices as the training labels are (tf.argmax(y, -1) in a dataset.map)."
    if labels == "sparse" and wanted == "dense":
        return ("use sparse_categorical_crossentropy for class indices, or one-hot encode them in a dataset.map "
                f"(tf.one_hot(y, {units})).")
    if labels == "dense" and wanted == "sparse":
        return "use categorical_crossentropy for one-hot labels, or pass class indices (tf.argmax(y, -1))."
    return f"pass labels that fit {units} classes."


def _aligned(y_true, y_pred):
    """Labels and outputs as Keras aligns them before a metric: float32, a label vector against a matrix of
    outputs made a column (`compile_utils.match_dtype_and_rank`), then a trailing axis of 1 dropped where
    the ranks differ by one (`losses_utils.squeeze_or_expand_dimensions`)."""
    y_true, y_pred = tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32)
    if y_true.shape.rank == 1 and y_pred.shape.rank == 2:
        y_true = y_true[:, None]
    difference = y_pred.shape.rank - y_true.shape.rank
    if difference == 1 and y_pred.shape[-1] == 1:
        y_pred = tf.squeeze(y_pred, -1)
    elif difference == -1 and y_true.shape[-1] == 1:
        y_true = tf.squeeze(y_true, -1)
    return y_true, y_pred


__all__ = ["Task", "compiled_loss", "interpret"]
