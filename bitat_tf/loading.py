"""`load_model`: read back a binary model saved with `result.model.save(...)`.

A binary model's layers are Larq's, and its quantizers (`ScaledSign`, `ThresholdSign`) and their scale
constraint are bitat_tf's. Keras finds a custom class only if the module that registers it was imported,
and `import bitat_tf` alone imports none (its names load on first use), so a plain
`keras.models.load_model(path)` fails in a script that has not used bitat_tf yet, with a message that does
not name bitat_tf (docs/troubleshooting.md lists them). `load_model` supplies the objects itself.
"""

import os

from bitat_tf._compat import keras
from bitat_tf.errors import ConfigError, UnsupportedModelError
from bitat_tf.quantizers import custom_objects as _bitat_objects


def load_model(path, *, custom_objects=None, compile=True):
    """Load a model saved with tf_keras' `model.save(path)`: a `.keras` file, an `.h5` file or a SavedModel
    folder, with the objects a binary model of bitat_tf needs.

    Equal to `tf_keras.models.load_model(path, custom_objects=bitat_tf.custom_objects())`.

    # Arguments
        path: the file or folder `model.save` wrote (str or os.PathLike).
        custom_objects: your own custom layers, losses or functions the model holds, by name, as Keras takes
            them; bitat_tf's are added.
        compile: compile the model with the loss and optimizer it was saved with, if any.

    # Returns
        The tf_keras model, its binarized layers Larq layers with bitat_tf's quantizers, ready for
        `predict`, `evaluate` and `bitat_tf.export_lce`.

    !!! example
        ```python
        result.model.save("binary.keras")
        ...  # in another script
        model = bitat_tf.load_model("binary.keras")
        ```
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load_model takes the path model.save wrote (str or os.PathLike), got "
                          f"{type(path).__name__}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"load_model: {path!r} does not exist; pass the path model.save(...) wrote (a .keras or "
                          ".h5 file, or a SavedModel folder).")
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise ConfigError(f"load_model: custom_objects must be a dict of names to classes or functions, got "
                          f"{type(custom_objects).__name__}.")
    objects = {**_bitat_objects(), **(custom_objects or {})}
    try:
        return keras.models.load_model(path, custom_objects=objects, compile=compile)
    except Exception as err:  # Keras raises many types for files it cannot read
        first = str(err).splitlines()[0][:300] if str(err) else ""
        raise UnsupportedModelError(
            f"load_model: {path!r} could not be loaded as a tf_keras model ({type(err).__name__}: {first}). If the "
            "model holds custom objects of your own, pass them as custom_objects={name: object}; a file saved by "
            "Keras 3 loads with TF_USE_LEGACY_KERAS unset (then bitat_tf.keras3.to_tf_keras).") from err


__all__ = ["load_model"]
