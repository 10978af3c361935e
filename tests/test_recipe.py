"""The levers beyond the paper: distillation in every BiTAT stage, and the last phase after the pass."""

import larq
import numpy as np
import pytest

import bitat_tf
from bitat_tf import graph, progressive
from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError

CHEAP = dict(steps_per_layer=3, finetune_steps=2, max_groups=4, capture_rows=256, capture_batches=1,
             bn_recalibration_batches=2, learning_rate=3e-3)


def _kl(teacher_logits, student_logits):
    p = tf.nn.softmax(teacher_logits).numpy().astype(np.float64)
    log_p = np.log(p)
    log_q = tf.nn.log_softmax(student_logits).numpy().astype(np.float64)
    return float(np.mean(np.sum(p * (log_p - log_q), axis=-1)))


def test_distillation_in_a_stage_matches_the_closed_form(trained_cnn, digits):
    """total = (1 - w) * crossentropy + w * KL(teacher || student), the teacher a frozen copy."""
    x, y = digits[0][:64], digits[1][:64]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    config = bitat_tf.BinarizeConfig.paper(distill_weight=0.3, **CHEAP)
    plan = graph.make_plan(trained_cnn, config)
    run = progressive.ProgressiveRun(trained_cnn, plan, ds, None, config, 1, True, 0)
    with run.session():
        graph.set_binary(run.working.get_layer("block1_a"), True)  # the student now differs from the teacher
        trainer = run._trainer
        trainer.set_trainable([])  # measure the loss, change nothing
        student = run.working(x, training=False).numpy()
        teacher = trained_cnn(x, training=False).numpy()
        task = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, student))
        step = trainer.make_train_function()
        logs = {k: float(v) for k, v in step(iter(ds)).items()}
        trainer.reset_metrics()
        trainer.set_distillation(False)  # the same batch, the task loss alone, in the same trace
        off = {k: float(v) for k, v in step(iter(ds)).items()}
        assert step.experimental_get_tracing_count() == 1
    kl = _kl(teacher, student)
    assert kl > 1e-3  # a real difference to distil
    assert logs["distill_loss"] == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert logs["total_loss"] == pytest.approx(0.7 * task + 0.3 * kl, rel=1e-4)
    assert off["distill_loss"] == 0.0
    assert off["total_loss"] == pytest.approx(task, rel=1e-5)


def test_the_pass_can_leave_distillation_to_the_last_phase(trained_cnn, digits_ds):
    train, test = digits_ds
    config = bitat_tf.BinarizeConfig.paper(distill_weight=0.5, pass_distillation=False, final_finetune_steps=2,
                                           **CHEAP)
    result = bitat_tf.binarize(trained_cnn, train.take(4), validation_data=test, config=config, verbose=0)
    for phase in ("quantize", "finetune"):
        history = result.history["block1_a"][phase]
        assert history["distill_loss"] == [0.0]
    assert min(result.history["final_fine_tune"]["distill_loss"]) > 0


def test_every_stage_distils_when_asked(trained_cnn, digits_ds):
    train, test = digits_ds
    config = bitat_tf.BinarizeConfig.paper(distill_weight=0.5, final_finetune_steps=2, **CHEAP)
    result = bitat_tf.binarize(trained_cnn, train.take(4), validation_data=test, config=config, verbose=0)
    assert "distill_loss" in result.history["block1_a"]["quantize"]
    assert "distill_loss" in result.history["block1_a"]["finetune"]
    assert "distill_loss" in result.history["final_fine_tune"]
    plain = bitat_tf.binarize(trained_cnn, train.take(4), validation_data=test,
                              config=bitat_tf.BinarizeConfig.paper(final_finetune_steps=2, **CHEAP), verbose=0)
    assert "distill_loss" not in plain.history["block1_a"]["quantize"]


