"""The training engine under BiTAT's progressive driver and the end-to-end baselines (docs/engine.md).

A run owns one working model and one `BitatTrainer`, compiled once. Everything a stage changes is a
variable the traced functions read at run time (`controls`): quantizer switches, BatchNorm modes and
momenta, which variables an optimizer step changes and which gradients are computed at all, the BiTAT
term weights, the learning rate and the length of its cosine schedule. So the train step, evaluation and
recalibration are each traced once per run, however many stages it has.

`Engine` is the parts below, each a mixin in its own module, so that a change to one concern touches one
file:
- `session.py`: the compiled session (switches attached, trainer and forward pass compiled, restored on exit);
- `fitting.py`: the fit loop (one phase's steps, the optimizer reset, phase checkpoints);
- `forward.py`: evaluation and captures through the run's one compiled forward pass;
- `batchnorm.py`: BatchNorm recalibration, deferred until the moving statistics are read;
- `streams.py`: the run's stream of training batches and memory-bounded forward passes;
- `determinism.py`: what `deterministic=True` turns on (op determinism, seeds, epochs read in order);
and, used by the methods and the parts: `budgets.py` (optimizer steps from epochs, the last phase's
length), `timing.py` (`PhaseTiming`, `timing_summary`), `progress.py` (what `verbose` shows).
"""

import dataclasses

import numpy as np

from bitat_tf import graph
from bitat_tf._compat import keras
from bitat_tf.engine import determinism
from bitat_tf.engine.batchnorm import MovingStatistics
from bitat_tf.engine.fitting import FitLoop
from bitat_tf.engine.forward import ForwardPasses
from bitat_tf.engine.progress import Progress
from bitat_tf.engine.session import CompiledSession
from bitat_tf.engine.streams import DataStreams
from bitat_tf.engine.timing import PhaseTiming, clock, timing_summary
from bitat_tf.outputs import Task, interpret


@dataclasses.dataclass
class BinarizeResult:
    """What `binarize` returns: the binary Larq model, the report, and the histories per stage."""

    model: keras.Model
    report: object
    history: dict


class Engine(CompiledSession, FitLoop, ForwardPasses, MovingStatistics, DataStreams):
    """Working model, the compiled trainer, evaluation, BatchNorm recalibration, data, progress and timing
    of one run; a method subclasses it and sequences its phases (`progressive`, `baselines`)."""

    def __init__(self, model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose, *,
                 quantizers=None):
        if config.deterministic:  # before anything random is made or the data is read (`determinism`)
            dataset = determinism.begin(config.seed, dataset, validation_data)
        self.plan, self.config, self.verbose = plan, config, verbose
        self.original = model  # the user's model, as read: checkpoints fingerprint it
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
        self.progress = Progress(verbose)
        self._trainer, self._steps_train_every_norm, self._segments = None, False, None
        # Batches read from the training stream by the train step and by forward passes (`streams`).
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

    def say(self, text):
        """A line of the run's story (verbose 1 and 2): what it binarizes, each stage's summary, results."""
        self.progress.say(text)


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


__all__ = ["BinarizeResult", "Engine", "PhaseTiming", "clock", "frozen_copy", "seed_host", "timing_summary"]
