"""Carry a Keras 3 model over to tf_keras (Keras 2), which Larq, LCE and tfmot need.

Models made of common layers are rebuilt layer by layer from their configs with the same weights, and
the outputs are checked equal; any other model is refused with the list of layers that could not be
carried over.
"""

import inspect

import numpy as np

from bitat_tf._compat import keras
from bitat_tf.errors import UnsupportedModelError

_SUPPORTED = ("InputLayer", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
              "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU", "PReLU", "Activation", "Add",
              "Subtract", "Multiply", "Average", "Concatenate", "MaxPooling2D", "AveragePooling2D",
              "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten", "Dropout", "Reshape",
              "ZeroPadding2D", "Softmax", "Rescaling")
# Weights are copied, so initialisers do not matter; these Keras 3 config keys have no Keras 2 meaning.
_DROP_SUFFIXES = ("_initializer",)


def to_tf_keras(model, *, atol=1e-4):
    """Rebuild a Keras 3 Sequential or Functional `model` as a tf_keras model with the same weights.

    # Raises
        UnsupportedModelError: listing each layer that could not be carried over and what to do.
    """
    import keras as keras3

    unsupported = [f"{layer.name} ({type(layer).__name__})" for layer in model.layers
                   if type(layer).__name__ not in _SUPPORTED]
    if not isinstance(model, (keras3.Sequential, keras3.Model)) or unsupported or not model.built:
        raise UnsupportedModelError(
            f"{type(model).__name__} {model.name!r} is a Keras 3 model, and bitat_tf works on tf_keras. "
            f"These layers cannot be carried over automatically: {unsupported or 'the model is not built'}. "
            "Rebuild the model with `import tf_keras as keras` (same layers, same code) and copy the weights "
            "with `tf_model.set_weights(keras3_model.get_weights())`.")
    rebuilt = _rebuild(model)
    _copy_weights(model, rebuilt)
    x = np.random.default_rng(0).normal(size=(2, *model.input_shape[1:])).astype("float32")
    gap = float(np.max(np.abs(np.asarray(model(x)) - rebuilt(x).numpy())))
    if gap > atol:
        raise UnsupportedModelError(
            f"the tf_keras rebuild of {model.name!r} differs from the Keras 3 model by {gap:.2g} (> {atol}); "
            "rebuild it with tf_keras by hand.")
    return rebuilt


def _convert_layer(layer):
    cls = getattr(keras.layers, type(layer).__name__)
    config = dict(layer.get_config())
    allowed = set(inspect.signature(cls.__init__).parameters) | {"name", "trainable", "dtype"}
    config = {k: v for k, v in config.items() if k in allowed and not k.endswith(_DROP_SUFFIXES)}
    for key in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                "bias_constraint", "depthwise_constraint", "pointwise_constraint", "beta_constraint",
                "gamma_constraint"):
        if isinstance(config.get(key), dict):
            config.pop(key)  # Keras 3 serialisation; weights carry what training needs
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = config["dtype"].get("config", {}).get("name", "float32")
    return cls.from_config(config)


def _rebuild(model):
    import keras as keras3

    if isinstance(model, keras3.Sequential):
        inputs = keras.Input(model.input_shape[1:])
        x = inputs
        for layer in model.layers:
            x = _convert_layer(layer)(x)
        return keras.Model(inputs, x, name=model.name)
    tensors, new_layers = {}, {}
    for layer_config in model.get_config()["layers"]:
        layer = model.get_layer(layer_config["name"])
        if type(layer).__name__ == "InputLayer":
            tensors[layer.name] = keras.Input(layer.output.shape[1:], name=layer.name)
            continue
        new_layers[layer.name] = new = _convert_layer(layer)
        args = [_resolve(arg, tensors) for node in layer_config["inbound_nodes"] for arg in node["args"]]
        tensors[layer.name] = new(args[0] if len(args) == 1 else args)
    out_names = [history[0] for history in _histories(model.get_config()["output_layers"])]
    in_names = [history[0] for history in _histories(model.get_config()["input_layers"])]
    outputs = [tensors[n] for n in out_names]
    return keras.Model([tensors[n] for n in in_names] if len(in_names) > 1 else tensors[in_names[0]],
                       outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _histories(spec):
    return [spec] if spec and isinstance(spec[0], str) else spec


def _resolve(arg, tensors):
    if isinstance(arg, (list, tuple)):
        return [_resolve(a, tensors) for a in arg]
    if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
        return tensors[arg["config"]["keras_history"][0]]
    raise UnsupportedModelError(f"cannot follow the Keras 3 graph through argument {arg!r}; rebuild the "
                                "model with tf_keras.")


def _copy_weights(source, target):
    by_name = {layer.name: layer for layer in target.layers}
    for layer in source.layers:
        if layer.weights:
            by_name[layer.name].set_weights([np.asarray(w) for w in layer.get_weights()])
