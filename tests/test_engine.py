"""The engine: one trace per run, the padded penalty equals the per-stage reference, timing adds up."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import capture, graph, training, transforms
from bitat_tf._compat import keras, tf
from conftest import make_cnn

CHEAP = dict(steps_per_layer=3, finetune_steps=2, max_groups=4, capture_rows=256, capture_batches=1,
             bn_recalibration_batches=2, learning_rate=3e-3)


@pytest.mark.parametrize("normalization", ["recalibrated", "batch"])
def test_no_stage_after_the_first_traces_anything(trained_cnn, digits_ds, monkeypatch, normalization):
    """The train step is traced once, in the first stage, however many stages follow; so is the forward
    pass of evaluations, captures and recalibration, and Keras' test step never is. (Keras creates its
    metric variables inside the first trace, which makes TensorFlow trace again; the engine builds them
    before.) The step switches BatchNorms between batch and moving statistics only where a phase can
    freeze them."""
    from bitat_tf import engine

    phases, traces, norm_conds = [], [], []
    train_step, test_step, fit = training.BitatTrainer.train_step, training.BitatTrainer.test_step, engine.Engine.fit

    def counted_fit(self, learning_rate, steps, label, **kwargs):
        phases.append(label)
        return fit(self, learning_rate, steps, label, **kwargs)

    def counted_train(self, data):
        traces.append(("train", len(phases)))  # Python runs only while TensorFlow traces
        logs = train_step(self, data)
        norms = [l.name for l in self.inner.layers if isinstance(l, keras.layers.BatchNormalization)]
        ops = tf.compat.v1.get_default_graph().get_operations()
        norm_conds.append(sum(op.type in ("If", "StatelessIf") and any(f"/{n}/" in op.name for n in norms)
                              for op in ops))
        return logs

    def counted_test(self, data):
        traces.append(("test", len(phases)))
        return test_step(self, data)

    monkeypatch.setattr(engine.Engine, "fit", counted_fit)
    monkeypatch.setattr(training.BitatTrainer, "train_step", counted_train)
    monkeypatch.setattr(training.BitatTrainer, "test_step", counted_test)
    forwards = []
    forward_with_inputs = engine.forward.forward_with_inputs
    monkeypatch.setattr(engine.forward, "forward_with_inputs",
                        lambda *a: forwards.append(forward_with_inputs(*a)) or forwards[-1])
    config = bitat_tf.BinarizeConfig.paper(final_finetune_steps=2, pass_normalization=normalization, **CHEAP)
    bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), validation_data=digits_ds[1], config=config, verbose=0)
    assert [f.experimental_get_tracing_count() for f in forwards] == [1]
    assert len(phases) == 7  # three quantize stages, three fine-tunes above, a final phase
    assert [t for t in traces if t[0] == "train"] == [("train", 1)]
    assert not [t for t in traces if t[0] == "test"], traces  # evaluations run the compiled forward
    # Frozen BatchNorms normalise with their moving statistics: a switch (a tf.cond) per BatchNorm in the
    # step. With batch statistics every step trains every BatchNorm: none.
    assert norm_conds[0] == 0 if normalization == "batch" else norm_conds[0] >= 3, norm_conds


@pytest.mark.parametrize("every, final, measured", [
    ("layer", 0, [True, True, True]), ("block", 0, [False, True, True]), ("end", 0, [False, False, False]),
    ("end", 2, [False, False, True]),  # a last phase follows: the end of the pass is measured once
])
def test_accuracy_is_measured_where_evaluate_every_says(trained_cnn, digits_ds, every, final, measured):
    """make_cnn's blocks: block1 = (block1_a, block1_b), block2 = (block2_a,)."""
    config = bitat_tf.BinarizeConfig.paper(evaluate_every=every, final_finetune_steps=final, **CHEAP)
    result = bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), validation_data=digits_ds[1], config=config,
                               verbose=0)
    rows = [r for r in result.report.layers if r.binarized]
    assert [r.name for r in rows] == ["block1_a", "block1_b", "block2_a"]
    assert [r.val_accuracy is not None for r in rows] == measured
    assert result.report.binary_accuracy is not None