def _latent_kernels_around_final_phase(model, data, config, monkeypatch):
    seen = {}
    original = progressive.ProgressiveRun.final_phase

    def spy(run):
        names = run.plan.binarized
        seen["before"] = {n: graph.kernel_of(run.working.get_layer(n)).numpy().copy() for n in names}
        seen["alpha_before"] = {n: graph.weight_quantizer(run.working.get_layer(n)).alpha.numpy().copy()
                                for n in names}
        original(run)
        seen["after"] = {n: graph.kernel_of(run.working.get_layer(n)).numpy().copy() for n in names}
        seen["alpha_after"] = {n: graph.weight_quantizer(run.working.get_layer(n)).alpha.numpy().copy()
                               for n in names}

    monkeypatch.setattr(progressive.ProgressiveRun, "final_phase", spy)
    result = bitat_tf.binarize(model, data, config=config, verbose=0)
    return seen, result


def test_final_finetune_keeps_frozen_binary_kernels_bit_identical(trained_cnn, digits_ds, monkeypatch):
    config = bitat_tf.BinarizeConfig.paper(final_finetune_steps=6, final_learning_rate=0.05, **CHEAP)
    seen, result = _latent_kernels_around_final_phase(trained_cnn, digits_ds[0].take(4), config, monkeypatch)
    for name, kernel in seen["before"].items():
        np.testing.assert_array_equal(seen["after"][name], kernel, err_msg=name)
    # ... while the scales (and BatchNorms, thresholds) did train
    assert any(not np.array_equal(seen["alpha_after"][n], a) for n, a in seen["alpha_before"].items())
    assert "final_fine_tune" in result.history


def test_end_to_end_final_phase_changes_binary_kernels(trained_cnn, digits_ds, monkeypatch):
    config = bitat_tf.BinarizeConfig.paper(final_finetune_steps=6, final_phase="end_to_end", final_learning_rate=0.05,
                                     **CHEAP)
    seen, result = _latent_kernels_around_final_phase(trained_cnn, digits_ds[0].take(4), config, monkeypatch)
    changed = [n for n, k in seen["before"].items() if not np.array_equal(np.sign(seen["after"][n]), np.sign(k))]
    assert changed == list(seen["before"])  # every binary layer's signs moved
    assert "final_end_to_end" in result.history


@pytest.mark.parametrize("variant", ["bitat", "sequential", "intra", "cross", "filterwise", "svd"])
def test_paper_variants_do_not_unfreeze(variant):
    config = bitat_tf.BinarizeConfig.paper(variant=variant)
    assert config.final_phase == "finetune" and config.distill_weight == 0.0
    assert config.final_finetune_epochs == 0.0 and config.final_finetune_steps is None  # no last phase at all


def test_the_default_is_the_warm_start_recipe():
    default = bitat_tf.BinarizeConfig()
    assert (default.variant, default.distill_weight, default.final_phase, default.final_finetune_epochs,
            default.final_pass_multiple) == ("bitat", 1.0, "end_to_end", "pass", 7.0)
    # the whole budget is that of the earlier default (half an epoch a layer, a quarter above, a pass after)
    assert (default.epochs_per_layer + default.finetune_epochs) * (1 + default.final_pass_multiple) == 1.5
    assert bitat_tf.BinarizeConfig.from_config(default.get_config()) == default
    assert bitat_tf.BinarizeConfig.paper(distill_weight=0.5).distill_weight == 0.5  # overrides win


@pytest.mark.parametrize("multiple, final_steps", [(None, 7 * (3 * 3 + 3 * 2)), (1.0, 3 * 3 + 3 * 2), (0.4, 6)])
def test_the_default_last_phase_is_a_multiple_of_the_pass(trained_cnn, digits_ds, multiple, final_steps):
    """On a repeated dataset too: "pass" needs no epoch length when the pass's budgets are steps."""
    config = bitat_tf.BinarizeConfig(**CHEAP, **({} if multiple is None else {"final_pass_multiple": multiple}))
    result = bitat_tf.binarize(trained_cnn, digits_ds[0].repeat(), config=config, verbose=0)
    phases = result.report.timing["phases"]
    assert phases["quantize"]["steps"] == 3 * 3 and phases["fine-tune above"]["steps"] == 3 * 2
    assert phases["final end-to-end"]["steps"] == final_steps
    assert {"final_end_to_end"} <= set(result.history)
    for name in ("block1_a", "block1_b", "block2_a"):  # still binary after the latent weights trained
        with larq.context.quantized_scope(True):
            effective = result.model.get_layer(name).kernel.numpy()
        assert np.unique(np.abs(effective.reshape(-1, effective.shape[-1])), axis=0).shape[0] == 1, name


