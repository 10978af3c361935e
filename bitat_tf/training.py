"""`BitatTrainer`: a Keras model whose `train_step` adds BiTAT's terms to the task loss.

Wrapping the working model (rather than patching it) keeps `fit`, callbacks, progress bars and distribution
strategies as Keras users know them, and every loss term appears in `History` under its own name.
"""

from bitat_tf._compat import keras, tf
from bitat_tf.capture import kernel_matrix
from bitat_tf.graph import kernel_of, weight_quantizer

TERMS = ("quant", "l1", "reg")


class BitatTrainer(keras.Model):
    """Trains `model` on `task loss + quant_weight * quant + l1_weight * l1 + reg_weight * reg`.

    # Arguments
        model: the working (partly binarized) model; its layers' `trainable` flags decide what trains.
        penalty: a `transforms.StagePenalty` for the layer being binarized, or None (task loss only, as in
            the fine-tune of the layers above).
        layer: that layer (needed with a penalty).
        weights: mapping of term name to weight.
        teacher: a full-precision model whose output distribution the student learns (ReActNet's
            distribution loss): the task loss is replaced by
            `(1 - distill_weight) * task + distill_weight * KL(teacher || student)`.
        distill_weight: in [0, 1]; 0 leaves the task loss alone.
        from_logits: whether the models output logits (else probabilities), for the distillation term.
        frozen: variables of trainable layers that must not change (e.g. the latent kernels of binary layers
            in the final fine-tune, whose BatchNorms, thresholds and scales train).
    """

    def __init__(self, model, *, penalty=None, layer=None, weights=None, teacher=None, distill_weight=0.0,
                 from_logits=True, frozen=(), **kwargs):
        super().__init__(**kwargs)
        self.inner = model
        self._frozen = {_latent(v).ref() for v in frozen}
        self.penalty = penalty
        self.teacher = teacher if distill_weight > 0 else None
        self.distill_weight, self.from_logits = float(distill_weight), from_logits
        self._layer_name = layer.name if layer is not None else None
        self.term_weights = dict(weights or {})
        # Keras' own "loss" metric is the task loss; the total and each BiTAT term get their own.
        names = (("total_loss",) + (tuple(f"{t}_loss" for t in TERMS) if penalty is not None else ())
                 + (("distill_loss",) if self.teacher is not None else ()))
        self.trackers = [keras.metrics.Mean(name=n) for n in names]
        # Non-finite inputs do not always show in the loss (sign() and ReLU can swallow NaN), so they are
        # counted here and the driver refuses to go on when any were seen.
        self.nonfinite = keras.metrics.Sum(name="nonfinite_inputs")

    def call(self, inputs, training=False):
        return self.inner(inputs, training=training)

    @property
    def metrics(self):
        return super().metrics + self.trackers + [self.nonfinite]

    def penalty_terms(self):
        """The unweighted BiTAT terms for the current layer, with its kernel as seen by the layer."""
        layer = self.inner.get_layer(self._layer_name)
        alpha = weight_quantizer(layer).alpha
        return self.penalty.terms(kernel_matrix(layer, kernel_of(layer)), alpha)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            task = self.compiled_loss(y, y_pred, sample_weight, regularization_losses=self.losses)
            total, values = task, []
            if self.teacher is not None:
                distill = self.distillation(x, y_pred)
                total = (1.0 - self.distill_weight) * task + self.distill_weight * distill
            if self.penalty is not None:
                terms = self.penalty_terms()
                for name in TERMS:
                    total += self.term_weights.get(name, 0.0) * terms[name]
                    values.append(terms[name])
            values.insert(0, total)
            if self.teacher is not None:
                values.append(distill)
        variables = [v for v in self.trainable_variables if _latent(v).ref() not in self._frozen]
        grads = tape.gradient(total, variables)
        # Quantizers that are still switched off (layers above this one) get no gradient: skip them.
        self.optimizer.apply_gradients((g, v) for g, v in zip(grads, variables) if g is not None)
        self.compiled_metrics.update_state(y, y_pred, sample_weight)
        for tracker, value in zip(self.trackers, values):
            tracker.update_state(value)
        self.nonfinite.update_state(tf.reduce_sum(tf.cast(~tf.math.is_finite(tf.cast(x, tf.float32)), tf.float32)))
        return {m.name: m.result() for m in self.metrics}


    def distillation(self, x, y_pred):
        """Mean KL divergence from the teacher's output distribution to the student's."""
        target = self.teacher(x, training=False)
        if self.from_logits:
            log_p, log_q = tf.nn.log_softmax(target), tf.nn.log_softmax(y_pred)
        else:
            log_p, log_q = (tf.math.log(tf.clip_by_value(t, 1e-7, 1.0)) for t in (target, y_pred))
        return tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1))


def _latent(variable):
    """The variable itself, or the latent variable behind a Larq `QuantizedVariable`."""
    return getattr(variable, "latent_variable", variable)


def make_optimizer(learning_rate, steps):
    """Adam with cosine decay to zero over `steps`."""
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(int(steps), 1))
    return keras.optimizers.Adam(schedule)


__all__ = ["BitatTrainer", "make_optimizer", "TERMS"]
