"""What every export checks of the binary layers before it writes a file: which layers are binarized, the
channels of scale 0, and the float fallback error.

A conversion that succeeds can still hand back a file that is not what was asked for. LCE's converter
keeps a binary convolution whose kernel has a channel of scale 0 as a float `CONV_2D` (behind
`LceQuantize -> LceDequantize -> PADV2`). So each export counts its binary ops against the binarized
layers it was given (`check_binary_ops`), naming the layers that would run as float convolutions. A
channel of scale 0 followed by a BatchNormalization has an exact binary equivalent, which the export uses
(`absorb_zero_scales`). Running the file and comparing its outputs with Keras is `export_parity`'s.
"""

import warnings

import numpy as np

from bitat_tf._compat import is_keras3_model, keras, larq, tf
from bitat_tf.errors import BitatError, UnsupportedModelError
from bitat_tf.export_census import layers_named_by, op_census

ZERO_SCALE = float(np.finfo(np.float32).eps)  # LCE's converter: |scale| <= this is no binary channel
_FLOAT_CONV_OPS = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "PADV2", "LceDequantize")


class ExportError(BitatError):
    """An export produced a file that does not run, or does not compute what the Keras model computes."""


class FloatFallbackError(ExportError):
    """Binarized layers would run as float convolutions in the LCE file; the message names them and why."""


class ExportWarning(UserWarning):
    """An export wrote a file that runs but is not all the user may expect (float layers, nothing binary)."""


# ---- the model's binary layers ----------------------------------------------------------------------

def binarized_layers(model):
    """Layers of `model` whose inputs and kernel are both binarized (Larq precision 1)."""
    return binarized_layers_of(model.layers)


def binarized_layers_of(layers):
    found = []
    for layer in layers:
        input_q = getattr(layer, "input_quantizer", None)
        kernel_q = getattr(layer, "kernel_quantizer", None) or getattr(layer, "depthwise_quantizer", None)
        if all(getattr(q, "precision", None) == 1 and getattr(q, "active", True) for q in (input_q, kernel_q)):
            found.append(layer)
    return found


def check_model(model, what):
    """Refuse what Larq and LCE cannot convert: a Keras 3 model or no model at all."""
    if is_keras3_model(model):
        raise UnsupportedModelError(
            f"{what}: model is a Keras 3 {type(model).__name__}; Larq and LCE convert tf_keras models. Binarize "
            "it with bitat_tf.binarize (which converts Keras 3 models of common layers) and export the result.")
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"{what}: model must be a tf_keras.Model, got {type(model).__name__} "
                                    f"{model!r:.80}. Load a saved model first with tf_keras.models.load_model("
                                    "path, custom_objects=bitat_tf.custom_objects()).")



def is_binary_dense(layer):
    """A binarized 2-D `Dense`: what `export_lce(dense="conv")` computes as a 1x1 binary convolution."""
    return (type(layer) is larq.layers.QuantDense and layer in binarized_layers_of([layer])
            and len(layer.input_shape) == 2)



# ---- channels of scale 0 -----------------------------------------------------------------------------

def _conv_of(layer):
    """The Larq convolution inside a binary layer (itself, or a `DenseAsConv1x1`'s 1x1 conv)."""
    return getattr(layer, "conv", layer)


def zero_scale_channels(layer):
    """Output channels of a binary layer whose scale alpha LCE reads as 0 (|alpha| <= float32 epsilon); an
    empty list when its kernel quantizer has no alpha."""
    alpha = getattr(getattr(_conv_of(layer), "kernel_quantizer", None), "alpha", None)
    if alpha is None:
        return []
    alpha = np.asarray(alpha.numpy()).reshape(-1)
    return [int(c) for c in np.flatnonzero(np.abs(alpha) <= ZERO_SCALE)]


def _only_consumer(model, layer):
    """The one layer of `model` that reads `layer`'s output, or None (several, none, or a model output)."""
    if len(layer.inbound_nodes) != 1 or any(t is layer.output for t in model.outputs):
        return None
    readers = [l for l in model.layers for node in l.inbound_nodes
               if any(t is layer.output for t in tf.nest.flatten(node.input_tensors))]
    return readers[0] if len(readers) == 1 and len(readers[0].inbound_nodes) == 1 else None


def _absorbing_batchnorm(model, layer):
    bn = _only_consumer(model, layer)
    if (isinstance(bn, keras.layers.BatchNormalization) and bn.scale and bn.center
            and list(bn.axis) == [len(bn.input_shape) - 1]):
        return bn
    return None


