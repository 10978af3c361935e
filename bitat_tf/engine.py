"""The training engine under BiTAT's progressive driver and the end-to-end baselines.

A run owns one working model and one `BitatTrainer`, compiled once. Everything a stage changes is a
variable the traced functions read at run time:
- each quantizer's on/off switch and the pad value of its 'same' padding (`quantizers.attach_switch`);
- each BatchNorm's training mode (a frozen BatchNorm normalises with its moving statistics) and its
  momentum, so that recalibration (momentum i / (i + 1) at batch i) is one compiled forward pass;
- which variables an optimizer step changes (`BitatTrainer.set_trainable`) and, from the same mask,
  which convolutions compute input and kernel gradients at all (`gating`) and, in a progressive run,
  which segments of the backward pass run at all (`segments`: none below the frozen frontier); the BiTAT
  term weights, the current layer of the penalty, the learning rate and the length of its cosine
  schedule.
So the train step, evaluation and recalibration are each traced once per run, however many stages it
has. `session()` attaches all of this and restores plain Python state when the run ends or fails: the
returned model saves and exports as if none of it had happened.

Moving statistics are re-estimated where they are read, not where they go stale: a recalibration a phase
asks for can wait (`pending_recalibration`) until an evaluation, a phase that normalises with them, or a
capture, which then takes its inputs from the recalibration's own forward passes (`capture`). With
`batch_statistics` on (BiTAT's pass by default) every BatchNorm normalises with batch statistics in steps
and captures, so the pass reads no moving statistic and recalibrates only before an evaluation.
"""

import contextlib
import dataclasses
import statistics
import threading
import time

import numpy as np

from bitat_tf import capture, gating, graph, segments
from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError, DatasetError, TrainingError
from bitat_tf.outputs import Task, interpret
from bitat_tf.quantizers import ThresholdSign
from bitat_tf.training import BitatTrainer, StageCosine, assigner, variable_ref
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2  # after _compat
from tensorflow.python.eager import context

_STAGE_PHASES = ("quantize", "fine-tune above")  # "<layer> quantize", "<layer> fine-tune above"
_WARMUP_STEPS = 2  # steps left out of the seconds-per-step median (first-call costs)
_AVERAGED_SHARE = 4  # BatchNorm statistics are averaged over at most the last 1/4 of a phase's steps


@dataclasses.dataclass
class BinarizeResult:
    """What `binarize` returns: the binary Larq model, the report, and the histories per stage."""

    model: keras.Model
    report: object
    history: dict


@dataclasses.dataclass
class PhaseTiming:
    """One training phase: optimizer steps, the median seconds a step, the phase's wall time and the time
    its steps took (the warm-up steps counted at the median: their first-call cost is not a step's)."""

    phase: str
    steps: int
    seconds_per_step: float
    seconds: float
    step_seconds: float

    @property
    def training_seconds(self):
        return self.steps * self.seconds_per_step


