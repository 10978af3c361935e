"""tensorflow-model-optimization interop: binary `QuantizeConfig`s for its annotate / apply flow.

The weight quantizer is the same `scaled_sign` as `ScaledSign`, with alpha the detached per-channel
mean |w| (ReActNet's choice, so the config needs no state of its own). tfmot has no hook for a layer's
*input*; what a `QuantizeConfig` can quantize is the layer's weights and its output activation. So these
configs binarize the weights and, with `binarize_output=True`, the layer's output activation; for binary
inputs to every convolution use `bitat_tf.binarize`, which builds on Larq's input quantizers.

!!! example
    ```python
    with bitat_tf.tfmot.quantize_scope():
        annotated = bitat_tf.tfmot.annotate(model, skip=["stem", "classifier"])
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme=bitat_tf.tfmot.BinaryScheme())
    ```
"""

import tensorflow_model_optimization as tfmot_lib

from bitat_tf._compat import keras, larq, tf
from bitat_tf.quantizers import scaled_sign

from tensorflow_model_optimization.python.core.quantization.keras import (  # noqa: E402
    quantize_layout_transform,
    quantize_scheme,
)

_q = tfmot_lib.quantization.keras


@keras.utils.register_keras_serializable(package="bitat_tf")
class BinaryWeightQuantizer(_q.quantizers.Quantizer):
    """`alpha_c * sign(w)`, alpha_c = stop_gradient(mean |w| over channel c); clipped STE to w."""

    def __init__(self, channel_axes=1):
        self.channel_axes = channel_axes

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        axes = list(range(len(inputs.shape) - self.channel_axes))
        alpha = tf.reshape(tf.stop_gradient(tf.reduce_mean(tf.abs(inputs), axis=axes)), (-1,))
        shape = tf.shape(inputs)
        flat = tf.reshape(inputs, tf.concat([shape[:-self.channel_axes], [-1]], axis=0))
        return tf.reshape(scaled_sign(flat, alpha), shape)

    def get_config(self):
        return {"channel_axes": self.channel_axes}

    def __eq__(self, other):
        return isinstance(other, BinaryWeightQuantizer) and other.channel_axes == self.channel_axes


@keras.utils.register_keras_serializable(package="bitat_tf")
class SignActivationQuantizer(_q.quantizers.Quantizer):
    """sign(x) with the ApproxSign gradient (Larq's `approx_sign`)."""

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return larq.quantizers.approx_sign(inputs)

    def get_config(self):
        return {}

    def __eq__(self, other):
        return isinstance(other, SignActivationQuantizer)


class _BinaryConfig(_q.QuantizeConfig):
    weight_attr = "kernel"
    channel_axes = 1

    def __init__(self, binarize_output=False):
        self.binarize_output = bool(binarize_output)

    def get_weights_and_quantizers(self, layer):
        return [(getattr(layer, self.weight_attr), BinaryWeightQuantizer(self.channel_axes))]

    def get_activations_and_quantizers(self, layer):
        return [(layer.activation, SignActivationQuantizer())] if self.binarize_output else []

    def set_quantize_weights(self, layer, quantize_weights):
        setattr(layer, self.weight_attr, quantize_weights[0])

    def set_quantize_activations(self, layer, quantize_activations):
        if self.binarize_output:
            layer.activation = quantize_activations[0]

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {"binarize_output": self.binarize_output}


@keras.utils.register_keras_serializable(package="bitat_tf")
class BinaryConv2DQuantizeConfig(_BinaryConfig):
    """Binary weights (and optionally a binary output) for `Conv2D`."""


@keras.utils.register_keras_serializable(package="bitat_tf")
class BinaryDenseQuantizeConfig(_BinaryConfig):
    """Binary weights (and optionally a binary output) for `Dense`."""


@keras.utils.register_keras_serializable(package="bitat_tf")
class BinaryDepthwiseConv2DQuantizeConfig(_BinaryConfig):
    """Binary weights (one alpha per (channel, multiplier)) for `DepthwiseConv2D`."""

    weight_attr = "depthwise_kernel"
    channel_axes = 2


CONFIGS = {keras.layers.Conv2D: BinaryConv2DQuantizeConfig, keras.layers.Dense: BinaryDenseQuantizeConfig,
           keras.layers.DepthwiseConv2D: BinaryDepthwiseConv2DQuantizeConfig}


class _NoLayoutTransform(quantize_layout_transform.QuantizeLayoutTransform):
    def apply(self, model, layer_quantize_map):
        return model, layer_quantize_map


class _BinaryOnlyRegistry:
    """Quantizes nothing on its own: only layers annotated with a config of this module change.

    tfmot asks the registry for an 8-bit output quantizer for every layer that follows a quantized one;
    answering "unsupported" keeps those layers in float, as a binary network wants.
    """

    def supports(self, layer):
        return False

    def get_quantize_config(self, layer):
        return None


class BinaryScheme(quantize_scheme.QuantizeScheme):
    """A quantize scheme without the 8-bit input `QuantizeLayer`, 8-bit layout transforms or 8-bit outputs.

    Annotate layers with a config from this module (see `annotate`); a layer annotated without a config
    is refused by `quantize_apply`.
    """

    def get_layout_transformer(self):
        return _NoLayoutTransform()

    def get_quantize_registry(self):
        return _BinaryOnlyRegistry()


def quantize_scope():
    """`tfmot.quantization.keras.quantize_scope` with this module's configs and quantizers registered."""
    return _q.quantize_scope({cls.__name__: cls for cls in (
        BinaryWeightQuantizer, SignActivationQuantizer, BinaryConv2DQuantizeConfig, BinaryDenseQuantizeConfig,
        BinaryDepthwiseConv2DQuantizeConfig)})


def annotate(model, *, skip=(), binarize_output=False):
    """Clone `model`, annotating every Conv2D / Dense / DepthwiseConv2D not named in `skip` as binary."""

    def clone(layer):
        config_cls = CONFIGS.get(type(layer))
        fresh = layer.__class__.from_config(layer.get_config())
        if config_cls is None or layer.name in skip:
            return fresh
        return _q.quantize_annotate_layer(fresh, quantize_config=config_cls(binarize_output))

    annotated = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, annotated.layers):
        inner = getattr(target, "layer", target)
        inner.set_weights(source.get_weights())
    return annotated
