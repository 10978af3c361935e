"""The segmented backward pass: where the cuts are, the same gradients as one backward pass, and the
segments below everything that trains really skipped."""

import larq as lq
import numpy as np
import pytest

from bitat_tf import segments, training
from bitat_tf._compat import keras, tf

L = keras.layers


class Switched(L.Layer):
    """Doubles its input behind a `tf.cond` on a variable (as a BatchNorm's switch between batch and
    moving statistics is)."""

    def build(self, input_shape):
        self.on = tf.Variable(True, trainable=False)

    def call(self, x):
        return tf.cond(self.on, lambda: 2.0 * x, lambda: x)


def residual_model(regularized=False, switched=False):
    """stem conv -> 3 residual blocks of a binary conv, BatchNorm and a shortcut -> classifier; with
    `regularized`, an L2 penalty on every binary kernel (a loss of variables only) and on block 1's
    output (a loss inside a segment, below its cut); with `switched`, a `tf.cond` in block 0."""
    keras.utils.set_random_seed(1)
    x = inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(x)
    for i in range(3):
        y = lq.layers.QuantConv2D(4, 3, padding="same", use_bias=False, input_quantizer="ste_sign",
                                  kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                                  kernel_regularizer=keras.regularizers.L2(0.01) if regularized else None,
                                  activity_regularizer=keras.regularizers.L2(0.01) if regularized and i == 1
                                  else None,
                                  name=f"block{i}_conv")(x)
        y = L.BatchNormalization(name=f"block{i}_bn")(y)
        if switched and i == 0:
            y = Switched(name="switched")(y)
        x = L.Add(name=f"block{i}_add")([x, y])
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(3, name="head")(x))


def test_cuts_are_where_every_path_passes():
    model = residual_model()
    assert [c.name for c in segments.cut_layers(model)] == ["stem", "block0_add", "block1_add", "block2_add",
                                                           "pool", "head"]
    chosen = segments.Segments.of(model, [model.get_layer(f"block{i}_conv") for i in range(3)])
    assert [c.name for c in chosen.cuts] == ["stem", "block0_add", "block1_add"]
    chosen.detach()
    shared = L.Dense(3)
    x = keras.Input((3,))
    assert segments.cut_layers(keras.Model(x, shared(shared(x)))) == []  # a layer that runs twice


