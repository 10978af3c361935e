"""The copies of a model that the LCE converter reads: the inference form and the int8-calibrated form.

`inference_model` computes each binarized 2-D `Dense` as a 1x1 binary convolution (`DenseAsConv1x1`) and
moves each threshold that folds exactly into the offset before it (`export_fold`); `calibrated_model` puts
measured int8 ranges (`FakeQuant`) around the full-precision layers chosen to run in int8. Neither changes
the model it is given.
"""

import itertools

from bitat_tf import export_fold as fold
from bitat_tf._compat import keras, larq, tf
from bitat_tf.errors import ConfigError, DatasetError, UnsupportedModelError
from bitat_tf.export_checks import binarized_layers, is_binary_dense
from bitat_tf.export_padding import trimmed_paddings
from bitat_tf.quantizers import ScaledSign, ThresholdSign


@keras.utils.register_keras_serializable(package="bitat_tf")
class FakeQuant(keras.layers.Layer):
    """8-bit fake quantization with a fixed, measured range: where LCE's converter reads int8 ranges."""

    def __init__(self, minimum, maximum, **kwargs):
        super().__init__(**kwargs)
        self.minimum, self.maximum = float(min(minimum, 0.0)), float(max(maximum, 0.0))  # 0 representable

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_args(inputs, min=self.minimum, max=self.maximum, num_bits=8)

    def get_config(self):
        return {**super().get_config(), "minimum": self.minimum, "maximum": self.maximum}