def test_run_penalty_equals_the_stage_penalty_of_the_block(trained_cnn):
    plan = graph.make_plan(trained_cnn, bitat_tf.BinarizeConfig.paper())
    working = graph.to_larq(trained_cnn, plan)
    layers = [working.get_layer(n) for n in ("block1_a", "block1_b", "block2_a")]
    rng = np.random.default_rng(0)
    state = transforms.BlockState()
    for i, layer in enumerate(layers[:2]):
        graph.weight_quantizer(layer).alpha.assign(rng.uniform(0.05, 0.2, layer.filters).astype("float32"))
        d_in = int(np.prod(graph.kernel_of(layer).shape[:-1]))
        p = transforms.averaging_matrix(rng.integers(0, 4, d_in))
        s, u = transforms.pca(rng.normal(size=(64, p.shape[0])).astype("float32"))
        state.expand(layer.name, p, s, u, layer.filters)
        if i == 0:  # the first member is frozen: its error is a constant row block
            w = graph.kernel_of(layer).numpy().reshape(d_in, -1)
            state.freeze(layer.name, p @ transforms.quantization_error(w, graph.weight_quantizer(layer).alpha))
    state.v += rng.normal(scale=0.01, size=state.v.shape).astype("float32")  # off-diagonal blocks trained
    k_max, r_max = transforms.run_penalty_sizes(layers, [[l.name for l in layers]], max_groups=4,
                                                reduction="kmeans")
    run = transforms.RunPenalty(layers, k_max=k_max, r_max=r_max + 3)  # slack: padding must not count
    run.load(state, index=1)
    current = layers[1]
    reference = transforms.StagePenalty(state).terms(
        tf.reshape(graph.kernel_of(current), (-1, current.filters)), graph.weight_quantizer(current).alpha)
    got = run.terms()
    for name in ("quant", "l1", "reg"):
        np.testing.assert_allclose(float(got[name]), float(reference[name]), rtol=1e-5, atol=1e-7, err_msg=name)
    # Traced, the penalty's gradient reaches the current layer's kernel and alpha as the block's own penalty
    # sends it, and no other layer's.
    sources = [v for layer in layers for v in (graph.kernel_of(layer), graph.weight_quantizer(layer).alpha)]

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            total = tf.add_n(list(run.terms().values()))
        return tape.gradient(total, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    with tf.GradientTape() as tape:
        terms = transforms.StagePenalty(state).terms(
            tf.reshape(graph.kernel_of(current), (-1, current.filters)), graph.weight_quantizer(current).alpha)
        total = tf.add_n(list(terms.values()))
    expected = tape.gradient(total, sources[2:4])
    got = gradients()
    for g, e in zip(got[2:4], expected):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-7)
    assert float(tf.reduce_max(tf.abs(got[2]))) > 0
    assert all(not np.any(g.numpy()) for g in got[:2] + got[4:])
    log_s, v = state.log_s.copy(), state.v.copy()
    run.write_back(state)
    np.testing.assert_array_equal(state.log_s, log_s)
    np.testing.assert_array_equal(state.v, v)
    expected_error = transforms.StagePenalty(state).current_error(
        tf.reshape(graph.kernel_of(current), (-1, current.filters)), graph.weight_quantizer(current).alpha)
    np.testing.assert_allclose(run.current_error(), expected_error.numpy()[:, :current.filters], rtol=1e-6)


def test_timing_fields_exist_and_add_up(trained_cnn, digits_ds):
    config = bitat_tf.BinarizeConfig.paper(**CHEAP)
    result = bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), config=config, verbose=0)
    timing = result.report.to_dict()["timing"]
    phases = timing["phases"]
    assert phases["quantize"]["steps"] == 3 * 3 and phases["fine-tune above"]["steps"] == 3 * 2
    for row in phases.values():
        assert row["seconds_per_step"] > 0 and row["training_seconds"] <= row["seconds"] + 1e-9
    assert timing["training_seconds"] == pytest.approx(sum(r["training_seconds"] for r in phases.values()))
    assert timing["overhead_seconds"] == pytest.approx(timing["wall_seconds"] - timing["training_seconds"])
    assert 0 < timing["overhead_seconds"] < timing["wall_seconds"]
    # the first phase traces the train step: its time beyond its steps is part of the overhead
    assert 0 < timing["first_phase_extra_seconds"] <= timing["overhead_seconds"]
    # outside the steps: the overhead less the steps slower than their phase's median
    assert timing["first_phase_extra_seconds"] - 0.05 < timing["outside_steps_seconds"] < timing["wall_seconds"]


