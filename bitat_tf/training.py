"""`BitatTrainer`: a Keras model whose `train_step` adds BiTAT's terms to the task loss.

Wrapping the working model (rather than patching it) keeps `train_step`, metrics and distribution
strategies as Keras users know them, and every loss term is reported under its own name. Everything that
changes from one stage to the next is a variable (the term weights, which variables train, the penalty's
buffers, the quantizer switches), so the engine traces the step once per run.
"""

from bitat_tf._compat import keras, tf
from bitat_tf.config_checks import DISTILL_TARGETS
from bitat_tf.losses import softmax_kl
from bitat_tf.quantizers import select

TERMS = ("quant", "l1", "reg")


class BitatTrainer(keras.Model):
    """Trains `model` on `task loss + quant_weight * quant + l1_weight * l1 + reg_weight * reg`.

    # Arguments
        model: the working (partly binarized) model.
        penalty: an object whose `terms()` returns the unweighted BiTAT terms {"quant", "l1", "reg"} of
            the current layer (a `transforms.RunPenalty`), or None (task loss only).
        weights: mapping of term name to its starting weight; `set_term_weights` changes them between
            stages without a new trace.
        teacher: a full-precision model whose output distribution the student learns (ReActNet's
            distribution loss): the task loss is replaced by
            `(1 - distill_weight) * task + distill_weight * KL(teacher || student)`.
        distill_weight: in [0, 1]; 0 leaves the task loss alone. `set_distillation(False)` switches the
            term off (and the teacher's forward pass with it) from the next step on, without a new trace.
        distill_target: what the distillation term learns: "teacher" (the teacher's output distribution
            for every example) or "corrected" (the teacher's where its prediction is right, and the label,
            through the task loss, where it is wrong: a teacher's mistakes are not taught). Needs `task`.
        task: the `outputs.Task` of the model: the distillation term is its divergence (KL over a
            softmax's classes, or per sigmoid unit, from logits or probabilities), and every batch's labels
            are checked against it before the loss reads them. None: outputs are softmax logits, labels
            unchecked.
        segments: a `segments.Segments` of `model`: the backward pass runs segment by segment and skips
            the segments below every variable that trains (`Segments.set`); the same gradients.

    `set_trainable(variables)` chooses which of the trainable variables an optimizer step changes; the
    others get a zero gradient (with a freshly reset Adam, a variable that only ever sees zero gradients
    does not move).
    """

    def __init__(self, model, *, penalty=None, weights=None, teacher=None, distill_weight=0.0,
                 distill_target="teacher", task=None, segments=None, **kwargs):
        super().__init__(**kwargs)
        self.inner = model
        object.__setattr__(self, "segments", segments)  # read, not owned: not tracked
        self.penalty = penalty
        self.teacher = teacher if distill_weight > 0 else None
        self.distill_weight = float(distill_weight)
        if distill_target not in DISTILL_TARGETS or (distill_target == "corrected" and task is None):
            raise ValueError(f"distill_target={distill_target!r}: one of {DISTILL_TARGETS}, 'corrected' with a task")
        self.distill_target = distill_target
        object.__setattr__(self, "task", task)  # read, not owned: not tracked
        weights = dict(weights or {})
        object.__setattr__(self, "_term_weights", {
            t: tf.Variable(float(weights.get(t, 0.0)), trainable=False, name=f"{t}_weight") for t in TERMS})
        object.__setattr__(self, "_distilling", tf.Variable(True, trainable=False, name="distilling"))
        object.__setattr__(self, "_masks", {})
        object.__setattr__(self, "_assign_masks", None)
        # Keras' own "loss" metric is the task loss; the total and each BiTAT term get their own.
        names = (("total_loss",) + (tuple(f"{t}_loss" for t in TERMS) if penalty is not None else ())
                 + (("distill_loss",) if self.teacher is not None else ()))
        self.trackers = [keras.metrics.Mean(name=n) for n in names]
        # Non-finite inputs do not always show in the loss (sign() and ReLU can swallow NaN), so they are
        # counted here and the driver refuses to go on when any were seen.
        self.nonfinite = keras.metrics.Sum(name="nonfinite_inputs")
        # A metric's result in the step is already every replica's (Keras merges them); "auto" would sum
        # these results once more across the workers of a MultiWorkerMirroredStrategy.
        self.distribute_reduction_method = "first"

    def call(self, inputs, training=False):
        return self.inner(inputs, training=training)

    @property
    def metrics(self):
        return super().metrics + self.trackers + [self.nonfinite]

    def set_term_weights(self, weights):
        for name, variable in self._term_weights.items():
            variable.assign(float(weights.get(name, 0.0)))

    def set_distillation(self, on):
        """Whether the steps from the next one on distil (a trainer with a teacher; else a no-op)."""
        self._distilling.assign(bool(on))

    def set_trainable(self, variables):
        """Train exactly `variables` (of this trainer's trainable variables) from the next step on."""
        chosen = {variable_ref(v) for v in variables}
        if not self._masks:
            for v in self.trainable_variables:
                self._masks[variable_ref(v)] = tf.Variable(True, trainable=False, name="trains")
            object.__setattr__(self, "_assign_masks", assigner(list(self._masks.values()), tf.bool))
        self._assign_masks(tf.constant([ref in chosen for ref in self._masks]))

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if self.task is not None:
            y = self.task.checked(y)  # a label out of range stops the run here, not in the loss's kernel
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() if self.segments is None else self.segments.recording() as tape:
            y_pred = self(x, training=True)
            task = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.losses)
            if replicas > 1:  # Keras divides its loss by the replicas (their gradients are summed): the mean
                task = task * replicas  # over this replica's batch, as the other terms are
            total, values = task, []
            if self.teacher is not None:
                on = tf.cast(self._distilling, task.dtype)
                weight, distill = self.distill_weight * on, on * self.distillation(x, y, y_pred)
                total = (1.0 - weight) * task + weight * distill
            if self.penalty is not None:
                terms = self.penalty.terms()
                for name in TERMS:
                    total += self._term_weights[name] * terms[name]
                    values.append(terms[name])
            values.insert(0, total)
            if self.teacher is not None:
                values.append(distill)
            if replicas > 1:  # every term divided, so the summed gradients are those of the global batch's mean
                total = total / replicas
        variables = self.trainable_variables
        pairs = []
        for grad, variable in zip(tape.gradient(total, variables), variables):
            if grad is None:  # not connected to the loss (e.g. the quantizers of a kept layer)
                continue
            mask = self._masks.get(variable_ref(variable))
            if mask is not None:
                grad = select(mask, tf.convert_to_tensor(grad), tf.zeros_like(grad))
            pairs.append((grad, variable))
        self.optimizer.apply_gradients(pairs)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        for tracker, value in zip(self.trackers, values):
            tracker.update_state(value)
        self.nonfinite.update_state(tf.reduce_sum(tf.cast(~tf.math.is_finite(tf.cast(x, tf.float32)), tf.float32)))
        return {m.name: m.result() for m in self.metrics}

    def distillation(self, x, y, y_pred):
        """Mean KL divergence from the teacher's output distribution to the student's (the teacher runs
        only while distilling; its output is a constant for the tape, so no gradient op is built for it).
        With distill_target="corrected", an example the teacher gets wrong contributes its task loss
        instead (by Keras' accuracy of the teacher's output: the share of right units for sigmoids)."""
        target = tf.stop_gradient(tf.cond(self._distilling, lambda: self.teacher(x, training=False),
                                          lambda: tf.zeros_like(y_pred)))
        if self.task is None:
            return softmax_kl(tf.cast(target, tf.float32), tf.cast(y_pred, tf.float32), logits=True)
        if self.distill_target == "teacher":
            return self.task.divergence(target, y_pred)
        right = tf.reshape(tf.stop_gradient(tf.cast(self.task.accuracy(y, target), tf.float32)), [-1])
        wrong_loss = tf.reduce_mean((1.0 - right) * self.task.example_losses(y, y_pred))
        return self.task.divergence(target, y_pred, weights=right) + wrong_loss