def calibrated_model(model, dataset, *, layers="head", max_batches=16):
    """A copy of `model` with a `FakeQuant` on the inputs and outputs of the chosen full-precision layers,
    each with the range (min, max) its tensor takes on `dataset`; outputs are otherwise unchanged.

    `layers` is "head", "all" or a list of names (see `export_lce`). LCE's converter runs a layer in int8
    when the tensors around it carry such ranges (there is no representative-dataset option in
    `convert_keras_model`; this is how ranges reach it).
    """
    from bitat_tf.inputs import check_input_dataset

    check_input_dataset(dataset, model, what="export_lce: int8_calibration")
    chosen = _int8_layer_names(model, layers)
    if any(len(model.get_layer(n).inbound_nodes) != 1 for n in chosen):
        raise UnsupportedModelError("export_lce: int8_calibration needs each chosen layer called once; a shared "
                                    "layer is among " f"{chosen}.")
    watched = {}  # id(tensor) -> tensor: the chosen layers' inputs and outputs
    for name in chosen:
        layer = model.get_layer(name)
        for t in tf.nest.flatten(layer.inbound_nodes[0].input_tensors) + tf.nest.flatten(layer.output):
            watched[id(t)] = t
    probe = keras.Model(model.inputs, list(watched.values()))
    low, high = {}, {}
    for batch in dataset.take(max_batches):
        x = batch[0] if isinstance(batch, tuple) else batch
        values = probe(x, training=False)
        for key, value in zip(watched, values if isinstance(values, list) else [values]):
            low[key] = min(low.get(key, 0.0), float(tf.reduce_min(value)))
            high[key] = max(high.get(key, 0.0), float(tf.reduce_max(value)))
    if not low:
        raise DatasetError("export_lce: int8_calibration yielded no batches; pass a non-empty dataset.")

    names = (f"int8_range_{i}" for i in itertools.count())

    def quantized(tensor, rebuilt):
        if id(tensor) not in watched:
            return rebuilt
        return FakeQuant(low[id(tensor)], high[id(tensor)], name=next(names))(rebuilt)

    tensors = {}
    inputs = [keras.Input(t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    for old, new in zip(model.inputs, inputs):
        tensors[id(old)] = quantized(old, new)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        node = layer.inbound_nodes[0]
        args = tf.nest.map_structure(lambda t: tensors[id(t)], node.input_tensors)
        clone = layer.__class__.from_config(layer.get_config())
        out = clone(args)
        clone.set_weights(layer.get_weights())
        for old, new in zip(tf.nest.flatten(layer.output), tf.nest.flatten(out)):
            tensors[id(old)] = quantized(old, new)
    return keras.Model(inputs, tf.nest.map_structure(lambda t: tensors[id(t)], model.outputs))


def _int8_layer_names(model, layers):
    binary = {l.name for l in binarized_layers(model)}
    full_precision = [l.name for l in model.layers if not isinstance(l, keras.layers.InputLayer) and l.name not in binary
                      and not _has_binary_inside(l)]
    if layers == "all":
        return full_precision
    if layers == "head":
        last = max((i for i, l in enumerate(model.layers) if l.name in binary or _has_binary_inside(l)), default=-1)
        return [l.name for l in model.layers[last + 1:]]
    if isinstance(layers, (list, tuple)) and all(isinstance(n, str) for n in layers):
        unknown = sorted(set(layers) - set(full_precision))
        if unknown:
            raise ConfigError(f"export_lce: int8_layers {unknown} are not full-precision layers of the model; "
                              f"choose among {full_precision}.")
        return list(layers)
    raise ConfigError(f"export_lce: int8_layers must be 'head', 'all' or a list of layer names, got {layers!r}.")


def _has_binary_inside(layer):
    return isinstance(layer, DenseAsConv1x1)


@keras.utils.register_keras_serializable(package="bitat_tf")
class DenseAsConv1x1(keras.layers.Layer):
    """A binarized `Dense` computed as a 1x1 `QuantConv2D` on a 1x1 image (same weights, same output).

    `input_quantizer` is the convolution's (a `ThresholdSign` by default; "ste_sign" once its threshold is
    folded into the layer before it)."""

    def __init__(self, units, use_bias=True, activation=None, input_quantizer=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.use_bias, self.activation = units, use_bias, keras.activations.get(activation)
        self.conv = larq.layers.QuantConv2D(units, 1, use_bias=use_bias, activation=activation,
                                            input_quantizer=input_quantizer or ThresholdSign(),
                                            kernel_quantizer=ScaledSign(),
                                            kernel_constraint="weight_clip", name="conv1x1")

    def call(self, inputs):
        return tf.squeeze(self.conv(inputs[:, None, None, :]), axis=[1, 2])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation),
                "input_quantizer": larq.quantizers.serialize(self.conv.input_quantizer)}


def inference_model(model, *, dense="conv", fold_thresholds=True):
    """A copy of `model` with the same outputs, in the form LCE converts best; `model` is left as it is.

    With dense="conv" every binarized 2-D `Dense` is a `DenseAsConv1x1`. With `fold_thresholds`, each input
    threshold that folds exactly into the offset before it (`export_fold`: a BatchNormalization's or a
    bias, through a ReLU when nothing else reads it) moves there and its quantizer becomes a plain sign, so
    the file holds no `SUB` for it (and no ReLU), and LCE can write bitpacked outputs between binary
    convolutions. The outputs agree up to float rounding of the pre-sign values. A `ZeroPadding2D` in front of
    a VALID convolution pads only the rows and columns the convolution reads (`export_padding`: LCE's
    converter fuses some paddings into a SAME padding that is not theirs, e.g. Keras ResNet's and DenseNet's
    stems).
    """
    folds = fold.threshold_folds(model) if fold_thresholds else []
    paddings = trimmed_paddings(model)
    signs = {f.layer for f in folds}
    identities = {f.activation for f in folds if f.activation}

    def clone(layer):
        if layer.name in paddings:
            return keras.layers.ZeroPadding2D(paddings[layer.name], name=layer.name)
        if layer.name in identities:
            return keras.layers.Activation("linear", name=layer.name)
        if dense == "conv" and is_binary_dense(layer):
            return DenseAsConv1x1(layer.units, layer.use_bias, keras.activations.serialize(layer.activation),
                                  "ste_sign" if layer.name in signs else None, name=layer.name)
        config = layer.get_config()
        if layer.name in signs:
            config["input_quantizer"] = "ste_sign"
        return layer.__class__.from_config(config)

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, rebuilt.layers):
        weights = [v.numpy() for v in old.weights if old.name not in signs or v is not old.input_quantizer.beta]
        if isinstance(new, DenseAsConv1x1):
            kernel, *rest = weights
            new.conv.set_weights([kernel.reshape(1, 1, *kernel.shape), *rest])
        else:
            new.set_weights(weights)
    fold.apply_folds(rebuilt, folds, fold.thresholds_of(model, folds))
    return rebuilt