def test_the_returned_model_carries_no_run_state(trained_cnn, digits_ds):
    result = bitat_tf.binarize(trained_cnn, digits_ds[0].take(2), config=bitat_tf.BinarizeConfig.paper(**CHEAP),
                               verbose=0)
    for layer in result.model.layers:
        for q in (getattr(layer, "input_quantizer", None), getattr(layer, "kernel_quantizer", None)):
            assert getattr(q, "_switch", None) is None
        assert not isinstance(getattr(layer, "pad_values", 0.0), tf.Variable)
        if isinstance(layer, keras.layers.BatchNormalization):
            assert isinstance(layer.momentum, float) and "_get_training_value" not in vars(layer)
    block = result.model.get_layer("block1_b")
    assert block.pad_values == 1.0 and block._is_native_padding is False
    assert len(result.model.get_weights()) == len(graph.to_larq(trained_cnn, graph.make_plan(
        trained_cnn, bitat_tf.BinarizeConfig.paper())).get_weights())  # nothing extra is saved


def test_a_failing_run_also_restores_the_model(trained_cnn, digits, monkeypatch):
    from bitat_tf import progressive

    seen = {}
    original = progressive.ProgressiveRun.finetune_above

    def fails(run, name):
        seen["working"] = run.working
        raise KeyboardInterrupt

    monkeypatch.setattr(progressive.ProgressiveRun, "finetune_above", fails)
    x, y = digits[0][:64], digits[1][:64]
    with pytest.raises(KeyboardInterrupt):
        bitat_tf.binarize(trained_cnn, tf.data.Dataset.from_tensor_slices((x, y)).batch(32),
                          config=bitat_tf.BinarizeConfig.paper(**CHEAP), verbose=0)
    assert original is not None
    assert all(getattr(l.input_quantizer, "_switch", 0) is None for l in seen["working"].layers
               if hasattr(l, "input_quantizer"))