def _step_gradients(model, cut, trains, x, y, regularized):
    """Gradients of one loss (task + a variables-only term) by one backward pass or by segments."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    seg = segments.Segments.of(model, [model.get_layer(f"block{i}_conv") for i in range(3)])
    seg.set({v.ref() for v in trains})

    @tf.function
    def grads():
        with seg.recording() if cut else tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            direct = tf.add_n(model.losses) if regularized else tf.zeros([])
            direct += 0.1 * tf.reduce_sum(tf.square(model.get_layer("block1_conv").kernel))
            total = loss_fn(y, y_pred) + direct
        return tape.gradient(total, variables)

    try:
        return dict(zip([v.name for v in variables], grads()))
    finally:
        seg.detach()


@pytest.mark.parametrize("regularized,switched", [(False, False), (True, False), (False, True)])
def test_same_gradients_as_one_backward_pass(regularized, switched):
    """Also with a cond in a segment, which TensorFlow cannot differentiate inside the segment's own
    switch: that segment is differentiated outside it."""
    model = residual_model(regularized, switched)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(16, 8, 8, 3)), tf.float32)
    y = tf.constant(rng.integers(0, 3, 16))
    everything = model.trainable_variables
    whole = _step_gradients(model, False, everything, x, y, regularized)
    cut = _step_gradients(model, True, everything, x, y, regularized)
    assert whole.keys() == cut.keys()
    for name, g in whole.items():
        np.testing.assert_allclose(cut[name], g, rtol=1e-5, atol=1e-6, err_msg=name)
    # Only block 1 and what is above it train: the segments of the stem and block 0 are skipped (their
    # gradients zero but for the weight regularizer's, which reads no activation), the others' gradients
    # are those of the whole backward pass.
    above = [v for layer in model.layers[model.layers.index(model.get_layer("block1_conv")):]
             for v in layer.trainable_weights]
    partial = _step_gradients(model, True, above, x, y, regularized)
    kernel = model.get_layer("block0_conv").kernel
    skipped = ("stem",) if switched else ("stem", "block0")  # block 0, with a cond, always runs
    for name, g in whole.items():
        if name.startswith(skipped):
            direct = 0.02 * kernel.numpy() if regularized and name == kernel.name else 0.0
            np.testing.assert_allclose(partial[name], np.zeros_like(g) + direct, rtol=1e-6, err_msg=name)
            assert np.any(g - direct), name
        else:
            np.testing.assert_allclose(partial[name], g, rtol=1e-5, atol=1e-6, err_msg=name)


class CountingIdentity(L.Layer):
    """The identity, counting how often its gradient runs (a stateful op: never pruned)."""

    def build(self, input_shape):
        self.count = tf.Variable(0, trainable=False)

    def call(self, x):
        @tf.custom_gradient
        def identity(x):
            def grad(dy):
                with tf.control_dependencies([self.count.assign_add(1)]):
                    return tf.identity(dy)

            return tf.identity(x), grad

        return identity(x)


@pytest.mark.parametrize("cut", [False, True])
def test_skipped_segments_run_no_backward_op(cut):
    """A backward op below the frozen frontier runs in one backward pass (its result masked away) and
    not at all in a skipped segment."""
    keras.utils.set_random_seed(1)
    x = inputs = keras.Input((8, 8, 3))
    x = CountingIdentity(name="counter")(L.Conv2D(4, 3, padding="same", name="stem")(x))
    for i in range(2):
        x = L.Add(name=f"block{i}_add")([x, L.Conv2D(4, 3, padding="same", name=f"block{i}_conv")(L.ReLU()(x))])
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling2D()(x)))
    seg = segments.Segments.of(model, [model.get_layer(f"block{i}_conv") for i in range(2)])
    assert [c.name for c in seg.cuts] == ["counter", "block0_add"]
    x, count = tf.ones([2, 8, 8, 3]), model.get_layer("counter").count

    @tf.function
    def step():
        with seg.recording() if cut else tf.GradientTape() as tape:
            total = tf.reduce_sum(model(x, training=True))
        grads = tape.gradient(total, model.trainable_variables)
        return [g for g in grads if g is not None]

    seg.set({v.ref() for v in model.trainable_variables})  # the stem trains: every segment runs
    step()
    assert int(count.numpy()) == 1
    seg.set({v.ref() for v in model.get_layer("block1_conv").trainable_weights})
    step()
    assert int(count.numpy()) == (1 if cut else 2)


def test_a_progressive_run_skips_the_frozen_prefix(trained_cnn, digits_ds, monkeypatch):
    """Which segments' backward passes run in each phase of a run: none below the layer being trained."""
    import bitat_tf
    from bitat_tf import engine

    seen, fit = [], engine.Engine.fit

    def recorded_fit(self, learning_rate, steps, label, **kwargs):
        history = fit(self, learning_rate, steps, label, **kwargs)
        seen.append((label, [c.name for c in self._segments.cuts], self._segments.runs.numpy().tolist()))
        return history

    monkeypatch.setattr(engine.Engine, "fit", recorded_fit)
    config = bitat_tf.BinarizeConfig.paper(steps_per_layer=1, finetune_steps=1, final_finetune_steps=1,
                                           max_groups=4, capture_rows=256, capture_batches=1,
                                           bn_recalibration_batches=2)
    bitat_tf.binarize(trained_cnn, digits_ds[0].take(2), validation_data=digits_ds[1].take(1), config=config,
                      verbose=0)
    # The input of each binarized convolution; a fine-tune above a convolution trains its BatchNorm, in
    # the convolution's segment.
    cuts = ["stem_relu", "block1_a_relu", "block1_b_relu"]
    assert seen == [("block1_a quantize", cuts, [False, True, True]),
                    ("block1_a fine-tune above", cuts, [False, True, True]),
                    ("block1_b quantize", cuts, [False, False, True]),
                    ("block1_b fine-tune above", cuts, [False, False, True]),
                    ("block2_a quantize", cuts, [False, False, False]),
                    ("block2_a fine-tune above", cuts, [False, False, False]),
                    ("final fine-tune", cuts, [True, True, True])], seen
