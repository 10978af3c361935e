"""Checks of what users pass in (datasets against the model, paths, verbosity).

Every check raises a `BitatError` subclass that names the argument, what it got and what to do, before
anything is written or trained.
"""

import os

import numpy as np

from bitat_tf import outputs
from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError, DatasetError


def check_dataset(dataset, model, *, what="dataset", loss=None, task=None, steps_per_epoch=None):
    """Validate a `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)` batches against `model`.

    The model's task (`outputs.interpret`, with `loss` as the loss to train with) decides what labels fit;
    the first batch's are checked here, every batch's in the train step and in evaluation. With `task`
    (validation data), the labels must be encoded as that task's. Only the first batch is read.

    # Returns
        (steps_per_epoch, task): the batches in an epoch (`epoch_length`: None when tf.data cannot tell
        and the caller gave none) and the `outputs.Task`.
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
    _check_dtype(x_spec, f"{what} inputs", "numbers (images as uint8 or float)")
    _check_dtype(y_spec, f"{what} labels", "integer class indices or float one-hot vectors")
    first = next(iter(dataset.take(1)), None)
    if first is None:
        raise DatasetError(f"{what} is empty; pass a dataset with at least one batch.")
    x, y = first[0], first[1]
    if not np.all(np.isfinite(np.asarray(x, dtype=np.float64))):
        raise DatasetError(f"{what} contains NaN or infinite inputs in its first batch; clean or filter it.")
    if task is None:
        task = outputs.interpret(model, y.shape, loss=loss, what=what)
    elif outputs.interpret(model, y.shape, loss=task.loss, what=what).labels != task.labels:
        raise DatasetError(f"{what} labels (shape {tuple(y.shape)}) are not encoded as the training labels "
                           f"({task.describe()['labels']}); encode both datasets the same way.")
    task.check_batch(y, what)
    return epoch_length(dataset, steps_per_epoch, what=what), task


def epoch_length(dataset, steps_per_epoch=None, *, what="dataset"):
    """The batches in one epoch of `dataset`, from what tf.data knows of it, never by reading it through.

    `steps_per_epoch` when given (an epoch is then that many batches of the data read on as one stream, as
    in Keras' `fit`), else `dataset.cardinality()` when tf.data knows it, else None: the dataset repeats
    forever or tf.data cannot tell its length (`unknown_length` says which). Budgets in steps need none.
    """
    if steps_per_epoch is not None:
        if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, (int, np.integer)) \
                or steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch must be None or a whole number >= 1 (the batches in one epoch of "
                              f"{what}), got {steps_per_epoch!r}.")
        return int(steps_per_epoch)
    cardinality = int(dataset.cardinality())
    if cardinality == 0:
        raise DatasetError(f"{what} is empty; pass a dataset with at least one batch.")
    return cardinality if cardinality > 0 else None


def unknown_length(dataset):
    """Why tf.data cannot tell the length of `dataset` (words for an error), or None when it can."""
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        return "the dataset repeats forever (tf.data cardinality INFINITE, e.g. after .repeat())"
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        return ("tf.data cannot tell the dataset's length (cardinality UNKNOWN, as after from_generator, filter or "
                "interleave) and bitat_tf does not read a dataset through to count it")
    return None


def check_ends(dataset, what):
    """Refuse a dataset that repeats forever where it is read to its end (evaluation)."""
    if int(dataset.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise DatasetError(f"{what} repeats forever (tf.data cardinality INFINITE), and evaluation reads it to its "
                           f"end; pass a finite dataset, e.g. {what}.take(50) (without the .repeat()).")


def with_data_input_size(model, dataset):
    """`model`, or a copy whose input takes the size the dataset's inputs have where the model leaves it open.

    Captures and the transforms are sized from layer shapes, so a model built on `Input((None, None, 3))`
    is binarized at the (fixed) size of its data: the copy shares nothing with `model` (weights copied),
    and the binary model takes inputs of that size. Inputs of open size in the data too are refused.
    """
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or not isinstance(dataset, tf.data.Dataset):
        return model  # the checks answer these
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    wanted = tuple(model.input_shape[1:])
    if None not in wanted or not isinstance(x_spec, tf.TensorSpec) or x_spec.shape.rank != len(wanted) + 1:
        return model
    got = tuple(x_spec.shape[1:])
    if any(w is None and g is None for w, g in zip(wanted, got)):
        raise DatasetError(f"the model's input has shape (batch, {', '.join(map(str, wanted))}) and the dataset's "
                           f"inputs {tuple(x_spec.shape)}: bitat_tf sizes its captures from layer shapes, so it "
                           "needs one input size. Resize the inputs in a dataset.map (e.g. tf.image.resize(x, "
                           "(224, 224))), or rebuild the model on a fixed keras.Input shape.")
    if any(w is not None and w != g for w, g in zip(wanted, got)):
        return model  # a mismatch: check_dataset says so
    fixed = keras.models.clone_model(model, input_tensors=keras.Input(got, dtype=model.inputs[0].dtype,
                                                                        name=model.inputs[0].name.split(":")[0]))
    fixed.set_weights(model.get_weights())
    return fixed


def check_input_dataset(dataset, model, *, what="dataset"):
    """A `tf.data.Dataset` of `x` or `(x, ...)` batches whose inputs fit `model` (labels not needed)."""
    if not isinstance(dataset, tf.data.Dataset):
        raise DatasetError(f"{what} must be a tf.data.Dataset of x or (x, y) batches, got "
                           f"{type(dataset).__name__}. Wrap arrays with tf.data.Dataset.from_tensor_slices(x)"
                           ".batch(64).")
    spec = dataset.element_spec
    x_spec = spec[0] if isinstance(spec, tuple) else spec
    _check_input_shape(x_spec, model, what)
    _check_dtype(x_spec, f"{what} inputs", "numbers (images as uint8 or float)")


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


def _check_dtype(spec, what, expected):
    dtype = getattr(spec, "dtype", None)
    if dtype is not None and not (dtype.is_integer or dtype.is_floating):
        raise DatasetError(f"{what} are of dtype {dtype.name}; bitat_tf needs {expected}. Convert them in a "
                           "dataset.map, e.g. with tf.cast(..., tf.int32) for bool labels or a lookup table "
                           "from class names to indices for string labels.")


def check_verbose(verbose):
    """`verbose` must be 0, 1 or 2 (or a bool)."""
    if verbose not in (0, 1, 2) or not isinstance(verbose, (int, bool)):
        raise ConfigError(f"verbose must be 0 (silent), 1 (a progress bar per stage, summary lines in a log) or 2 "
                          f"(a line per epoch), got {verbose!r}.")
    return int(verbose)


def check_checkpoint_dir(path):
    """A usable checkpoint folder: a path that is a directory or can be made one. Returns it as str."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"checkpoint_dir must be a folder path (str or os.PathLike), got "
                          f"{type(path).__name__} {path!r}.")
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"checkpoint_dir {path!r} exists and is not a folder; pass a folder (new or one an "
                          "earlier run of the same model and config wrote). The file was left as it is.")
    parent = _existing_ancestor(path)
    if not os.path.isdir(parent):
        raise ConfigError(f"checkpoint_dir {path!r} cannot be created: {parent!r} is a file, not a folder. "
                          "Pass a path inside a folder.")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"checkpoint_dir {path!r} is not writable (no write permission on {parent!r}); pass "
                          "a folder you can write to.")
    return path