def test_gated_gradients_train_exactly_as_full_gradients(trained_cnn, digits):
    """Skipping the gradients the mask discards changes nothing: after optimizer steps of a quantize phase
    (middle conv binary and training) and a fine-tune-above phase, the weights equal those of the same
    steps with every gradient computed (all gates on), in the same traced step."""
    from bitat_tf import engine, gating

    plan = graph.make_plan(trained_cnn, bitat_tf.BinarizeConfig.paper())
    working = graph.to_larq(trained_cnn, plan)
    middle = working.get_layer("block1_b")
    graph.set_binary(working.get_layer("block1_a"), True)
    graph.set_binary(middle, True)
    controls = engine.controls.Controls(working)
    try:
        trainer = training.BitatTrainer(working)
        # Plain SGD: Adam divides each update by the root of its running squared gradient, which turns the
        # round-off of a near-zero gradient (two kernel paths, threads summing in another order) into a
        # full-size step, so its weights differed by up to 2e-4 in 1 of 6 runs; SGD's updates are the
        # gradients themselves, which is the identity under test.
        trainer.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = digits[0][:64], digits[1][:64]
        index = working.layers.index(middle)
        phases = [[v for v in middle.trainable_weights],  # quantize the middle conv
                  [v for l in working.layers[index + 1:] for v in l.trainable_weights]]  # fine-tune above
        start = [v.numpy() for v in trainer.variables]
        before = [v.numpy() for v in working.weights]
        results, skipped = {}, 0
        for gated in (True, False):
            for v, value in zip(trainer.variables, start):
                v.assign(value)
            for v in trainer.optimizer.variables:
                v.assign(tf.zeros_like(v))  # fresh Adam moments and step count
            for chosen in phases:
                trainer.set_trainable(chosen)
                refs = {getattr(v, "latent_variable", v).ref() for v in chosen}
                everything = {getattr(v, "latent_variable", v).ref() for v in trainer.trainable_variables}
                controls.gates.set(refs if gated else everything)
                skipped += sum(not g.need_dw.numpy() or not g.need_dx.numpy() for g in controls.gates.gates.values())
                for _ in range(3):
                    trainer.train_on_batch(x, y)
            results[gated] = [v.numpy() for v in working.weights]
        assert skipped >= 6  # the gated phases really skipped gradients (2 below + 1 above, each phase)
        for a, b in zip(results[True], results[False]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert sum(not np.array_equal(a, b) for a, b in zip(results[True], before)) >= 6  # it trained
    finally:
        controls.detach()


def test_gates_follow_the_trainable_mask(trained_cnn):
    from bitat_tf import gating

    plan = graph.make_plan(trained_cnn, bitat_tf.BinarizeConfig.paper())
    working = graph.to_larq(trained_cnn, plan)
    gates = gating.Gates(working)
    convs = [l for l in working.layers if gating.gateable(l)]
    assert len(convs) >= 3
    try:
        middle = convs[1]
        # Quantize step of the middle conv: its kernel trains, its threshold too; nothing below does.
        gates.set({v.ref() for v in (graph.kernel_of(middle), middle.input_quantizer.beta)})
        state = [(bool(gates.gates[id(c)].need_dx.numpy()), bool(gates.gates[id(c)].need_dw.numpy())) for c in convs]
        assert state[0] == (False, False)  # below: nothing
        assert state[1] == (True, True)  # its threshold needs its input gradient, its kernel its own
        assert all(s == (True, False) for s in state[2:])  # above: pass gradients down, no kernel gradient
        # Fine-tune above the middle conv: no gradient reaches it or below.
        above = [v for l in working.layers[working.layers.index(middle) + 1:] for v in l.trainable_weights]
        gates.set({getattr(v, "latent_variable", v).ref() for v in above})
        state = [(bool(gates.gates[id(c)].need_dx.numpy()), bool(gates.gates[id(c)].need_dw.numpy())) for c in convs]
        assert state[:2] == [(False, False)] * 2
        assert state[2][1] and all(s == (True, True) for s in state[3:])
    finally:
        gates.detach()
    assert "convolution_op" not in vars(convs[0])  # the plain method again


@pytest.mark.parametrize("steps, total", [(12, 3), (8, 3), (3, 2)])
def test_batchnorm_statistics_average_over_the_last_steps_then_extra_batches(trained_cnn, digits, steps, total):
    """`fit(recalibrate_after=...)`: the moving mean is the plain average of the batch means over the phase's
    last steps (at most `bn_recalibration_batches`, within its last quarter), continued over extra forward
    passes for the batches the window lacks. Learning rate 0, so the weights (and each batch's statistics)
    stay those of the model."""
    from bitat_tf.baselines import EndToEndConfig, EndToEndRun

    x, y = digits[0][:32 * 16], digits[1][:32 * 16]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)  # fixed order: batch i is x[32 i: 32 (i + 1)]
    config = EndToEndConfig(method="ste", steps=steps, bn_recalibration_batches=total)
    plan = graph.make_plan(trained_cnn, config)
    run = EndToEndRun(trained_cnn, plan, data, None, config, 16, True, 0)
    with run.session():
        run.fit(0.0, steps, "phase", layers=run.working.layers, recalibrate_after=-1)
        averaged = run.working.get_layer("stem_bn").moving_mean.numpy()
    stem = trained_cnn.get_layer("stem")
    means = [tf.reduce_mean(stem(x[32 * i: 32 * (i + 1)]), axis=(0, 1, 2)).numpy() for i in range(16)]
    window = {12: 3, 8: 2, 3: 0}[steps]  # min(total, steps // 4)
    # the train stream's last `window` batches, then the plain stream's first `total - window` (one pass each)
    used = means[steps - window: steps] + means[:total - window]
    np.testing.assert_allclose(averaged, np.mean(used, axis=0), rtol=1e-4, atol=1e-5)
    assert run.batches_drawn == {"train": steps, "plain": total - window}


def test_forward_passes_concatenate_batches_within_the_memory_bound(trained_cnn, digits):
    """Recalibration and capture read as many batches in one forward pass as `capture_memory_mb` allows;
    the moving mean is the mean of the batches' means however they are grouped (a pass weighs its batches),
    and the compiled forward is traced once for every pass size."""
    from bitat_tf.baselines import EndToEndConfig, EndToEndRun

    x, y = digits[0][:32 * 8], digits[1][:32 * 8]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    stem = trained_cnn.get_layer("stem")
    expected = np.mean([tf.reduce_mean(stem(x[32 * i: 32 * (i + 1)]), axis=(0, 1, 2)).numpy()
                        for i in range(5)], axis=0)
    for memory_mb, passes in ((64, [5]), (None, [2, 2, 1])):
        config = EndToEndConfig(method="ste", steps=1, bn_recalibration_batches=5, capture_memory_mb=memory_mb or 1)
        run = EndToEndRun(trained_cnn, graph.make_plan(trained_cnn, config), data, None, config, 8, True, 0)
        with run.session():
            if memory_mb is None:  # a bound of 2.5 batches: passes of 2, 2 and 1, each weighing its batches
                run.config.capture_memory_mb = 2.5 * 32 * run._pass_bytes_per_image / 2**20
            sizes = [len(batches) for _, batches in run.passes(5)]
            run.batches_drawn["plain"], run._streams = 0, {}  # read the same five batches again
            run.recalibrate(-1)
            np.testing.assert_allclose(run.working.get_layer("stem_bn").moving_mean.numpy(), expected,
                                       rtol=1e-4, atol=1e-5)
            run.capture(run.working.get_layer(run.plan.binarized[0]))
            assert sizes == passes
            assert run._forward.experimental_get_tracing_count() == 1


