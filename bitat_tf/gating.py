"""Gradients only where a phase needs them: the backward pass of a convolution behind two switches.

In a progressive run most of the network is frozen at any time. Below the layer being quantized nothing
trains, so no gradient needs to flow there; above it the layers pass gradients down but (in the quantize
step) update no kernel. TensorFlow's tape cannot know that, because which variables train is a mask the
traced step reads at run time (`BitatTrainer.set_trainable`). So each 2-D convolution of the working model
gets a custom gradient whose input gradient (`Conv2DBackpropInput`) and kernel gradient
(`Conv2DBackpropFilter`) each sit behind a `tf.cond` on a boolean variable; the engine sets both switches
from the trainable mask at the start of every phase. A switched-off branch returns zeros, which are
exactly the gradients the mask would have discarded, so training is unchanged and the step is cheaper.

The convolutions are the bulk of a step's arithmetic; the elementwise backward ops of BatchNorms and
quantizers below a frozen layer would still run (on zeros): in a progressive run `segments` skips the
backward pass below the frozen frontier altogether, and the kernel-gradient switch still saves the
kernel gradients of the layers above the one being quantized.
"""

from bitat_tf._compat import keras, tf
from bitat_tf.training import assigner, variable_ref

L = keras.layers


class Gate:
    """The two switches of one convolution and the patch that reads them."""

    def __init__(self, layer):
        self.layer = layer
        self.need_dx = tf.Variable(True, trainable=False, name="needs_input_gradient")
        self.need_dw = tf.Variable(True, trainable=False, name="needs_kernel_gradient")
        object.__setattr__(layer, "convolution_op", _gated_convolution(layer, self.need_dx, self.need_dw))

    def detach(self):
        object.__delattr__(self.layer, "convolution_op")  # the class's method again


def gateable(layer):
    """Plain 2-D convolutions (Conv2D and Larq's QuantConv2D): one group, channels last, called once, not
    dilated. TensorFlow's CPU kernel of `Conv2DBackpropFilter` has no dilation without oneDNN (seen on an
    AVX2 machine: "Current implementation does not yet support dilations"); a dilated convolution keeps
    Keras' own gradient, which TensorFlow computes by space-to-batch."""
    return (isinstance(layer, L.Conv2D) and not isinstance(layer, (L.DepthwiseConv2D, L.Conv2DTranspose))
            and type(layer).convolution_op is L.Conv2D.convolution_op and layer.groups == 1
            and layer.data_format == "channels_last" and len(layer.inbound_nodes) <= 1
            and tuple(layer.dilation_rate) == (1, 1))


class Gates:
    """Every gateable convolution of `model`, with the switches set from the variables that train."""

    def __init__(self, model):
        self.layers = list(model.layers)  # a functional model lists its layers in topological order
        self.gates = {id(layer): Gate(layer) for layer in self.layers if gateable(layer)}
        gates = self.gates.values()
        self._assign = assigner([g.need_dw for g in gates] + [g.need_dx for g in gates], tf.bool)

    def set(self, trains):
        """Switch gradients on where a variable in `trains` (a set of `variable.ref()`) needs them.

        A kernel gradient where the layer's kernel or its scale trains; an input gradient where anything
        below the convolution trains: a variable of an earlier layer or the layer's own input threshold.
        Layers that share weights or run more than once are never gated (`gateable`).
        """
        below, need_dw, need_dx = False, [], []  # in the gates' order: they were made walking these layers
        for layer in self.layers:
            own = {variable_ref(v) for v in layer.trainable_weights}
            if id(layer) in self.gates:
                kernel_side = {variable_ref(layer.kernel)} | {variable_ref(v) for v in _quantizer_weights(layer)}
                bias = {variable_ref(layer.bias)} if getattr(layer, "bias", None) is not None else set()
                need_dw.append(bool(kernel_side & trains))
                need_dx.append(below or bool((own - kernel_side - bias) & trains))
            below = below or bool(own & trains)
        self._assign(tf.constant(need_dw + need_dx, tf.bool))

    def detach(self):
        for gate in self.gates.values():
            gate.detach()


def _gated_convolution(layer, need_dx, need_dw):
    def convolution_op(inputs, kernel):
        # Read at call time: Larq's explicit-padding path sets `padding` to "valid" around the call.
        padding = layer.padding.upper()
        strides, dilations = [1, *layer.strides, 1], [1, *layer.dilation_rate, 1]
        dx_on, dw_on = tf.convert_to_tensor(need_dx), tf.convert_to_tensor(need_dw)

        @tf.custom_gradient
        def conv(x, k):
            def grad(dy):
                dx = tf.cond(dx_on, lambda: tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(x), filter=k, out_backprop=dy, strides=strides, padding=padding,
                    dilations=dilations), lambda: tf.zeros_like(x))
                dk = tf.cond(dw_on, lambda: tf.raw_ops.Conv2DBackpropFilter(
                    input=x, filter_sizes=tf.shape(k), out_backprop=dy, strides=strides, padding=padding,
                    dilations=dilations), lambda: tf.zeros_like(k))
                return dx, dk

            return tf.nn.conv2d(x, k, strides=strides, padding=padding, dilations=dilations), grad

        return conv(inputs, tf.convert_to_tensor(kernel))

    return convolution_op


def _quantizer_weights(layer):
    quantizer = getattr(layer, "kernel_quantizer", None)
    return list(getattr(quantizer, "trainable_weights", []) or [])


__all__ = ["Gate", "Gates", "gateable"]