def check_output_file(path, what):
    """A file path that can be written: not a folder, in a folder that exists. Returns it as str."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a file path (str or os.PathLike) or None, got "
                          f"{type(path).__name__} {path!r}.")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path!r} is a folder; pass a file path such as "
                          f"{os.path.join(path, 'model.tflite')!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{what} {path!r}: the folder {folder!r} does not exist; create it first "
                          f"(os.makedirs({folder!r})).")
    return path


def load_saved_model(path, what="model"):
    """Load a saved tf_keras model (.keras, .h5 or SavedModel folder) with bitat_tf's custom objects."""
    from bitat_tf.errors import UnsupportedModelError
    from bitat_tf.quantizers import custom_objects

    if not os.path.exists(path):
        raise ConfigError(f"{what} {path!r} does not exist; pass the path of a saved tf_keras model (.keras, .h5 "
                          "or a SavedModel folder).")
    try:
        return keras.models.load_model(path, custom_objects=custom_objects())
    except Exception as err:  # Keras raises many types for files it cannot read
        raise UnsupportedModelError(
            f"{what} {path!r} could not be loaded as a tf_keras model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:300] if str(err) else ''}). Save it with tf_keras' model.save(...) "
            "(Keras 3 files need TF_USE_LEGACY_KERAS unset to load, then bitat_tf.keras3.to_tf_keras).") from err


def _existing_ancestor(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path