@pytest.mark.parametrize("kwargs,match", [
    (dict(final_phase="all"), "final_phase must be one of"),
    (dict(distill_weight=1.5), "distill_weight must be a number in \\[0, 1\\]"),
    (dict(pass_distillation="no"), "pass_distillation must be True or False"),
    (dict(final_finetune_steps=-1), "final_finetune_steps"),
    (dict(final_learning_rate=0.0), "final_learning_rate"),
    (dict(warmup_learning_rate=1.5), "warmup_learning_rate must be None or a number in \\(0, 1\\)"),
    (dict(final_finetune_epochs="all"), 'final_finetune_epochs must be a finite number of epochs >= 0 or "pass"'),
    (dict(final_pass_multiple=-1), "final_pass_multiple must be a finite number >= 0"),
])
def test_lever_values_out_of_range(kwargs, match):
    with pytest.raises(bitat_tf.ConfigError, match=match):
        bitat_tf.BinarizeConfig.paper(**kwargs)


def test_activation_warmup_binarizes_every_input_first_and_keeps_its_thresholds(trained_cnn, digits_ds,
                                                                                 monkeypatch):
    seen = []
    original = progressive.ProgressiveRun.quantize_stage

    def spy(run, names, block_index):
        layers = [run.working.get_layer(n) for n in run.plan.binarized]
        seen.append({"inputs": [l.input_quantizer.active for l in layers],
                     "weights": [graph.weight_quantizer(l).active for l in layers]})
        return original(run, names, block_index)

    monkeypatch.setattr(progressive.ProgressiveRun, "quantize_stage", spy)
    inits = []
    monkeypatch.setattr(progressive.capture, "init_threshold",
                        lambda layer, captured, method: inits.append(layer.name) or
                        layer.input_quantizer.beta.assign(np.mean(captured.raw, axis=tuple(range(
                            captured.raw.ndim - 1)))))
    config = bitat_tf.BinarizeConfig.paper(activation_warmup_steps=4, **CHEAP)
    result = bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), config=config, verbose=0)
    assert seen[0]["inputs"] == [True, True, True] and seen[0]["weights"] == [False, False, False]
    assert seen[1]["weights"] == [True, False, False]
    assert inits == ["block1_a", "block1_b", "block2_a"]  # once each, in the warm-up, never again
    assert "activation_warmup" in result.history


@pytest.mark.parametrize("warmup_learning_rate, expected", [(None, 3e-3), (7e-4, 7e-4)])
def test_activation_warmup_trains_at_its_own_learning_rate(trained_cnn, digits_ds, monkeypatch,
                                                           warmup_learning_rate, expected):
    rates = {}
    original = progressive.ProgressiveRun.fit

    def spy(run, learning_rate, steps, label, **kwargs):
        rates.setdefault(label, learning_rate)
        return original(run, learning_rate, steps, label, **kwargs)

    monkeypatch.setattr(progressive.ProgressiveRun, "fit", spy)
    config = bitat_tf.BinarizeConfig.paper(**CHEAP, activation_warmup_steps=2,
                                           warmup_learning_rate=warmup_learning_rate)
    bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), config=config, verbose=0)
    assert rates["activation warm-up"] == pytest.approx(expected)
    assert rates["block1_a quantize"] == pytest.approx(3e-3)


def test_without_warmup_each_input_is_switched_on_with_its_layer(trained_cnn, digits_ds, monkeypatch):
    seen = []
    original = progressive.ProgressiveRun.quantize_stage

    def spy(run, names, block_index):
        seen.append([run.working.get_layer(n).input_quantizer.active for n in run.plan.binarized])
        return original(run, names, block_index)

    monkeypatch.setattr(progressive.ProgressiveRun, "quantize_stage", spy)
    bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), config=bitat_tf.BinarizeConfig.paper(**CHEAP), verbose=0)
    assert seen[0] == [False, False, False] and seen[1] == [True, False, False]


