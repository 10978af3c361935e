import numpy as np
import pytest

from bitat_tf._compat import keras, larq, tf
from bitat_tf.quantizers import ScaledSign, ThresholdSign, custom_objects, scaled_sign, threshold_init


def test_scaled_sign_forward_takes_plus_minus_alpha_per_channel_and_sign0_is_plus():
    w = tf.constant([[0.3, -0.2], [0.0, 0.5], [-1.5, -0.0]])
    alpha = tf.constant([0.1, 2.0])
    out = scaled_sign(w, alpha).numpy()
    np.testing.assert_allclose(out, [[0.1, -2.0], [0.1, 2.0], [-0.1, 2.0]])


def test_scaled_sign_gradients_are_clipped_ste_for_w_and_exact_for_alpha():
    w = tf.Variable([[0.3, -0.2], [2.0, 0.5], [-1.5, -0.9]])
    alpha = tf.Variable([0.1, 2.0])
    dy = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(scaled_sign(w, alpha) * dy)
    dw, dalpha = tape.gradient(y, [w, alpha])
    inside = np.abs(w.numpy()) <= 1
    np.testing.assert_allclose(dw.numpy(), np.where(inside, dy.numpy() * alpha.numpy(), 0.0), rtol=1e-6)
    np.testing.assert_allclose(dalpha.numpy(), (dy.numpy() * np.sign(w.numpy())).sum(0), rtol=1e-6)


def test_threshold_sign_forward_and_approx_sign_gradient():
    q = ThresholdSign()
    x = tf.Variable([[0.5, 0.0], [1.5, -0.25], [0.2, 0.1]])
    q.build(x.shape)
    q.beta.assign([0.5, -0.5])
    with tf.GradientTape() as tape:
        y = q(x)
    np.testing.assert_array_equal(y.numpy(), [[1, 1], [1, 1], [-1, 1]])
    d = x.numpy() - np.array([0.5, -0.5])
    expected = np.where(np.abs(d) <= 1, 2 - 2 * np.abs(d), 0.0)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), expected, rtol=1e-6)


def test_gradient_reaches_threshold_beta():
    q = ThresholdSign()
    x = tf.constant([[0.2, 0.4]])
    q.build(x.shape)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(q(x))
    np.testing.assert_allclose(tape.gradient(y, q.beta).numpy(), [-(2 - 0.4), -(2 - 0.8)], rtol=1e-6)


def test_inactive_quantizers_are_identity():
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))
    for q in (ScaledSign(active=False), ThresholdSign(active=False)):
        np.testing.assert_array_equal(q(x).numpy(), x.numpy())


def test_scaled_sign_init_is_mean_abs_per_output_channel():
    q = ScaledSign()
    kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 5)).astype("float32")
    q.build(kernel.shape)
    q.init_from(kernel)
    np.testing.assert_allclose(q.alpha.numpy(), np.abs(kernel).mean(axis=(0, 1, 2)), rtol=1e-6)
    dw = ScaledSign(channel_axes=2)
    dw.build(kernel.shape)
    dw.init_from(kernel)
    assert dw.alpha.shape == (4, 5)


@pytest.mark.parametrize("method", ["mean", "median"])
def test_threshold_init_keeps_both_signs_after_relu(method):
    rng = np.random.default_rng(0)
    relu_out = np.maximum(rng.normal(size=(2000, 8)), 0).astype("float32")  # half exact zeros
    beta = threshold_init(relu_out, method)
    signs = np.where(relu_out - beta >= 0, 1, -1)
    assert np.all((signs == 1).any(0)) and np.all((signs == -1).any(0))
    # plain sign would collapse every channel to +1: the situation the threshold exists for
    assert np.all(np.where(relu_out - threshold_init(relu_out, "zero") >= 0, 1, -1) == 1)


def test_threshold_init_rejects_unknown_method():
    with pytest.raises(ValueError, match="threshold init"):
        threshold_init(np.zeros((3, 2)), "max")


def test_quantizers_are_binary_for_larq_and_round_trip_config():
    for q in (ScaledSign(channel_axes=2, active=False), ThresholdSign()):
        assert q.precision == 1
        clone = type(q).from_config(q.get_config())
        assert clone.get_config() == q.get_config()
    with pytest.raises(ValueError, match="channel_axes"):
        ScaledSign(channel_axes=3)


def test_model_with_quantizers_saves_and_loads(tmp_path):
    inp = keras.Input((6, 6, 3))
    out = larq.layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, input_quantizer=ThresholdSign(),
                                  kernel_quantizer=ScaledSign(), kernel_constraint="weight_clip")(inp)
    model = keras.Model(inp, out)
    layer = model.layers[1]
    layer.kernel_quantizer.alpha.assign([0.1, 0.2, 0.3, 0.4])
    layer.input_quantizer.beta.assign([0.1, -0.1, 0.2])
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    for name in ("m.keras", "m.h5"):
        loaded = keras.models.load_model(_saved(model, tmp_path / name), custom_objects=custom_objects())
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def _saved(model, path):
    model.save(path)
    return path


