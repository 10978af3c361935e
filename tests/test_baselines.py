"""The end-to-end baselines (ReActNet two-step, plain straight-through) on sklearn's digits."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import graph
from bitat_tf._compat import keras, larq, tf
from bitat_tf.training import BitatTrainer


def _binary_kernels(model, names):
    for name in names:
        layer = model.get_layer(name)
        with larq.context.quantized_scope(True):
            effective = layer.kernel.numpy()
        values = np.unique(np.abs(effective.reshape(-1, effective.shape[-1])), axis=0)
        assert values.shape[0] == 1, name  # one magnitude per output channel: +-alpha_c (or +-1)


BINARIZED = ("block1_a", "block1_b", "block2_a")


@pytest.mark.parametrize("method", ["reactnet", "ste"])
def test_baseline_returns_a_binary_model_that_learns(trained_cnn, digits_ds, method):
    train, test = digits_ds
    config = bitat_tf.EndToEndConfig(method=method, steps=120, learning_rate=3e-3)
    result = bitat_tf.binarize(trained_cnn, train, validation_data=test, config=config, verbose=0)
    for name in BINARIZED:
        layer = result.model.get_layer(name)
        assert layer.input_quantizer.active and graph.weight_quantizer(layer).active
    _binary_kernels(result.model, BINARIZED)
    assert result.report.binary_accuracy > 0.5  # chance is 0.1
    assert type(result.model.get_layer("stem")) is keras.layers.Conv2D
    phases = {"reactnet": {"activations", "weights"}, "ste": {"end_to_end"}}[method]
    assert set(result.history) == phases
    if method == "reactnet":
        assert "distill_loss" in result.history["activations"]


def test_reactnet_first_step_keeps_weights_real(trained_cnn, digits_ds, monkeypatch):
    """Step 1 trains with binary inputs and real weights; only step 2 binarizes the weights."""
    from bitat_tf import baselines

    seen = []
    original = baselines.EndToEndRun.train_phase

    def spy(self, label, steps, **kwargs):
        layer = self.working.get_layer("block1_a")
        seen.append((layer.input_quantizer.active, graph.weight_quantizer(layer).active, layer.pad_values))
        return original(self, label, steps, **kwargs)

    monkeypatch.setattr(baselines.EndToEndRun, "train_phase", spy)
    train, _ = digits_ds
    bitat_tf.binarize(trained_cnn, train, config=bitat_tf.EndToEndConfig(method="reactnet", steps=4), verbose=0)
    assert seen == [(True, False, 1.0), (True, True, 1.0)]


def test_plain_larq_ste_baseline_uses_ste_sign(trained_cnn, digits_ds):
    train, test = digits_ds
    config = bitat_tf.EndToEndConfig(method="ste", quantizers="larq_ste", steps=4)
    # Both runs measure the same images: without validation_data a run measures the first 8 batches of the
    # training data, which reshuffles on every iteration, so which images those are depends on what ran
    # before in the process.
    result = bitat_tf.binarize(trained_cnn, train, validation_data=test, config=config, verbose=0)
    layer = result.model.get_layer("block1_a")
    assert isinstance(layer.input_quantizer, larq.quantizers.SteSign) and layer.pad_values == 1.0
    # the full-precision figure is the user's model, not the (binary from the start) working copy
    reference = bitat_tf.binarize(trained_cnn, train, validation_data=test,
                                  config=bitat_tf.EndToEndConfig(method="ste", steps=1), verbose=0)
    assert result.report.fp_accuracy == pytest.approx(reference.report.fp_accuracy)
    with larq.context.quantized_scope(True):
        assert set(np.unique(layer.kernel.numpy())) == {-1.0, 1.0}


def test_distillation_is_kl_to_the_teacher():
    """KL(teacher || student) is zero for equal outputs and matches the closed form otherwise."""
    inputs = keras.Input((3,))
    student = keras.Model(inputs, keras.layers.Dense(4, name="d")(inputs))
    trainer = BitatTrainer(student, teacher=student, distill_weight=1.0)
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 3)), tf.float32)
    assert float(trainer.distillation(x, None, student(x))) == pytest.approx(0.0, abs=1e-6)
    logits = tf.constant(np.random.default_rng(1).normal(size=(5, 4)), tf.float32)
    p, q = tf.nn.softmax(student(x)).numpy(), tf.nn.softmax(logits).numpy()
    expected = np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
    assert float(trainer.distillation(x, None, logits)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="xnor"), "method must be one of"),
    (dict(epochs=0), "training budget is zero"),
    (dict(distill_weight=1.5), "distill_weight must be a number in"),
    (dict(distill_target="labels"), "distill_target must be one of"),
    (dict(method="reactnet", quantizers="larq_ste"), "method='ste' only"),
    (dict(learning_rate=0), "learning_rate must be"),
    (dict(keep_full_precision=["a"], force_binarize=["a"]), "appear in both"),
])
def test_bad_baseline_configs_are_refused(kwargs, match):
    with pytest.raises(bitat_tf.ConfigError, match=match):
        bitat_tf.EndToEndConfig(**kwargs)


def test_baseline_config_round_trips():
    config = bitat_tf.EndToEndConfig(method="ste", steps=10, keep_full_precision=["block1_a"])
    assert bitat_tf.EndToEndConfig(**config.get_config()).get_config() == config.get_config()
    assert config.distill_weight == 0.0 and bitat_tf.EndToEndConfig().distill_weight == 1.0
