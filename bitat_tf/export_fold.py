"""Thresholds folded into the offset before them, in the copy of the model an export converts.

`ThresholdSign` computes `sign(x - beta)`, which LCE's converter keeps as a float `SUB` in front of each
`LceQuantize`. When `x` is the output of a layer that ends in a per-channel offset (a BatchNormalization's
beta, a convolution's or a Dense layer's bias, no activation) and nothing else reads `x`, the subtraction
moves into that offset: `sign(BN(x) - b) == sign(BN'(x))`, BN' being BN with `b` subtracted from its offset,
and the quantizer becomes a plain sign. A ReLU (or ReLU6) between the BatchNormalization and the sign folds
too, channel by channel, when nothing else reads either tensor: with the ReLU clipping to [0, m],
`sign(relu(y) - b)` is `sign(y - b)` for 0 < b <= m, always +1 for b <= 0 and always -1 for b > m (those
channels get gamma 0 and offset +-1). The ReLU then becomes the identity.

The values are the same up to float rounding (the offset and the threshold are added in one step instead
of two), so a pre-sign value within rounding of its threshold may flip as in any export; `verify_export`
measures it. Where the tensor before the sign has another reader (a shortcut, as in ReActNet's blocks), one
elementwise op is needed to make `x - b` beside `x`, and the `SUB` stays.

Once no `SUB` and no activation sit between a binary convolution's BatchNormalization and the next sign,
LCE's converter folds the BatchNormalization into the convolution and the sign after it, and writes that
convolution's output bitpacked (`LceBconv2d` straight into the next `LceBconv2d`, no `LceQuantize`).
"""

import dataclasses

import numpy as np

from bitat_tf._compat import keras, tf
from bitat_tf.quantizers import ThresholdSign


@dataclasses.dataclass(frozen=True)
class Fold:
    """One threshold folded: the layer whose input quantizer it is, the layer whose offset takes it, and
    the clipping activation between them (None, or its name and its clip range)."""

    layer: str
    offset: str
    activation: str = None
    clip: tuple = None


def threshold_folds(model):
    """The thresholds of `model` that fold exactly into an offset before them, as a list of `Fold`s (the
    model is only read)."""
    readers = readers_of(model)
    folds = []
    for layer in model.layers:
        if _threshold_quantizer(layer) is None or len(layer.inbound_nodes) != 1:
            continue
        fold = _fold_for(readers, layer)
        if fold is not None:
            folds.append(fold)
    return folds


def apply_folds(model, folds, thresholds):
    """Move each fold's thresholds (`thresholds[fold.layer]`, one per channel) into its offset layer of
    `model`, in place. `model` must already compute a plain sign there and the identity for the folded
    activations (as `export.inference_model` builds it)."""
    for fold in folds:
        beta = np.asarray(thresholds[fold.layer], np.float64)
        offset = model.get_layer(fold.offset)
        if isinstance(offset, keras.layers.BatchNormalization):
            _fold_into_batchnorm(offset, beta, fold.clip)
        else:
            offset.bias.assign((offset.bias.numpy() - beta).astype(np.float32))


def thresholds_of(model, folds):
    """{layer name: its thresholds beta} for the layers of `folds`."""
    return {f.layer: _threshold_quantizer(model.get_layer(f.layer)).beta.numpy() for f in folds}


def _threshold_quantizer(layer):
    """The active `ThresholdSign` that quantizes a layer's input, or None."""
    quantizer = getattr(layer, "input_quantizer", None)
    return quantizer if isinstance(quantizer, ThresholdSign) and quantizer.active else None


def readers_of(model):
    """{id(tensor): [layers reading it]} over the model's layers; a model output counts as a reader."""
    readers = {}
    for layer in model.layers:
        for node in layer.inbound_nodes:
            for tensor in tf.nest.flatten(node.input_tensors):
                readers.setdefault(id(tensor), []).append(layer)
    for tensor in model.outputs:
        readers.setdefault(id(tensor), []).append(None)
    return readers


def _single_input(layer):
    tensors = tf.nest.flatten(layer.inbound_nodes[0].input_tensors)
    return tensors[0] if len(tensors) == 1 else None


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return None if history is None else history.layer


def _read_only_by(readers, tensor, layer):
    return readers.get(id(tensor)) == [layer]


def _fold_for(readers, layer):
    """The `Fold` of `layer`'s threshold, or None when the graph around it allows none."""
    x = _single_input(layer)
    producer = None if x is None or not _read_only_by(readers, x, layer) else _producer(x)
    if producer is None or len(producer.inbound_nodes) != 1:
        return None
    if _is_offset(producer, with_scale=False):
        return Fold(layer.name, producer.name)
    clip = _clip_range(producer)
    y = _single_input(producer) if clip else None
    if y is None or not _read_only_by(readers, y, producer):
        return None
    offset = _producer(y)
    if offset is not None and len(offset.inbound_nodes) == 1 and isinstance(offset, keras.layers.BatchNormalization) \
            and _is_offset(offset, with_scale=True):
        return Fold(layer.name, offset.name, producer.name, clip)
    return None


def _is_offset(layer, *, with_scale):
    """A layer whose output ends in a per-channel offset on its last axis, with nothing after it."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return (layer.center and (layer.scale or not with_scale) and not layer.renorm
                and list(layer.axis) == [len(layer.input_shape) - 1])
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
        return (not with_scale and layer.use_bias and keras.activations.serialize(layer.activation) == "linear"
                and getattr(layer, "data_format", "channels_last") == "channels_last")
    return False


def _clip_range(layer):
    """(0, m) for a ReLU clipping to [0, m] (m = inf without a ceiling), else None."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        return 0.0, float("inf") if layer.max_value is None else float(layer.max_value)
    if isinstance(layer, keras.layers.Activation):
        return {"relu": (0.0, float("inf")), "relu6": (0.0, 6.0)}.get(keras.activations.serialize(layer.activation))
    return None


def _fold_into_batchnorm(bn, beta, clip):
    gamma = bn.gamma.numpy() if bn.scale else None
    offset = bn.beta.numpy().astype(np.float64) - beta
    if clip is not None:
        low, high = clip
        always_plus, always_minus = beta <= low, beta > high
        offset[always_plus], offset[always_minus] = 1.0, -1.0
        gamma[always_plus | always_minus] = 0.0
        bn.gamma.assign(gamma)
    bn.beta.assign(offset.astype(np.float32))
