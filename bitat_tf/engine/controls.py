"""The run's switches on the working model's layers: variables the traced functions read at run time.

- each quantizer's on/off switch and the pad value of its 'same' padding (`quantizers.attach_switch`);
- each BatchNorm's training mode (a frozen BatchNorm normalises with its moving statistics) and its
  momentum, so that recalibration (momentum i / (i + 1) at batch i) is one compiled forward pass;
- each convolution's gradient switches (`gating`) and, in a progressive run, the backward pass's
  segments (`segments`: none below the frozen frontier).
"""

from bitat_tf import gating, graph, segments
from bitat_tf._compat import keras, tf
from bitat_tf.quantizers import ThresholdSign


class Controls:
    """Attaches the run's variables to the working model's layers and takes them off again (`detach`)."""

    def __init__(self, model, *, steps_train_every_norm=False, segment_below=()):
        self.switchable, self.padded, self.norms = [], [], []
        for layer in model.layers:
            input_quantizer = getattr(layer, "input_quantizer", None)
            if isinstance(input_quantizer, ThresholdSign):
                for quantizer in (input_quantizer, graph.weight_quantizer(layer)):
                    quantizer.attach_switch()
                    self.switchable.append(quantizer)
                if getattr(layer, "padding", None) == "same" and hasattr(layer, "pad_values"):
                    # Pad explicitly (Larq's tf.pad path) with a value the switch moves between 0 and 1.
                    object.__setattr__(layer, "pad_values", tf.Variable(float(layer.pad_values), trainable=False,
                                                                        name="pad_value"))
                    layer._is_native_padding = False
                    self.padded.append(layer)
            if isinstance(layer, keras.layers.BatchNormalization):
                object.__setattr__(layer, "bitat_training", tf.Variable(False, trainable=False, name="trains"))
                object.__setattr__(layer, "bitat_momentum", layer.momentum)
                object.__setattr__(layer, "momentum", tf.Variable(float(layer.momentum), trainable=False,
                                                                  name="momentum"))
                object.__setattr__(layer, "_get_training_value",
                                   _training_value(layer.bitat_training, steps_train_every_norm))
                self.norms.append(layer)
        self.gates = gating.Gates(model)
        self.segments = segments.Segments.of(model, segment_below) if segment_below else None

    def detach(self):
        if self.segments is not None:
            self.segments.detach()
        self.gates.detach()
        for quantizer in self.switchable:
            quantizer.detach_switch()
        for layer in self.padded:
            value = float(layer.pad_values.numpy())
            object.__setattr__(layer, "pad_values", value)
            layer._is_native_padding = value == 0.0
        for bn in self.norms:
            object.__setattr__(bn, "momentum", bn.bitat_momentum)
            for name in ("_get_training_value", "bitat_training", "bitat_momentum"):
                object.__delattr__(bn, name)


def _training_value(switch, steps_train=False):
    """A BatchNorm's training mode: the model's flag and the layer's switch (Keras reads this at call).

    A Python `training=True` comes from the train step (the compiled forward passes a tensor): with
    `steps_train` it is True there, without a switch.
    """

    def get(training=None):
        if training is None or (isinstance(training, (bool, int)) and not training):
            return False
        if isinstance(training, (bool, int)):
            return True if steps_train else tf.convert_to_tensor(switch)
        return tf.logical_and(tf.cast(training, tf.bool), tf.convert_to_tensor(switch))

    return get


__all__ = ["Controls"]
