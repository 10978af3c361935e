"""Checks of the user's dataset against the model, and the task loss chosen from them."""

import numpy as np

from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError, DatasetError


def check_dataset(dataset, model, *, what="dataset"):
    """Validate a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)` batches against `model`.

    # Returns
        (steps_per_epoch, sparse): batches in one pass (None if infinite) and whether labels are class
        indices (else one-hot / dense targets).
    """
    if not isinstance(dataset, tf.data.Dataset):
        raise DatasetError(f"{what} must be a tf.data.Dataset of (x, y) batches, got {type(dataset).__name__}."
                           " Wrap arrays with tf.data.Dataset.from_tensor_slices((x, y)).batch(64).")
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise DatasetError(f"{what} yields {spec}, not (x, y) pairs: BiTAT trains on the task loss and needs "
                           "labels. Map it to (image, label) pairs, e.g. dataset.map(lambda d: (d['image'], "
                           "d['label'])).")
    x_spec, y_spec = spec[0], spec[1]
    if getattr(x_spec, "shape", None) is not None and x_spec.shape.rank == len(model.input_shape) - 1:
        raise DatasetError(f"{what} yields single examples of shape {tuple(x_spec.shape)}, but the model "
                           f"takes batches of shape {model.input_shape}; batch it, e.g. dataset.batch(64).")
    _check_input_shape(x_spec, model, what)
    first = next(iter(dataset.take(1)), None)
    if first is None:
        raise DatasetError(f"{what} is empty; pass a dataset with at least one batch.")
    x, y = first[0], first[1]
    if not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
        raise DatasetError(f"{what} contains NaN or infinite inputs in its first batch; clean or filter it.")
    sparse = _check_labels(y, y_spec, model, what)
    return _steps(dataset, what), sparse


def _check_input_shape(x_spec, model, what):
    if isinstance(x_spec, (tuple, dict)) or len(model.inputs) != 1:
        raise DatasetError(f"{what}: bitat_tf supports models with one input tensor; the dataset yields "
                           f"{x_spec} for inputs {model.input_shape}.")
    expected = tuple(model.input_shape[1:])
    got = tuple(x_spec.shape[1:]) if x_spec.shape.rank is not None else None
    if got is None or len(got) != len(expected) or any(
            e is not None and g is not None and e != g for e, g in zip(expected, got)):
        raise DatasetError(f"{what} yields inputs of shape {tuple(x_spec.shape)}, the model expects "
                           f"(batch, {', '.join(map(str, expected))}). Resize or reshape the data in a "
                           "dataset.map, or pass the model the data was made for.")


def _check_labels(y, y_spec, model, what):
    outputs = model.output_shape[-1]
    out_rank = len(model.output_shape)
    if y.shape.rank == out_rank and y.shape[-1] == outputs and outputs > 1:
        return False  # one-hot or dense targets
    if y.shape.rank not in (1, out_rank - 1) and not (y.shape.rank == out_rank and y.shape[-1] == 1):
        raise DatasetError(f"{what} labels have shape {tuple(y.shape)}, which fits neither class indices "
                           f"(batch,) nor one-hot (batch, {outputs}) for a model with outputs "
                           f"{model.output_shape}.")
    if not (y.dtype.is_integer or np.all(np.mod(np.asarray(y), 1) == 0)):
        raise DatasetError(f"{what} labels are {y.dtype.name} values that are not class indices; pass integer "
                           "class indices or one-hot vectors.")
    labels = np.asarray(y)
    if outputs > 1 and (labels.min() < 0 or labels.max() >= outputs):
        raise DatasetError(f"{what} labels range over [{labels.min()}, {labels.max()}] but the model has "
                           f"{outputs} outputs (classes 0..{outputs - 1}); remap the labels or change the "
                           "classifier.")
    return True


def _steps(dataset, what):
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        return None
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        cardinality = int(dataset.reduce(0, lambda n, _: n + 1))
    if cardinality == 0:
        raise DatasetError(f"{what} is empty; pass a dataset with at least one batch.")
    return cardinality


def resolve_loss(model, config, sparse):
    """The task loss: config.loss, else the model's compiled loss, else a crossentropy that fits."""
    if config.loss is not None:
        return keras.losses.get(config.loss)
    compiled = getattr(model, "loss", None)
    if compiled is not None and not isinstance(compiled, (dict, list)):
        return keras.losses.get(compiled) if isinstance(compiled, str) else compiled
    activation = getattr(model.layers[-1], "activation", None)
    probs = activation in (keras.activations.softmax, keras.activations.sigmoid)
    if model.output_shape[-1] == 1:
        raise ConfigError("the model has one output unit; pass config.loss (e.g. 'binary_crossentropy' or "
                          "'mse') since the task loss cannot be guessed.")
    cls = keras.losses.SparseCategoricalCrossentropy if sparse else keras.losses.CategoricalCrossentropy
    return cls(from_logits=not probs)