def _latent(variable):
    """The variable itself, or the latent variable behind a Larq `QuantizedVariable`."""
    return getattr(variable, "latent_variable", variable)


def variable_ref(variable):
    """A hashable key of a variable, the same for a Larq `QuantizedVariable` and its latent variable."""
    return _latent(variable).ref()


def assigner(variables, dtype):
    """A compiled `assign(values)` setting `variables[i]` to `values[i]` (a tensor) for all i at once.

    Eager assigns cost ~35-55 us each: on the standard model, setting the 188 trainable masks and the 64
    gradient switches one by one took 6.7 and 3.6 ms a phase, through this 1.0 and 1.6 ms (measured; the
    rest of the latter is the Python that decides the switches).
    """

    @tf.function
    def assign(values):
        values = tf.cast(values, dtype)
        for i, variable in enumerate(variables):
            variable.assign(values[i])

    return assign


class StageCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay to zero over one stage, `base * (1 + cos(pi * min(step / steps, 1))) / 2`.

    Base and length are variables, so a new stage restarts the schedule (with the optimizer's step
    counter reset to zero) without a new trace. Equal to Keras' `CosineDecay(base, steps)`.
    """

    def __init__(self):
        self.base = tf.Variable(1e-3, trainable=False, name="base_learning_rate")
        self.steps = tf.Variable(1.0, trainable=False, name="stage_steps")

    def __call__(self, step):
        progress = tf.minimum(tf.cast(step, tf.float32) / self.steps, 1.0)
        return self.base * 0.5 * (1.0 + tf.cos(3.141592653589793 * progress))

    def get_config(self):
        return {}


__all__ = ["BitatTrainer", "StageCosine", "TERMS", "assigner", "variable_ref"]