def test_a_capture_from_a_deferred_recalibration_equals_one_after_it(trained_cnn, digits):
    """A capture with a recalibration pending takes its inputs from the first `capture_batches` batches of
    the recalibration's passes. With no batches averaged before (done=0) those passes normalise with exactly
    the statistics the moving ones become, so an inference-mode capture of the same batches afterwards sees
    the same inputs. When the passes read fewer batches than a capture needs, it reads its own."""
    from bitat_tf import progressive

    x, y = digits[0][:32 * 8], digits[1][:32 * 8]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    # 1,024 rows of X need 64 images at block1_b's 4 x 4 positions: both capture batches
    config = bitat_tf.BinarizeConfig.paper(**dict(CHEAP, capture_batches=2, bn_recalibration_batches=4,
                                                  capture_rows=1024))
    plan = graph.make_plan(trained_cnn, config)
    run = progressive.ProgressiveRun(trained_cnn, plan, data, None, config, 8, True, 0)
    with run.session(run.penalty):
        first, second = (run.working.get_layer(n) for n in plan.binarized[:2])
        capture.init_threshold(first, run.capture(first), "mean")  # else its binary input is constant
        graph.set_binary(first, True)  # changes the statistics of every BatchNorm above it
        run.batches_drawn["plain"], run._streams = 0, {}
        run.pending_recalibration = (plan[first.name].index, 0)
        from_pass = run.capture(second)
        assert run.pending_recalibration is None and run.batches_drawn["plain"] == 4  # one read, for both
        run.batches_drawn["plain"], run._streams = 0, {}  # the same batches again
        after = run.capture(second)
        assert from_pass.n_images == after.n_images == 64
        np.testing.assert_allclose(from_pass.raw, after.raw, rtol=1e-3, atol=1e-4)
        assert np.abs(after.raw - run.capture(second).raw).max() > 0.1  # the next batches differ

        run.pending_recalibration = (plan[first.name].index, 3)  # 1 batch left to average: too few
        run.capture(second)
        assert run.batches_drawn["plain"] == 2 + 2 + 1 + 2


@pytest.mark.parametrize("rows, batches", [(256, 1), (512, 1), (513, 2), (4096, 3)])
def test_a_capture_reads_the_batches_its_rows_need(trained_cnn, digits, rows, batches):
    """block1_b gives 16 rows of X an image (4 x 4 positions): `capture_rows` rows need ceil(rows / 16)
    images, read in whole batches of 32, at most `capture_batches` (3); a capture taken from a pending
    recalibration's passes keeps the same images."""
    from bitat_tf import progressive

    x, y = digits[0][:32 * 8], digits[1][:32 * 8]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    config = bitat_tf.BinarizeConfig.paper(**dict(CHEAP, capture_batches=3, bn_recalibration_batches=4,
                                                  capture_rows=rows))
    plan = graph.make_plan(trained_cnn, config)
    run = progressive.ProgressiveRun(trained_cnn, plan, data, None, config, 8, True, 0)
    with run.session(run.penalty):
        second = run.working.get_layer(plan.binarized[1])
        assert capture.rows_per_image(second) == 16
        own = run.capture(second)
        assert own.n_images == 32 * batches and run.batches_drawn["plain"] == batches
        run.batches_drawn["plain"], run._streams = 0, {}
        run.pending_recalibration = (-1, 0)
        from_pass = run.capture(second)
        assert run.batches_drawn["plain"] == 4  # the recalibration's passes, nothing more
        assert from_pass.n_images == 32 * batches


