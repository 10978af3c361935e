"""The one place that chooses Keras 2 (`tf_keras`) and checks the stack.

Larq, the Larq Compute Engine and tensorflow-model-optimization work only with Keras 2. With TensorFlow
>= 2.16, `tf.keras` is Keras 3 unless `TF_USE_LEGACY_KERAS=1` is set before TensorFlow is imported, and
Larq reaches for `tf.keras` when it is imported. A library must not set that variable for its user (it
changes global state), so this module checks it and says what to do. The `bitat-tf` command sets it.
"""

import os

_FIX = (
    "bitat_tf needs Keras 2 (the `tf_keras` package), because Larq, the Larq Compute Engine and "
    "tensorflow-model-optimization do not support Keras 3. Set the environment variable "
    "TF_USE_LEGACY_KERAS=1 before TensorFlow is first imported, e.g. `TF_USE_LEGACY_KERAS=1 python "
    "train.py`, or `os.environ['TF_USE_LEGACY_KERAS'] = '1'` at the very top of your script. "
    "The `bitat-tf` command does this for you."
)

import tensorflow as tf  # noqa: E402

try:
    import tf_keras as keras  # noqa: E402
except ImportError as err:  # pragma: no cover - tf-keras is a pinned dependency
    raise ImportError(f"{_FIX} (import of tf_keras failed: {err}; `pip install tf-keras`)") from err


def _builds_on_tf_keras(layer_class):
    """True if `layer_class` (or what `tf.keras` resolves to) is a tf_keras layer, not a Keras 3 one.

    Module names are no guide: importing Larq first makes `tf.keras.__name__` read "tensorflow.keras"
    whichever Keras it is. What matters is which `Layer` class the layers we build derive from.
    """
    return isinstance(layer_class, type) and issubclass(layer_class, keras.layers.Layer)


def _tf_keras_layer():
    try:
        return tf.keras.layers.Layer
    except AttributeError:  # pragma: no cover - a broken or partial TensorFlow install
        return None


if not _builds_on_tf_keras(_tf_keras_layer()):
    _state = os.environ.get("TF_USE_LEGACY_KERAS", "<unset>")
    raise ImportError(f"{_FIX} (now tf.keras is Keras 3; TF_USE_LEGACY_KERAS={_state}).")

import larq  # noqa: E402

if not _builds_on_tf_keras(larq.layers.QuantConv2D):  # pragma: no cover - Larq loaded under Keras 3
    raise ImportError(f"{_FIX} (Larq was imported while tf.keras was Keras 3: its layers are not tf_keras "
                      "layers; set the variable before anything imports TensorFlow or Larq).")

__all__ = ["keras", "larq", "tf", "is_keras3_model"]


def is_keras3_model(obj) -> bool:
    """True if `obj` is a Keras 3 model or layer (not a tf_keras one)."""
    module = type(obj).__module__ or ""
    if module.startswith("tf_keras"):
        return False
    for cls in type(obj).__mro__:
        mod = cls.__module__ or ""
        if mod.startswith("keras.") or mod == "keras" or mod.startswith("keras.src"):
            return True
    return False