def absorb_zero_scales(model, layers):
    """Give each channel of scale 0 an exact binary equivalent, in place; return the reasons of the layers
    for which none exists, as {layer name: reason}.

    Such a channel outputs its bias (a constant). When the layer's only reader is a BatchNormalization, the
    channel gets scale 1 and the BatchNormalization gamma 0 and, as beta, the constant it produced from that
    bias: the same outputs, and a kernel of +-scale in every channel, which LCE converts. Call it on a copy.
    """
    unrepaired = {}
    for layer in layers:
        channels = zero_scale_channels(layer)
        if not channels:
            continue
        bn = _absorbing_batchnorm(model, layer)
        if bn is None:
            unrepaired[layer.name] = (f"channel{'s' if len(channels) > 1 else ''} {_listed(channels)} ha"
                                      f"{'ve' if len(channels) > 1 else 's'} scale alpha=0 (|alpha| <= "
                                      f"{ZERO_SCALE:.2g}) and no BatchNormalization alone reads the layer to "
                                      "absorb it")
            continue
        _absorb(_conv_of(layer), bn, channels)
    return unrepaired


def _absorb(conv, bn, channels):
    bias = conv.bias.numpy() if conv.use_bias else np.zeros(conv.filters, np.float32)
    constant = conv.activation(tf.constant(bias)).numpy().astype(np.float64)  # what a dead channel outputs
    gamma, beta, mean, variance = (v.numpy() for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    normalized = gamma * (constant - mean) / np.sqrt(variance.astype(np.float64) + bn.epsilon) + beta
    alpha = conv.kernel_quantizer.alpha.numpy()
    alpha[channels], gamma[channels], beta[channels] = 1.0, 0.0, normalized[channels]
    conv.kernel_quantizer.alpha.assign(alpha)
    bn.gamma.assign(gamma)
    bn.beta.assign(beta.astype(np.float32))


def _listed(items, most=8):
    shown = ", ".join(str(i) for i in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


# ---- the census -----------------------------------------------------------------------------------------

def check_binary_ops(flatbuffer, expected, reasons, *, allow_float_fallback, what="export_lce"):
    """Raise `FloatFallbackError` (or warn, with `allow_float_fallback`) when fewer `LceBconv2d` ops than
    `expected` binary layers reached the file; `reasons` ({name: why}) explains those it can."""
    missing = len(expected) - op_census(flatbuffer).get("LceBconv2d", 0)
    if missing <= 0:
        return
    message = (f"{what}: {missing} of {len(expected)} binarized layers would run as float convolutions, not "
               f"LceBconv2d: {_suspects(flatbuffer, expected, reasons, missing)}.")
    if allow_float_fallback:
        warnings.warn(f"{message} The file was written because allow_float_fallback=True.", ExportWarning,
                      stacklevel=3)
        return
    advice = ("Binarize again with this bitat_tf (it keeps every alpha >= 1e-6 while training) or set those "
              "channels' alpha to a small positive value and check the accuracy with verify_export; or pass "
              if reasons else "Or pass ")
    raise FloatFallbackError(f"{message} Nothing was written. {advice}allow_float_fallback=True (CLI: "
                             "--allow-float-fallback) to accept float convolutions there.")


def _suspects(flatbuffer, expected, reasons, missing):
    """The layers behind the float convolutions: those with a known reason, then those the file's float
    ops name."""
    named_by_file = layers_named_by(flatbuffer, _FLOAT_CONV_OPS, [l.name for l in expected])
    suspects = list(reasons) + [n for n in named_by_file if n not in reasons]
    named = [f"{n!r} ({reasons.get(n, 'its float convolution names it')})" for n in suspects]
    if len(suspects) < missing:
        named.append("a layer the file does not name (check that nothing sits between the sign and the "
                     "convolution, e.g. a reshape)")
    return "; ".join(named)


def warn_float_kinds(layers, what="export_lce"):
    """Binarized layers of kinds LCE has no binary kernel for run as float ops: say so, once."""
    if layers:
        kinds = ", ".join(f"{l.name!r} ({type(l).__name__})" for l in layers)
        warnings.warn(f"{what}: {kinds} {'are' if len(layers) > 1 else 'is'} binarized, but LCE has no binary "
                      "kernel for that kind: they run as float ops on +-1 values.", ExportWarning, stacklevel=4)


def warn_nothing_binary(model, what="export_lce"):
    """A model without binarized layers through LCE's converter is a float model: say so."""
    warnings.warn(f"{what}: model {model.name!r} has no binarized layer (none with active 1-bit input and "
                  "kernel quantizers), so the file holds float ops only. Binarize it first with "
                  "bitat_tf.binarize, or use export_tflite for a float model.", ExportWarning, stacklevel=4)