@pytest.mark.parametrize("normalization, every, recalibrations", [
    ("recalibrated", "end", ["block1_a", "block1_b", "block2_a"]),  # above each stage's layer
    ("batch", "end", [-1]),  # only before the final evaluation reads the statistics
    ("batch", "layer", [-1, -1, -1]),  # before each evaluation
])
def test_batch_statistics_in_the_pass_recalibrate_only_where_statistics_are_read(
        trained_cnn, digits_ds, monkeypatch, normalization, every, recalibrations):
    """pass_normalization="batch": every BatchNorm normalises with batch statistics in the pass's steps and
    captures, so no recalibration runs between stages; one runs (over the whole network) where the moving
    statistics are next read."""
    from bitat_tf import engine

    calls, original = [], engine.Engine.recalibrate
    monkeypatch.setattr(engine.Engine, "recalibrate",
                        lambda self, after=-1, **kw: calls.append(after) or original(self, after, **kw))
    config = bitat_tf.BinarizeConfig.paper(**CHEAP, evaluate_every=every, pass_normalization=normalization)
    result = bitat_tf.binarize(trained_cnn, digits_ds[0].take(4), validation_data=digits_ds[1], config=config,
                               verbose=0)
    index = {layer.name: i for i, layer in enumerate(trained_cnn.layers)}
    assert calls == [index[n] if isinstance(n, str) else n for n in recalibrations]
    assert result.report.binary_accuracy is not None


def test_compiled_forward_accepts_inputs_of_unknown_rank(trained_cnn, digits):
    """A dataset whose inputs have no static rank (e.g. from a generator) gets a forward traced as
    TensorFlow decides instead of a fixed signature it could not build."""
    from bitat_tf import engine

    names = [layer.name for layer in trained_cnn.layers if layer.name.startswith("block")][:1]
    x = tf.constant(digits[0][:8])
    for spec in ((tf.TensorSpec(None, tf.float32), tf.TensorSpec([None], tf.int64)),
                 (tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64))):
        forward = engine.forward.forward_with_inputs(trained_cnn, names, spec)
        outputs = forward(x, tf.constant(False))
        np.testing.assert_allclose(outputs[0].numpy(), trained_cnn(x).numpy(), rtol=1e-5, atol=1e-5)
        assert outputs[1].shape[0] == 8



@pytest.mark.parametrize("labels", ["sparse", "one-hot", "weighted"])
def test_evaluation_equals_keras_evaluate(trained_cnn, digits, labels):
    """The engine's evaluation (compiled forward + the accuracy Keras chose) gives `Model.evaluate`'s accuracy
    for class indices, one-hot labels and sample weights. The run's first evaluation is of the
    full-precision model (quantizers off), so the report's full-precision accuracy is that figure."""
    x, y = digits[2][:200], digits[3][:200]
    target = y if labels != "one-hot" else np.eye(10, dtype="float32")[y]
    parts = (x, target) if labels != "weighted" else (x, target, np.linspace(0.0, 2.0, len(y)).astype("float32"))
    data = tf.data.Dataset.from_tensor_slices(parts).batch(64)
    loss = (keras.losses.CategoricalCrossentropy if labels == "one-hot" else
            keras.losses.SparseCategoricalCrossentropy)(from_logits=True)
    model = keras.models.clone_model(trained_cnn)
    model.set_weights(trained_cnn.get_weights())
    model.compile(loss=loss, weighted_metrics=["accuracy"])
    expected = model.evaluate(data, verbose=0, return_dict=True)["accuracy"]
    config = bitat_tf.BinarizeConfig.paper(**CHEAP)
    result = bitat_tf.binarize(model, data, validation_data=data, config=config, verbose=0)
    assert result.report.fp_accuracy == pytest.approx(expected, abs=1e-6)


def test_graph_options_hold_inside_a_run_only():
    from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
    from tensorflow.python.eager import context

    from bitat_tf import engine

    def current():
        proto = config_pb2.ConfigProto()
        proto.ParseFromString(context.context().function_call_options.config_proto_serialized)
        return (proto.graph_options.rewrite_options.meta_optimizer_iterations,
                tf.config.optimizer.get_experimental_options().get("constant_folding", True))

    before = current()
    restore = engine.session._graph_options()
    try:
        assert current() == (rewriter_config_pb2.RewriterConfig.ONE, False)
    finally:
        restore()
    assert current() == before


def test_a_dilated_convolution_keeps_keras_gradient_instead_of_a_gate():
    """The gate's Conv2DBackpropFilter has no dilation on CPUs without oneDNN: such a layer is not gated."""
    from bitat_tf import gating
    from bitat_tf._compat import keras

    inputs = keras.Input((8, 8, 4))
    plain = keras.layers.Conv2D(4, 3, padding="same")
    dilated = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2)
    keras.Model(inputs, dilated(plain(inputs)))
    assert gating.gateable(plain) and not gating.gateable(dilated)