def test_threshold_sign_gradients_equal_larqs_approx_sign_bit_for_bit():
    from bitat_tf.quantizers import threshold_sign

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 5, 6)).astype("float32")
    x[0, 0, 0] = [1.5, -0.5, 0.5, 2.0, 0.0, -1.0]  # |x - beta| exactly 1 and 0 among them
    beta = np.array([0.5, 0.5, -0.5, 1.0, 0.0, 0.0], "float32")
    dy = tf.constant(rng.normal(size=x.shape).astype("float32"))
    grads = []
    for f in (threshold_sign, lambda x, b: larq.quantizers.approx_sign(x - b)):
        xv, bv = tf.constant(x), tf.constant(beta)
        with tf.GradientTape() as tape:
            tape.watch([xv, bv])
            y = f(xv, bv)
        grads.append([y.numpy(), *(g.numpy() for g in tape.gradient(y, [xv, bv], output_gradients=dy))])
    for ours, larqs in zip(*grads):
        np.testing.assert_array_equal(ours, larqs)


@pytest.mark.parametrize("quantizer", [ScaledSign, ThresholdSign])
def test_a_switched_quantizer_follows_its_switch_in_one_trace(quantizer):
    """With a switch attached, one traced function gives the quantizer's values and gradients when on and
    the identity's when off."""
    rng = np.random.default_rng(1)
    x = tf.Variable(rng.normal(size=(3, 4)).astype("float32") * 0.8)
    dy = tf.constant(rng.normal(size=(3, 4)).astype("float32"))
    q = quantizer()
    q.build(x.shape)
    weight = q.trainable_weights[0]
    weight.assign(rng.uniform(0.2, 0.5, size=weight.shape).astype("float32"))

    def values_and_gradients():
        with tf.GradientTape() as tape:
            y = q(x)
        return [y, *tape.gradient(y, [x, weight], output_gradients=dy)]

    expected_on = [t.numpy() for t in values_and_gradients()]
    q.attach_switch()
    traces = []

    @tf.function
    def switched():
        traces.append(1)
        return values_and_gradients()

    for active in (True, False, True):
        q.active = active
        got = [t.numpy() for t in switched()]
        expected = expected_on if active else [x.numpy(), dy.numpy(), np.zeros(weight.shape, "float32")]
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g, e)
    assert len(traces) == 1
    q.detach_switch()


def _pushed_below_zero(optimizer):
    """One step of `optimizer` on `sum(alpha)`-like loss big enough to take every scale below zero."""
    q = ScaledSign()
    q.build((3, 2))
    q.alpha.assign([0.05, 0.5])
    w = tf.constant([[0.3, -0.2], [0.1, 0.5], [-0.4, 0.9]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(q(w) * tf.sign(w))  # d loss / d alpha_c = number of rows = 3
    optimizer.apply_gradients(zip(tape.gradient(loss, [q.alpha]), [q.alpha]))
    return q.alpha.numpy()


@pytest.mark.parametrize("optimizer", [lambda: keras.optimizers.SGD(1.0), lambda: keras.optimizers.legacy.SGD(1.0),
                                       lambda: keras.optimizers.legacy.Adam(1.0)],
                         ids=["SGD", "legacy-SGD", "legacy-Adam"])
def test_an_optimizer_step_cannot_take_a_scale_to_zero_or_below(optimizer):
    """The legacy Adam is what the engine trains with; each applies the variable's constraint."""
    from bitat_tf.quantizers import MIN_SCALE

    np.testing.assert_array_equal(_pushed_below_zero(optimizer()), np.float32(MIN_SCALE))


def test_the_trainers_step_keeps_scales_positive():
    """BitatTrainer's own train_step (the path every phase of a run takes) applies the constraint too."""
    from bitat_tf.quantizers import MIN_SCALE
    from bitat_tf.training import BitatTrainer

    inp = keras.Input((4,))
    layer = larq.layers.QuantDense(2, use_bias=False, kernel_quantizer=ScaledSign(), input_quantizer=None,
                                   kernel_initializer="ones")
    trainer = BitatTrainer(keras.Model(inp, layer(inp)))
    trainer.compile(keras.optimizers.legacy.SGD(10.0), loss=lambda y, p: tf.reduce_mean(p))
    x = np.ones((8, 4), "float32")  # output = 4 * alpha: the task loss pushes every alpha down by 20 a step
    trainer.fit(x, np.zeros((8, 2), "float32"), batch_size=8, epochs=1, verbose=0)
    np.testing.assert_array_equal(layer.kernel_quantizer.alpha.numpy(), np.float32(MIN_SCALE))


def test_the_scale_constraint_leaves_the_quantizers_gradient_alone():
    """Above the floor the constraint is the identity and d/d alpha is sum(dy * sign(w)), as without it."""
    q = ScaledSign()
    w = tf.constant(np.random.default_rng(2).normal(size=(5, 3)).astype("float32"))
    q.build(w.shape)
    q.alpha.assign([1e-5, 0.1, 2.0])
    dy = tf.constant(np.random.default_rng(3).normal(size=(5, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        y = q(w)
    dalpha = tape.gradient(y, q.alpha, output_gradients=dy).numpy()
    np.testing.assert_allclose(dalpha, (dy.numpy() * np.where(w.numpy() >= 0, 1, -1)).sum(0), rtol=1e-6)
    np.testing.assert_array_equal(q.alpha.constraint(q.alpha).numpy(), q.alpha.numpy())
    constraint = q.alpha.constraint
    assert type(constraint).from_config(constraint.get_config()).min_value == constraint.min_value


def test_scale_init_never_starts_a_channel_at_zero():
    from bitat_tf.quantizers import MIN_SCALE

    q = ScaledSign()
    kernel = np.zeros((3, 3, 2, 4), "float32")
    kernel[..., 1] = 0.5
    q.build(kernel.shape)
    q.init_from(kernel)
    np.testing.assert_allclose(q.alpha.numpy(), [MIN_SCALE, 0.5, MIN_SCALE, MIN_SCALE], rtol=1e-6)
