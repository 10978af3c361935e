"""BatchNorm statistics: re-estimated where they are read, not where they go stale.

A recalibration a phase asks for can wait (`pending_recalibration`) until an evaluation, a phase that
normalises with the moving statistics, or a capture, which then takes its inputs from the recalibration's
own forward passes. With `batch_statistics` on (BiTAT's pass by default) every BatchNorm normalises with
batch statistics in steps and captures, so the pass reads no moving statistic and recalibrates only
before an evaluation.
"""

from bitat_tf import capture
from bitat_tf._compat import tf


class MovingStatistics:
    """Mixin of `Engine`: BatchNorm recalibration (cumulative averages in training-mode forward passes)."""

    def settle(self, capture_layers=()):
        """Run a deferred recalibration now (before anything reads the moving statistics); with
        `capture_layers`, return what `recalibrate` captured of them (None when nothing was pending)."""
        if self.pending_recalibration is None:
            return None
        after, done = self.pending_recalibration
        self.pending_recalibration = None
        return self.recalibrate(after, done=done, capture_layers=capture_layers)

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

    def _recalibrate_after_phase(self, after, done, defer):
        self.pending_recalibration = (after, done)
        if not defer:
            self.settle()

    def _average_into_moving_statistics(self, i, batches=1):
        """Momentum i / (i + k) for the next k batches (one pass) after i batches (from 0) of a cumulative
        average: the moving statistics become the mean of the batches' statistics, a pass of k batches
        weighing k. Only training BatchNorms use it."""
        self._assign_momenta(tf.fill([len(self._norms)], i / (i + batches)))

    def _set_batchnorm_training(self, layers):
        if self._norms:
            self._assign_norm_training(tf.constant([bn in layers for bn in self._norms]))


__all__ = ["MovingStatistics"]
