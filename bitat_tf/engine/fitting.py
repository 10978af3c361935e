"""The fit loop: one phase's optimizer steps, with the optimizer reset, checks, progress and checkpoints."""

import time

import numpy as np

from bitat_tf._compat import tf
from bitat_tf.engine.timing import phase_timing
from bitat_tf.errors import DatasetError, TrainingError
from bitat_tf.training import variable_ref

_AVERAGED_SHARE = 4  # BatchNorm statistics are averaged over at most the last 1/4 of a phase's steps


class FitLoop:
    """Mixin of `Engine`: `fit` trains the working model for one phase of a run, in the compiled session."""

    def fit(self, learning_rate, steps, label, *, layers, extra=(), exclude=(), weights=None,
            recalibrate_after=None, defer_recalibration=False, distill=True, checkpointed=False):
        """Train the variables of `layers` (plus `extra`, minus `exclude`) for `steps` optimizer steps,
        with the distillation term when the run has a teacher and `distill` is true.

        BatchNorms among `layers` train on batch statistics; all others normalise with their moving ones
        (with `batch_statistics` on, every BatchNorm uses batch statistics and nothing is recalibrated:
        the moving statistics are marked stale). Progress shows as `verbose` says (`progress`). Returns
        the history: the logs at the end of every epoch of the dataset (or once for a shorter phase).

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
            self.progress.passed(steps)
            return phases.finished(label)
        if not self.batch_statistics:
            self.settle()  # the BatchNorms that do not train normalise with their moving statistics
        averages = recalibrate_after is not None and self._norms and not self.batch_statistics
        window = min(steps // _AVERAGED_SHARE, self.config.bn_recalibration_batches) if averages else 0
        if steps <= 0:
            if recalibrate_after is not None and not self.batch_statistics:
                self._recalibrate_after_phase(recalibrate_after, 0, defer_recalibration)
            return {}
        start = time.perf_counter()
        self._prepare_phase(learning_rate, steps, layers, extra, exclude, weights, distill)
        done, history = phases.resume(self, label, self._optimizer_variables) if phases else (0, {})
        durations = self._take_steps(label, steps, done, window, history, phases)
        if durations:  # none when a resumed phase had finished its steps
            self.timing.append(phase_timing(label, durations, time.perf_counter() - start))
        if window:
            self._assign_momenta(self._momenta)
        if self.batch_statistics:
            self.pending_recalibration = (-1, 0)  # the steps moved the moving statistics: all stale
        elif recalibrate_after is not None:
            self._recalibrate_after_phase(recalibrate_after, window, defer_recalibration)
        if phases is not None:
            phases.save(self, label, steps, history, self._optimizer_variables, finished=True)
        return history

    def _prepare_phase(self, learning_rate, steps, layers, extra, exclude, weights, distill):
        """Set what the phase trains, its BiTAT terms, distillation and BatchNorm modes; reset the optimizer."""
        trainer, excluded = self._trainer, {variable_ref(v) for v in exclude}
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

    def _take_steps(self, label, steps, done, window, history, phases):
        """Steps `done + 1` to `steps` of the phase; returns each one's seconds."""
        trainer = self._trainer
        train_function = trainer.make_train_function()  # cached by Keras after the first call
        iterator = self.stream("train")
        chunk = min(self.steps_per_epoch or steps, steps)
        durations, chunk_start = [], time.perf_counter()
        trainer.reset_metrics()
        with self.progress.phase(label, steps, done) as progress:
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
                progress.step(logs)
                if step % chunk and step != steps:
                    continue
                logs = self._epoch_logs(logs, history, label)
                progress.epoch(label, step, steps, chunk, logs, time.perf_counter() - chunk_start)
                chunk_start = time.perf_counter()
                trainer.reset_metrics()
                if phases is not None and step != steps:
                    phases.save(self, label, step, history, self._optimizer_variables)
        return durations

    @staticmethod
    def _epoch_logs(logs, history, label):
        """The logs as floats, added to `history`; an error when the data or the loss went non-finite."""
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
        return logs

    def _reset_optimizer(self, learning_rate, steps):
        """A fresh Adam for each phase (zero moments, step 0) with a cosine schedule over its steps."""
        self._zero_optimizer()
        self._schedule.base.assign(learning_rate)
        self._schedule.steps.assign(float(max(steps, 1)))


__all__ = ["FitLoop"]
