"""Sign quantizers for Larq's quantized layers, with the state BiTAT trains.

Both are Larq `Quantizer`s (Keras layers with `precision = 1`), so `larq.models.summary` counts the layers
that carry them as binary, and both serialize and are registered under the `bitat_tf` package so that a
saved binarized model loads again with `bitat_tf.custom_objects()`.

Each can be inactive (the identity): one model then serves the whole progressive run, and a layer's
quantizers are switched on when its turn comes. The switch is a Python attribute (`active`), read when Keras
traces the model. During a run the engine attaches a boolean variable to it (`attach_switch`), so that
flipping `active` assigns the variable and a traced step follows without a new trace; it detaches the
variable at the end, so the saved and exported model holds plain quantizers again.
"""

from bitat_tf._compat import keras, larq, tf

_PACKAGE = "bitat_tf"

MIN_SCALE = 1e-6
"""The smallest weight scale alpha a channel keeps. LCE's converter reads a kernel channel whose scale is
at most float32's epsilon (1.2e-7) as not binary and leaves the whole convolution a float CONV_2D."""


def _sign(x):
    """sign(x) with sign(0) = +1, in the form LCE's converter recognises."""
    return larq.math.sign(x)


@tf.custom_gradient
def scaled_sign(w, alpha):
    """`alpha * sign(w)`: straight-through gradient to `w` clipped at |w| <= 1, exact gradient to `alpha`.

    # Arguments
        w: latent real weights; the last axes broadcast against `alpha`.
        alpha: positive scale per output channel.

    # Returns
        A tensor of `w`'s shape whose values are `+alpha_c` or `-alpha_c` in channel c.
    """
    sign_w = _sign(w)

    def grad(dy):
        dw = tf.where(tf.abs(w) <= 1.0, dy * alpha, tf.zeros_like(dy))
        reduce_axes = list(range(len(w.shape) - len(alpha.shape)))
        dalpha = tf.reduce_sum(dy * sign_w, axis=reduce_axes)
        return dw, dalpha

    return alpha * sign_w, grad


@tf.custom_gradient
def threshold_sign(x, beta):
    """`sign(x - beta)` with the ApproxSign gradient of Bi-Real Net / ReActNet (Larq's `approx_sign`).

    The gradient to x is `dy * max(2 - 2|x - beta|, 0)`, the same values as Larq's
    `where(|u| <= 1, (1 - |u|) * 2 * dy, 0)` in five elementwise passes instead of seven, none of them a
    select (which reads three tensors); beta gets minus its sum over all but the channel axis.
    """
    u = x - beta

    def grad(dy):
        dx = dy * tf.nn.relu(2.0 - 2.0 * tf.abs(u))
        return dx, -tf.reduce_sum(dx, axis=list(range(len(dx.shape) - 1)))

    return _sign(u), grad


def select(condition, x, y):
    """`x` where the scalar boolean `condition` holds, else `y`: passes one input through, no copy."""
    return tf.raw_ops.Select(condition=tf.convert_to_tensor(condition), x=x, y=y)