class Engine:
    """Working model, budgets, the compiled trainer, evaluation, BatchNorm recalibration, progress, timing."""

    def __init__(self, model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose, *,
                 quantizers=None):
        self.plan, self.config, self.verbose = plan, config, verbose
        self.dataset, self.steps_per_epoch = dataset, steps_per_epoch
        self.eval_data = validation_data if validation_data is not None else dataset.take(8)
        self.split = "validation" if validation_data is not None else "train (first 8 batches)"
        # What the outputs are, what trains them, the labels and the accuracy (`outputs.Task`); read here
        # when the caller has not (a run built directly passes a bool).
        self.task = task if isinstance(task, Task) else interpret(model, dataset.element_spec[1].shape,
                                                                  loss=config.loss)
        self.loss = self.task.loss
        self.teacher = frozen_copy(model) if config.distill_weight > 0 else None
        self.working = graph.to_larq(model, plan, quantizers=quantizers)
        self.history, self.timing = {}, []
        self._trainer, self._steps_train_every_norm, self._segments = None, False, None
        # The run reads its training data as one stream: phases, captures and recalibrations continue where
        # the last one stopped, so a shuffle buffer fills once per epoch, not once per phase. The counts
        # go into checkpoints; a resumed run skips as many batches and reads the same stream on.
        self.batches_drawn = {"train": 0, "plain": 0}
        self._streams = {}
        # `(after, done)` of a recalibration put off until the moving statistics are next read
        # (`fit(defer_recalibration=True)`); checkpoints keep it, so a resumed run does the same pass.
        self.pending_recalibration = None
        # True while every BatchNorm normalises with batch statistics in steps and captures (BiTAT's pass
        # with pass_normalization="batch"): the moving ones are then re-estimated only when read.
        self.batch_statistics = False
        # `checkpoint.PhaseCheckpointer` of a run with a checkpoint_dir: the phases fit() is asked to
        # checkpoint (`checkpointed=True`) save their state at the end of every epoch and resume from it.
        self.phase_checkpoints = None

    # ---- budgets and messages ------------------------------------------------------------------------
    def steps(self, steps, epochs):
        """A phase's optimizer steps: `steps` when given, else `epochs` of the dataset, at least one (0 epochs:
        none); a fraction of an epoch of a small dataset would otherwise round to no training at all."""
        if steps is not None:
            return int(steps)
        if not epochs:
            return 0
        if self.steps_per_epoch is None:
            raise ConfigError(f"the dataset repeats forever, so a budget of {epochs:g} epochs is undefined; give "
                              "the phase's budget in steps (steps_per_layer, finetune_steps, "
                              "final_finetune_steps) or pass a finite dataset.")
        return max(1, int(round(epochs * self.steps_per_epoch)))

    def say(self, text):
        if self.verbose:
            print(text, flush=True)

    # ---- the compiled pieces -------------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, penalty=None, *, steps_train_every_norm=False, segmented=False):
        """Attach the run's switches and compile its trainer; on exit, plain Python state again.

        `segmented`: the train step's backward pass runs in segments, each skipped while nothing at or
        below it trains (`segments`), for runs whose phases freeze a prefix of the model.

        `steps_train_every_norm`: the run's every train step normalises every BatchNorm with its batch's
        statistics (the baselines, BiTAT with `pass_normalization="batch"`). The train step then reads no
        BatchNorm switch, so it holds no `tf.cond` per BatchNorm (their branch functions, forward,
        backward and rebuilt, were ~4,400 of the standard step's graph nodes); captures and recalibration
        still read the switches. `fit` refuses a phase that would need one.
        """
        controls = _Controls(self.working, steps_train_every_norm=steps_train_every_norm,
                             segment_below=[self.working.get_layer(n) for n in self.plan.binarized] if segmented
                             else ())
        self._steps_train_every_norm = steps_train_every_norm
        restore_graph_options = _graph_options()
        try:
            for layer in self.working.layers:
                layer.trainable = True  # one fixed list of variables; stages choose with masks
            self._norms, self._gates, self._segments = controls.norms, controls.gates, controls.segments
            self._trainer = BitatTrainer(self.working, penalty=penalty, teacher=self.teacher,
                                         distill_weight=self.config.distill_weight, task=self.task,
                                         segments=self._segments)
            self._schedule = StageCosine()
            self._trainer.compile(optimizer=_adam(self._schedule), loss=self.loss, metrics=[self.task.metric()])
            # Create Adam's slots now: a variable created inside the first trace makes TensorFlow trace
            # the step a second time.
            self._trainer.optimizer._create_all_weights(self._trainer.trainable_variables)
            _build_compiled_metrics(self._trainer, self.dataset.element_spec)  # the same, for Keras' metrics
            self._accuracy = self.task.accuracy  # Keras' for these labels and outputs (sparse, categorical, binary)
            # One compiled forward for captures (inference mode) and recalibration (training mode): the
            # model's output and the inputs of the layers to binarize.
            self._forward = _forward_with_inputs(self.working, self.plan.binarized, self.dataset.element_spec)
            self._pass_bytes_per_image = _pass_bytes_per_image(self.working, self.plan.binarized)
            self._assign_norm_training = assigner([bn.bitat_training for bn in self._norms], tf.bool)
            self._assign_momenta = assigner([bn.momentum for bn in self._norms], tf.float32)
            self._momenta = tf.constant([bn.bitat_momentum for bn in self._norms], tf.float32)
            optimizer_variables = self._trainer.optimizer.variables
            optimizer_variables = optimizer_variables() if callable(optimizer_variables) else optimizer_variables
            self._optimizer_variables = list(optimizer_variables)
            self._zero_optimizer = tf.function(lambda: [v.assign(tf.zeros_like(v)) for v in optimizer_variables])
            yield
        finally:
            restore_graph_options()
            controls.detach()
            self._trainer = self._forward = None
            streams, self._streams = self._streams, {}
            _release(streams)  # the dict then holds the only references to the iterators

    def fit(self, learning_rate, steps, label, *, layers, extra=(), exclude=(), weights=None,
            recalibrate_after=None, defer_recalibration=False, distill=True, checkpointed=False):
        """Train the variables of `layers` (plus `extra`, minus `exclude`) for `steps` optimizer steps,
        with the distillation term when the run has a teacher and `distill` is true.

        BatchNorms among `layers` train on batch statistics; all others normalise with their moving ones
        (with `batch_statistics` on, every BatchNorm uses batch statistics and nothing is recalibrated:
        the moving statistics are marked stale). Progress shows every epoch of the dataset (or once for a
        shorter phase). Returns the history.

        `recalibrate_after` (a layer index) re-estimates the moving statistics of the BatchNorms above it
        when the phase ends (`recalibrate`). The training BatchNorms (they must include those) then average
        their batch statistics cumulatively over up to `bn_recalibration_batches` of the phase's last steps,
        batches the steps compute anyway, but only within its last quarter, where the cosine schedule has
        fallen below 15% of its rate and the weights barely move: statistics averaged while the weights
        still change are stale (averaging over a whole 6-step fine-tune cost 3 points of validation
        accuracy on the standard model). Extra forward passes make up the batches the window lacks.
        With `defer_recalibration` those passes wait until the statistics are next read (`settle`): a
        following `capture` then takes its inputs from them instead of a forward pass of its own.

        `checkpointed` (phases that train the whole network, in a run with a checkpoint_dir): the state is
        saved at the end of every epoch of the phase and at its end; a resumed run passes over the phases
        finished before the interruption and continues the interrupted one at its next step.
        """
        phases = self.phase_checkpoints if checkpointed else None
        if phases is not None and phases.finished(label) is not None:
            return phases.finished(label)
        if not self.batch_statistics:
            self.settle()  # the BatchNorms that do not train normalise with their moving statistics
        averages = recalibrate_after is not None and self._norms and not self.batch_statistics
        window = min(steps // _AVERAGED_SHARE, self.config.bn_recalibration_batches) if averages else 0
        if steps <= 0:
            if recalibrate_after is not None and not self.batch_statistics:
                self._recalibrate_after_phase(recalibrate_after, 0, defer_recalibration)
            return {}
        start, trainer = time.perf_counter(), self._trainer
        excluded = {variable_ref(v) for v in exclude}
        chosen = [v for layer in layers for v in layer.trainable_weights if variable_ref(v) not in excluded]
        trainer.set_trainable(chosen + list(extra))
        trains = {variable_ref(v) for v in chosen}
        self._gates.set(trains)  # gradients only where these variables need them
        if self._segments is not None:
            self._segments.set(trains)  # no backward pass below them
        trainer.set_term_weights(weights or {})
        trainer.set_distillation(distill)
        training_norms = set(self._norms) if self.batch_statistics else set(layers) & set(self._norms)
        if self._steps_train_every_norm and training_norms != set(self._norms):
            raise RuntimeError("internal: a phase with frozen BatchNorms in a session whose train step "
                               "normalises every BatchNorm with batch statistics (steps_train_every_norm)")
        self._set_batchnorm_training(training_norms)
        self._reset_optimizer(learning_rate, steps)
        done, history = phases.resume(self, label, self._optimizer_variables) if phases else (0, {})
        train_function = trainer.make_train_function()  # cached by Keras after the first call
        iterator = self.stream("train")
        chunk = min(self.steps_per_epoch or steps, steps)
        durations, chunk_start, logs = [], time.perf_counter(), {}
        trainer.reset_metrics()
        for step in range(done + 1, steps + 1):
            if step > steps - window:
                self._average_into_moving_statistics(step - (steps - window) - 1)
            t0 = time.perf_counter()
            try:
                logs = train_function(iterator)
            except tf.errors.InvalidArgumentError as err:  # the step's label check names the batch
                raise self.task.step_error(err, self.batches_drawn["train"], self.steps_per_epoch, label) or err
            durations.append(time.perf_counter() - t0)
            self.batches_drawn["train"] += 1
            if step % chunk and step != steps:
                continue
            logs = {k: float(v) for k, v in logs.items()}
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if logs.get("nonfinite_inputs"):  # the cause first: bad inputs make the loss NaN too
                raise DatasetError(f"the dataset fed NaN or infinite inputs during {label}; clean or filter it "
                                   "(e.g. dataset.filter on tf.math.is_finite). The checkpoint keeps the last "
                                   "finished layer.")
            if not np.isfinite(logs.get("total_loss", logs.get("loss", 0.0))):
                raise TrainingError(f"training diverged during {label} (loss {logs.get('total_loss')}); lower the "
                                    "learning rate or the BiTAT term weights. The checkpoint keeps the last "
                                    "finished layer.")
            self._progress(label, step, steps, chunk, logs, time.perf_counter() - chunk_start)
            chunk_start = time.perf_counter()
            trainer.reset_metrics()
            if phases is not None and step != steps:
                phases.save(self, label, step, history, self._optimizer_variables)
        if durations:  # none when a resumed phase had finished its steps
            timed = durations[min(_WARMUP_STEPS, len(durations) - 1):]
            median = statistics.median(timed)
            self.timing.append(PhaseTiming(label, len(durations), median, time.perf_counter() - start,
                                           sum(timed) + (len(durations) - len(timed)) * median))
        if window:
            self._assign_momenta(self._momenta)
        if self.batch_statistics:
            self.pending_recalibration = (-1, 0)  # the steps moved the moving statistics: all stale
        elif recalibrate_after is not None:
            self._recalibrate_after_phase(recalibrate_after, window, defer_recalibration)
        if phases is not None:
            phases.save(self, label, steps, history, self._optimizer_variables, finished=True)
        return history

    def _recalibrate_after_phase(self, after, done, defer):
        self.pending_recalibration = (after, done)
        if not defer:
            self.settle()

    def settle(self, capture_layers=()):
        """Run a deferred recalibration now (before anything reads the moving statistics); with
        `capture_layers`, return what `recalibrate` captured of them (None when nothing was pending)."""
        if self.pending_recalibration is None:
            return None
        after, done = self.pending_recalibration
        self.pending_recalibration = None
        return self.recalibrate(after, done=done, capture_layers=capture_layers)

    def evaluate(self):
        """Accuracy of the working model on the evaluation data (inference mode).

        The run's compiled forward (traced once, shared with captures and recalibration) computes the
        outputs and the task's accuracy function (Keras' for these labels and outputs, `outputs.Task`) scores
        them, averaged over the examples (weighted by sample weights when the data has them); each batch's
        labels are checked first. A Keras test step would be one more trace a run (~1 s of the standard
        run's first evaluation), and `Model.evaluate` would also build a data handler, callbacks and a
        progress bar at every call.
        """
        self.settle()
        structure, total, weight, batches = self.working.outputs, 0.0, 0.0, 0
        count = len(tf.nest.flatten(structure))
        for batch in self.eval_data:
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            self.task.check_batch(y, "validation_data" if self.split == "validation" else "dataset",
                                  f"batch {batches + 1}")
            outputs = self._forward(x, tf.constant(False))[:count]
            y_pred = outputs[0] if count == 1 else tf.nest.pack_sequence_as(structure, outputs)
            correct = tf.cast(self._accuracy(y, y_pred), tf.float64)
            w = tf.ones_like(correct) if sample_weight is None else tf.broadcast_to(
                tf.reshape(tf.cast(sample_weight, tf.float64), tf.shape(correct)), tf.shape(correct))
            total += float(tf.reduce_sum(correct * w))
            weight += float(tf.reduce_sum(w))
            batches += 1
        if not batches:
            raise DatasetError("the evaluation data yielded no batch; pass a non-empty validation_data.")
        return total / weight if weight else 0.0  # all weights zero: 0, as Keras' weighted mean gives

    def stream(self, kind):
        """The run's iterator over the repeated training data: "train" for the train step (distributed
        under a strategy), "plain" for captures and recalibration (batches of plain tensors)."""
        if kind not in self._streams:
            data = self.dataset.repeat()
            if self.batches_drawn[kind]:  # resumed: the same stream from where the checkpoint left it
                data = data.skip(self.batches_drawn[kind])
            self._streams[kind] = iter(_distribute(data) if kind == "train" else data)
        return self._streams[kind]

    def take(self, count):
        """The next `count` batches of the plain stream."""
        for _ in range(count):
            batch = next(self.stream("plain"))
            self.batches_drawn["plain"] += 1
            yield batch

    def passes(self, count, images=None):
        """The inputs of the next `count` plain batches (or fewer: as many as hold `images` images, at
        least one), concatenated into as few forward passes as `capture_memory_mb` allows; yields
        `(inputs, batches in them)`.

        A pass holds every binarized layer's input at once (the compiled forward returns them all), so
        that is what the bound counts. One pass of many images costs less than many of a few: on
        MobileNet at 32 images a batch the call itself dominated a forward pass. Yields `(inputs, images
        in each of its batches)`.
        """
        limit = max(1, int(self.config.capture_memory_mb * 2**20 // self._pass_bytes_per_image))
        pending, sizes, read = [], [], 0
        for x, *_ in self.take(count):
            n = int(tf.shape(tf.nest.flatten(x)[0])[0])
            if pending and sum(sizes) + n > limit:
                yield _concatenate(pending), sizes
                pending, sizes = [], []
            pending.append(x)
            sizes.append(n)
            read += n
            if images is not None and read >= images:
                break
        if pending:
            yield _concatenate(pending), sizes

    def capture(self, layers):
        """Captured inputs of binarizable `layers` (a list, or one layer); a list of `capture.Capture`, or one.

        A capture reads at most `capture_batches` batches, and only as many whole batches as give every
        layer `capture_rows` rows of X (`capture_images`): on the standard model (standard mode: 4 batches
        of 128) one batch for a layer at 8 x 8 positions or more and two at 4 x 4, where the top layers'
        captures are nearly whole forward passes.

        With a recalibration pending (`settle`) whose passes read at least `capture_batches` batches, the
        inputs come from the first of them (the same whole batches): those passes compute every binarized
        layer's input anyway. They run in training mode for the BatchNorms being recalibrated, i.e.
        normalise with the statistics of the images in the pass, which are what the moving statistics become
        (exactly so when the phase averaged none of its steps; nearly otherwise). Else one compiled forward pass of its
        own (inference mode, traced once per run).
        """
        single = not isinstance(layers, (list, tuple))
        layers = [layers] if single else list(layers)
        captured = None
        if self.batch_statistics:  # what the steps see: every BatchNorm on the pass's batch statistics
            self._set_batchnorm_training(set(self._norms))
            self.pending_recalibration = (-1, 0)  # a forward pass in training mode moves them too
        else:
            captured = self.settle(capture_layers=layers)
        if captured is None:
            picks = self._input_picks(layers)
            training = tf.constant(self.batch_statistics)
            inputs = ([values[i] for i in picks] for values in
                      (self._forward(x, training) for x, _ in
                       self.passes(self.config.capture_batches, self.capture_images(layers))))
            captured = capture.capture_many(layers, inputs, memory_mb=self.config.capture_memory_mb,
                                            seed=self.config.seed)
        return captured[0] if single else captured

    def capture_images(self, layers):
        """Images that give each of `layers` at least `capture_rows` rows of X (None: configs without
        capture_rows, the baselines', read all their capture batches)."""
        rows = getattr(self.config, "capture_rows", None)
        if rows is None:
            return None
        return max(-(-rows // capture.rows_per_image(layer)) for layer in layers)

    def _input_picks(self, layers):
        """Where the compiled forward returns the inputs of `layers`."""
        outputs = len(tf.nest.flatten(self.working.outputs))
        return [outputs + self.plan.binarized.index(layer.name) for layer in layers]

    def evaluate_model(self, model):
        """Accuracy of another model (the user's full-precision one) on the evaluation data."""
        trainer = BitatTrainer(model)
        trainer.compile(loss=self.loss, metrics=[self.task.metric()])
        return float(trainer.evaluate(self.eval_data, verbose=0, return_dict=True)["accuracy"])

    def recalibrate(self, after=-1, *, done=0, capture_layers=()):
        """Re-estimate the moving statistics of the BatchNorms above layer index `after`.

        Switching a layer to binary inputs and weights changes the scale of everything above it; a few
        hundred steps at momentum 0.99 leave the moving averages far from the new statistics, and the
        model then fails at inference although it trains well. Cumulative averages over
        `bn_recalibration_batches` batches (momentum i / (i + 1) at batch i) fix that. `done` batches of
        the average were taken by the last training steps (`fit(recalibrate_after=...)`); the rest are
        forward passes in training mode here, several batches a pass (`passes`; a pass normalises with the
        statistics of all its images, so its variance is the pooled one of its batches).

        With `capture_layers`, also returns their captured inputs in the first batches of these passes (as
        many as `capture` reads), or None when the passes read fewer than `capture_batches` batches.
        """
        index = {layer.name: i for i, layer in enumerate(self.working.layers)}
        norms = [bn for bn in self._norms if index[bn.name] > after]
        total, wanted = self.config.bn_recalibration_batches, self.config.capture_batches
        capturing = bool(capture_layers) and total - done >= wanted
        if not norms or done >= total:
            return None
        self._set_batchnorm_training(set(norms))
        averaged, inputs, picks = done, [], self._input_picks(capture_layers) if capturing else []
        need = (self.capture_images(capture_layers) if capturing else None) or float("inf")
        for x, sizes in self.passes(total - done):  # a pass of k batches weighs k in the average
            self._average_into_moving_statistics(averaged, len(sizes))
            values = self._forward(x, tf.constant(True))
            taken = averaged - done  # batches of these passes before this one
            if capturing and taken < wanted and need > 0:
                images = 0  # whole batches, as a capture's own passes read them
                for n in sizes[:wanted - taken]:
                    if need <= 0:
                        break
                    images, need = images + n, need - n
                inputs.append([values[i][:images] for i in picks])
            averaged += len(sizes)
        self._assign_momenta(self._momenta)
        self._set_batchnorm_training(set())
        if not capturing:
            return None
        return capture.capture_many(capture_layers, inputs, memory_mb=self.config.capture_memory_mb,
                                    seed=self.config.seed)

    # ---- helpers -------------------------------------------------------------------------------------
    def _average_into_moving_statistics(self, i, batches=1):
        """Momentum i / (i + k) for the next k batches (one pass) after i batches (from 0) of a cumulative
        average: the moving statistics become the mean of the batches' statistics, a pass of k batches
        weighing k. Only training BatchNorms use it."""
        self._assign_momenta(tf.fill([len(self._norms)], i / (i + batches)))

    def _reset_optimizer(self, learning_rate, steps):
        """A fresh Adam for each phase (zero moments, step 0) with a cosine schedule over its steps."""
        self._zero_optimizer()
        self._schedule.base.assign(learning_rate)
        self._schedule.steps.assign(float(max(steps, 1)))

    def _set_batchnorm_training(self, layers):
        if self._norms:
            self._assign_norm_training(tf.constant([bn in layers for bn in self._norms]))

    def _progress(self, label, step, steps, chunk, logs, seconds):
        if self.verbose:
            terms = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
            epochs = -(-steps // chunk)
            print(f"    {label} epoch {-(-step // chunk)}/{epochs}: {terms} ({seconds:.0f}s)", flush=True)


def timing_summary(timing, wall_seconds):
    """The optimizer steps of every phase that trained (`phase_steps`, by label); per phase kind (a stage's
    "quantize" or "fine-tune above", else the phase's label): steps, median seconds a step, seconds; the
    overhead, wall time minus steps x seconds a step over all phases; and the part of it spent in the first
    phase beyond its steps (tracing the train step, once a run).

    `outside_steps_seconds` is wall time minus the time the steps took (the warm-up steps at the median):
    the overhead less the steps slower than the median, which on a shared host come in periods of
    hundreds of steps (a busy neighbour), not from the engine."""
    phases, phase_steps = {}, {}
    for t in timing:
        phase_steps[t.phase] = phase_steps.get(t.phase, 0) + t.steps
        kind = next((k for k in _STAGE_PHASES if t.phase.endswith(" " + k)), t.phase)
        row = phases.setdefault(kind, {"steps": 0, "training_seconds": 0.0, "seconds": 0.0})
        row["steps"] += t.steps
        row["training_seconds"] += t.training_seconds
        row["seconds"] += t.seconds
    for row in phases.values():
        row["seconds_per_step"] = row["training_seconds"] / row["steps"] if row["steps"] else None
    trained = sum(t.training_seconds for t in timing)
    # The first phase's time beyond its steps is mostly the one trace and graph optimisation of the train
    # step, paid once a run; part of the overhead.
    first = timing[0].seconds - timing[0].training_seconds if timing else 0.0
    in_steps = sum(t.step_seconds for t in timing)
    return {"phases": phases, "phase_steps": phase_steps, "training_seconds": trained, "wall_seconds": wall_seconds,
            "overhead_seconds": wall_seconds - trained, "first_phase_extra_seconds": first,
            "outside_steps_seconds": wall_seconds - in_steps}


def _adam(schedule):
    """Adam as Keras' legacy optimizer: one fused `ResourceApplyAdam` kernel a variable where the current
    `keras.optimizers.Adam` builds about ten ops, the same update (bias-corrected step, epsilon 1e-7).
    The standard model trains 186 variables: in one sitting (`engine_speed.py --case stages --recipe
    default`) its quantize, fine-tune-above and end-to-end steps took 157 / 167 / 178 ms against 162 / 176 /
    198 ms, and the train step's first call (trace, graph optimisation) 14.2 s against 15.7 s. Its
    variables are the step counter and the slots only (the hyperparameters are constants), so
    `_zero_optimizer` can reset all of them."""
    return keras.optimizers.legacy.Adam(schedule)


def _graph_options():
    """Grappler settings for the functions the run instantiates; returns what restores the previous ones.

    - Constant folding off (process-wide, `tf.config.optimizer`): on the standard model's train step
      (8,660 nodes, default recipe) it took 1.7 s of the first call (10.9 / 9.8 s without it against 12.2 /
      11.9 s with it, alternating runs in one sitting) and did not make a step faster (median 169.6 / 169.4
      ms against 171.6 / 174.0 ms).
    - One round of the meta-optimizer instead of two (this thread's function-call options; `tf.config`
      has no switch for it): the second round of the train step changed no node (the optimized graphs were
      the same op for op) and took ~1.1 s of its 3.4 s of Grappler; the first call took 10.4 s against
      11.8 s (mean of 4 probes; `runs/s24/probe_opts.py`, one sitting).
    Switching all of Grappler off saves more but makes steps ~3.5% slower (README). A function
    instantiated before keeps its graph, and is instantiated again only if called while the options differ.
    """
    ctx = context.context()
    before, call_options = tf.config.optimizer.get_experimental_options(), ctx.function_call_options
    tf.config.optimizer.set_experimental_options({"constant_folding": False})  # resets the call options
    proto = config_pb2.ConfigProto()
    proto.ParseFromString(ctx.function_call_options.config_proto_serialized)
    proto.graph_options.rewrite_options.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    ctx.function_call_options = context.FunctionCallOptions(config_proto=proto)

    def restore():
        tf.config.optimizer.set_experimental_options({"constant_folding": before.get("constant_folding", True)})
        ctx.function_call_options = call_options

    return restore


def seed_host(seed):
    """Seed Python's and NumPy's generators (sampling, k-means) for one stage.

    TensorFlow is seeded once per run, not per stage: `tf.random.set_seed` clears TensorFlow's kernel
    cache, and re-instantiating the traced step's kernels cost ~7 s a stage on MobileNet (measured).
    Random ops inside the step (dropout) therefore continue their streams across stages: a run resumed
    from a checkpoint is bit-identical to an uninterrupted one for models without dropout, and draws
    other dropout masks for models with it.
    """
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)


def frozen_copy(model):
    """A copy of `model` that never trains: the teacher of the distillation term."""
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    teacher.trainable = False
    return teacher


def clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _release(iterators):
    """Drop the run's tf.data iterators on a background thread.

    Destroying an iterator of an autotuned input pipeline waits until the pipeline's autotuning thread
    wakes from its sleep: idle time (0.2 s of CPU), but up to ~30 s for each of the two streams at the end
    of a standard CIFAR-10 run, measured, which `binarize` would otherwise spend before returning. The
    thread is not a daemon: interpreter exit waits for it, since a daemon thread killed inside
    TensorFlow's C++ aborts the process ("terminate called ... exception not rethrown", seen in a script
    that exits right after `binarize`).
    """
    threading.Thread(target=iterators.clear, name="bitat_tf-release-iterators").start()


def _distribute(dataset):
    if tf.distribute.has_strategy():
        return tf.distribute.get_strategy().experimental_distribute_dataset(dataset)
    return dataset


class _Controls:
    """Attaches the run's variables to the working model's layers and takes them off again."""

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


def _forward_with_inputs(model, names, element_spec):
    """`f(x, training)` -> [the model's outputs..., the inputs of the layers `names`...], compiled once for
    any number of images (`training` is a boolean tensor, so both modes share the trace).

    A capture runs the whole model, although it needs only the layers below the one it captures: a
    `tf.cond` per layer that skipped the rest cost the standard model's first evaluation ~2.3 s of trace
    and graph instantiation and saved its 31 captures (one or two batches each) ~1.1-1.6 s (measured).
    """
    inputs = [capture.layer_input_model(model, model.get_layer(n)).outputs[0] for n in names]
    probe = keras.Model(model.inputs, tf.nest.flatten(model.outputs) + inputs)

    def forward(x, training):
        return tf.nest.flatten(probe(x, training=training))

    specs = element_spec[0] if isinstance(element_spec, tuple) else element_spec
    if not all(type(s) is tf.TensorSpec and s.shape.rank is not None for s in tf.nest.flatten(specs)):
        return tf.function(forward, reduce_retracing=True)  # ragged, sparse or rank unknown: as TF decides
    specs = tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), specs)
    return tf.function(forward, input_signature=[specs, tf.TensorSpec([], tf.bool)])


def _pass_bytes_per_image(model, names):
    """Bytes a forward pass holds per image: every binarized layer's input (returned together) plus twice
    the largest activation (the one being computed and its input)."""
    def size(layer, attribute):
        try:
            tensors = tf.nest.flatten(getattr(layer, attribute))
        except (AttributeError, RuntimeError):  # a layer called more than once has no single shape
            return 0
        return sum(int(np.prod([d or 1 for d in t.shape[1:]])) for t in tensors)

    held = sum(size(model.get_layer(n), "input") for n in names)
    largest = max([size(layer, "output") for layer in model.layers] or [1])
    return 4 * max(held + 2 * largest, 1)


def _concatenate(batches):
    """One batch of the inputs of several (nested structures of tensors)."""
    if len(batches) == 1:
        return batches[0]
    return tf.nest.map_structure(lambda *parts: tf.concat(parts, axis=0), *batches)


def _build_compiled_metrics(trainer, spec):
    """Create the compiled loss's and metrics' variables before the first trace.

    Keras creates them inside the first trace of whichever step runs first (in a run, the test step of the
    full-precision evaluation), and a variable created in a trace makes TensorFlow trace that function a
    second time (measured on the standard model's train step when it ran first: ~13 s of ~30 s). Built
    here from zeros shaped like the data and the model's outputs.
    """
    specs = tf.nest.flatten(spec)
    y_spec = specs[1] if len(specs) > 1 else None
    y_pred = tf.nest.map_structure(lambda t: tf.zeros([1, *t.shape[1:]], t.dtype), trainer.inner.output)
    trainer.compiled_loss.build(y_pred)
    if y_spec is not None:
        trainer.compiled_metrics.build(y_pred, tf.zeros([1, *y_spec.shape[1:]], y_spec.dtype))


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


__all__ = ["BinarizeResult", "Engine", "PhaseTiming", "clock", "frozen_copy", "seed_host", "timing_summary"]