def test_block_stages_quantize_a_block_together_and_freeze_all_of_it(trained_cnn, digits_ds, monkeypatch):
    """stage="block": one quantize phase trains every layer of the block for the block's summed budget;
    afterwards none of the block's kernels moves again (they are frozen together)."""
    from bitat_tf import engine

    phases, kernels_after = [], {}
    fit = engine.Engine.fit

    def spy(run, learning_rate, steps, label, **kwargs):
        names = {l.name for l in kwargs["layers"]}
        phases.append((label, steps, names))
        history = fit(run, learning_rate, steps, label, **kwargs)
        if label.endswith("quantize"):
            kernels_after[label] = {n: graph.kernel_of(run.working.get_layer(n)).numpy()
                                    for n in ("block1_a", "block1_b")}
        return history

    monkeypatch.setattr(engine.Engine, "fit", spy)
    config = bitat_tf.BinarizeConfig.paper(variant="sequential", stage="block", blocks=[["block1_a", "block1_b"],
                                     ["block2_a"]], final_finetune_steps=0, **CHEAP)
    result = bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), config=config, verbose=0)
    quantize = [(label, steps, names) for label, steps, names in phases if label.endswith("quantize")]
    assert [label for label, _, _ in quantize] == ["block1_a..block1_b quantize", "block2_a quantize"]
    assert quantize[0][1] == 2 * CHEAP["steps_per_layer"] and quantize[1][1] == CHEAP["steps_per_layer"]
    assert {"block1_a", "block1_b", "block1_a_bn", "block1_b_bn"} <= quantize[0][2]
    for name in ("block1_a", "block1_b"):  # frozen together: the second stage left them bit-identical
        np.testing.assert_array_equal(kernels_after["block2_a quantize"][name],
                                      kernels_after["block1_a..block1_b quantize"][name])
        np.testing.assert_array_equal(graph.kernel_of(result.model.get_layer(name)).numpy(),
                                      kernels_after["block1_a..block1_b quantize"][name])
    assert [r.val_accuracy is not None for r in result.report.layers if r.binarized] == [True] * 3


def test_block_stages_refuse_the_per_layer_penalty():
    with pytest.raises(ConfigError, match="stage='block' trains several layers at once"):
        bitat_tf.BinarizeConfig.paper(stage="block")
    assert bitat_tf.BinarizeConfig.paper(stage="block", quant_weight=0).stage == "block"


@pytest.mark.parametrize("trains", ["stage", "network"])
def test_pass_trains_network_keeps_training_the_binarized_layers_below(trained_cnn, digits_ds, monkeypatch, trains):
    """pass_trains="network" (progressive STE): the first binarized layer's signs keep moving in the later
    stages; with "stage" (the paper) it is frozen once its stage ends, bit for bit."""
    seen = []
    original = progressive.ProgressiveRun.run_stage

    def spy(run, i, *args, **kwargs):
        original(run, i, *args, **kwargs)
        seen.append(graph.kernel_of(run.working.get_layer(run.order[0][1])).numpy().copy())

    monkeypatch.setattr(progressive.ProgressiveRun, "run_stage", spy)
    config = bitat_tf.BinarizeConfig.paper(variant="sequential", pass_trains=trains, **{**CHEAP, "learning_rate": 0.05})
    bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), config=config, verbose=0)
    assert len(seen) == 3
    after_own_stage, at_the_end = seen[0], seen[-1]
    if trains == "stage":
        np.testing.assert_array_equal(at_the_end, after_own_stage)
    else:
        assert np.mean(np.sign(at_the_end) != np.sign(after_own_stage)) > 0.01


def test_pass_trains_takes_stage_or_network():
    with pytest.raises(bitat_tf.ConfigError, match="pass_trains must be one of"):
        bitat_tf.BinarizeConfig(pass_trains="all")