class _Switchable(larq.quantizers.Quantizer):
    precision = 1

    def __init__(self, active=True, **kwargs):
        super().__init__(**kwargs)
        object.__setattr__(self, "_switch", None)  # not a Keras-tracked weight: never saved
        self.active = bool(active)

    @property
    def active(self):
        return self._active

    @active.setter
    def active(self, value):
        self._active = bool(value)
        if self._switch is not None:
            self._switch.assign(self._active)

    def attach_switch(self):
        """Hold the on/off state in a variable from now on (traced steps read it at run time)."""
        object.__setattr__(self, "_switch", tf.Variable(self._active, trainable=False, name="switch"))

    def detach_switch(self):
        object.__setattr__(self, "_switch", None)

    def call(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if self._switch is not None:
            # Both values and a select, not a `tf.cond`, whose branch functions and their gradients make
            # tracing the train step several times slower. The select is `Select`, whose kernel hands one
            # input through when the condition is a scalar (its gradient selects the same way); `tf.where`'s
            # `SelectV2` broadcasts the scalar and copies: ~1 ms per 8 MB activation, three selects
            # (forward and gradient) per quantizer and step, 15-20% of the standard model's step.
            return select(self._switch, self.quantize(inputs), inputs)
        return self.quantize(inputs) if self._active else inputs

    def get_config(self):
        return {**super().get_config(), "active": self.active}


@keras.utils.register_keras_serializable(package=_PACKAGE)
class PositiveScale(keras.constraints.Constraint):
    """Keeps every scale at `min_value` or above: `max(alpha, min_value)` after each optimizer step.

    Keras optimizers apply a variable's constraint right after its update (the legacy ones and the
    current ones, in `apply_gradients`), so the forward pass and its gradients stay those of
    `scaled_sign`; only a step that would take a scale below `min_value` is cut short. Keras' `NonNeg`,
    used before, set such a scale to exactly 0, which LCE cannot convert.

    # Arguments
        min_value: the floor, above float32's epsilon (LCE's test for a zero scale).
    """

    def __init__(self, min_value=MIN_SCALE):
        self.min_value = float(min_value)

    def __call__(self, w):
        return tf.maximum(w, tf.cast(self.min_value, w.dtype))

    def get_config(self):
        return {"min_value": self.min_value}


@keras.utils.register_keras_serializable(package=_PACKAGE)
class ScaledSign(_Switchable):
    """Weight quantizer: `alpha_c * sign(w)` with one trainable scale per output channel.

    `alpha` starts at 1 and is set by `init_from(kernel)` to `mean(|w|)` over each output channel
    (XNOR-Net). After each optimizer step it is kept at `MIN_SCALE` or above (`PositiveScale`), so that
    every channel stays a binary one for LCE. The gradient to the latent weights is straight-through,
    clipped at |w| <= 1 (Larq's `ste_sign`); pair it with `kernel_constraint="weight_clip"`.

    # Arguments
        channel_axes: number of trailing kernel axes that index an output channel: 1 for Conv2D and Dense
            kernels, 2 for DepthwiseConv2D's (kh, kw, cin, multiplier).
        active: when False the quantizer is the identity.

    # References
        - [XNOR-Net](https://arxiv.org/abs/1603.05279)
        - BiTAT (Park et al., ECCV 2022 Workshops), Eq. 8
    """

    def __init__(self, channel_axes=1, active=True, **kwargs):
        super().__init__(active=active, **kwargs)
        if channel_axes not in (1, 2):
            raise ValueError(f"channel_axes must be 1 or 2, got {channel_axes!r}.")
        self.channel_axes = channel_axes

    def build(self, input_shape):
        shape = tuple(input_shape[-self.channel_axes :])
        self.alpha = self.add_weight(
            name="alpha",
            shape=shape,
            initializer="ones",
            constraint=PositiveScale(),
            trainable=True,
        )
        super().build(input_shape)

    def quantize(self, inputs):
        # Read alpha as a tensor: a custom gradient must not capture (mirrored) variables.
        return scaled_sign(inputs, tf.cast(tf.convert_to_tensor(self.alpha), inputs.dtype))

    def init_from(self, kernel):
        """Set alpha to the mean absolute latent weight of each output channel."""
        kernel = tf.convert_to_tensor(kernel)
        axes = list(range(len(kernel.shape) - self.channel_axes))
        self.alpha.assign(tf.maximum(tf.reduce_mean(tf.abs(kernel), axis=axes), MIN_SCALE))

    def get_config(self):
        return {**super().get_config(), "channel_axes": self.channel_axes}


@keras.utils.register_keras_serializable(package=_PACKAGE)
class ThresholdSign(_Switchable):
    """Input quantizer: `sign(x - beta_c)` with a trainable threshold per channel (ReActNet's RSign).

    The forward value is +1 where `x >= beta` and -1 elsewhere (sign(0) = +1, as in Larq and LCE); the
    gradient is ApproxSign's `2 - 2|x - beta|` inside |x - beta| <= 1. Set `beta` from data with
    `init_from(samples)`: inputs that follow a ReLU are all >= 0, so with beta = 0 every channel would be +1.

    # Arguments
        active: when False the quantizer is the identity.

    # References
        - [ReActNet](https://arxiv.org/abs/2003.03488), RSign
        - [Bi-Real Net](https://arxiv.org/abs/1808.00278), ApproxSign
    """

    def build(self, input_shape):
        self.beta = self.add_weight(
            name="beta", shape=(input_shape[-1],), initializer="zeros", trainable=True
        )
        super().build(input_shape)

    def quantize(self, inputs):
        return threshold_sign(inputs, tf.cast(tf.convert_to_tensor(self.beta), inputs.dtype))

    def init_from(self, samples, method="mean"):
        """Set beta per channel from input samples of shape (..., channels): "mean", "median" or "zero"."""
        self.beta.assign(threshold_init(samples, method))


def threshold_init(samples, method="mean"):
    """Per-channel threshold for `samples` (..., channels) that keeps both signs in every live channel.

    "mean" splits each channel around its mean, so a ReLU output that is zero half the time and positive
    otherwise still yields both signs; "median" balances the signs exactly unless ties dominate; "zero"
    is plain sign(x).
    """
    import numpy as np

    flat = np.asarray(samples, dtype=np.float64).reshape(-1, np.shape(samples)[-1])
    if method == "zero":
        return np.zeros(flat.shape[1], dtype=np.float32)
    if method == "median":
        beta = np.median(flat, axis=0)
        # With ties at the median (e.g. many exact zeros) sign(x - median) is +1 for most of the mass;
        # move the threshold just above the tied value so the tie goes to -1 instead.
        ties = (flat == beta).mean(axis=0) > 0.25
        beta = np.where(ties, np.nextafter(beta.astype(np.float32), np.float32(np.inf)), beta)
        return beta.astype(np.float32)
    if method == "mean":
        return flat.mean(axis=0).astype(np.float32)
    raise ValueError(f"threshold init must be 'mean', 'median' or 'zero', got {method!r}.")


def custom_objects():
    """The objects a saved bitat_tf model needs: pass to `tf_keras.models.load_model(custom_objects=...)`.

    Larq's own layers and quantizers are registered by Larq and need nothing here.
    """
    return {
        "ScaledSign": ScaledSign,
        "ThresholdSign": ThresholdSign,
        "PositiveScale": PositiveScale,
        f"{_PACKAGE}>ScaledSign": ScaledSign,
        f"{_PACKAGE}>ThresholdSign": ThresholdSign,
        f"{_PACKAGE}>PositiveScale": PositiveScale,
    }
