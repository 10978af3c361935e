"""What a Keras loss expects of the outputs and labels, read from the loss itself; and the KL divergences
the distillation term uses for the same outputs. `outputs.interpret` checks this reading against the model."""

import inspect
import re

from bitat_tf._compat import is_keras3_model, keras, tf
from bitat_tf.errors import ConfigError

# What a loss function expects: the distribution its outputs describe and the labels it takes (None: as
# the outputs allow). Looked up by the function behind the loss, which a string, a function and a Loss
# object of one family share.
LOSS_FAMILIES = {
    keras.losses.sparse_categorical_crossentropy: ("softmax", "sparse"),
    keras.losses.categorical_crossentropy: ("softmax", "dense"),
    keras.losses.categorical_focal_crossentropy: ("softmax", "dense"),
    keras.losses.binary_crossentropy: ("sigmoid", None),
    keras.losses.binary_focal_crossentropy: ("sigmoid", None),
}
_EPSILON = 1e-7  # Keras' backend.epsilon(), the clip of probabilities in its crossentropies


def default_loss(distribution, logits, labels):
    """The crossentropy that fits these outputs and labels (a model compiled without a loss)."""
    if distribution == "sigmoid":
        return keras.losses.BinaryCrossentropy(from_logits=logits)
    if labels == "sparse":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    return keras.losses.CategoricalCrossentropy(from_logits=logits)


def resolve(identifier):
    """(the loss as Keras resolves it, its family or None, from_logits or None, its name, its config)."""
    if isinstance(identifier, (dict, list, tuple)):
        raise ConfigError(f"the loss is given per output ({identifier!r}); for a model with one output pass one "
                          "loss (BinarizeConfig(loss=...)).")
    identifier = _from_keras3(identifier)
    try:
        loss = keras.losses.get(identifier)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"the loss {identifier!r} is not a Keras loss ({err}); pass BinarizeConfig(loss=...) "
                          "with a tf_keras loss, e.g. 'sparse_categorical_crossentropy'.") from err
    fn = getattr(loss, "fn", loss)  # a LossFunctionWrapper (every built-in Loss class) keeps its function
    family = LOSS_FAMILIES.get(fn)
    if isinstance(loss, keras.losses.Loss):
        config, name = loss.get_config(), loss.name
    else:
        config = {k: p.default for k, p in _parameters(fn).items() if p.default is not inspect.Parameter.empty}
        name = getattr(fn, "__name__", type(fn).__name__)
    if family and config.get("axis", -1) != -1:
        raise ConfigError(f"the loss {name} reduces axis {config['axis']}; bitat_tf reads the classes on the last "
                          "axis. Pass a loss with axis=-1.")
    return loss, family, (config.get("from_logits") if family else None), name, config


def _from_keras3(identifier):
    """A Keras 3 loss (read from a Keras 3 model before its conversion) as its tf_keras twin."""
    module = str(getattr(identifier, "__module__", ""))
    if isinstance(identifier, str) or not (is_keras3_model(identifier) or module.startswith("keras.")):
        return identifier
    if inspect.isfunction(identifier):
        return identifier.__name__
    twin = getattr(keras.losses, type(identifier).__name__, None)
    if twin is None:
        raise ConfigError(f"the model was compiled with the Keras 3 loss {type(identifier).__name__}, which "
                          "tf_keras has no twin of; pass BinarizeConfig(loss=...) with a tf_keras loss.")
    accepted = inspect.signature(twin).parameters
    return twin(**{k: v for k, v in identifier.get_config().items() if k in accepted and k != "reduction"})


def _parameters(fn):
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or an object without a signature
        return {}


def string_name(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if name[:1].isupper() else name


def class_name(name):
    return "".join(part.capitalize() for part in name.split("_"))


def softmax_kl(teacher, student, logits, weights=None):
    """Mean over examples of KL(softmax p || softmax q), from logits or from the probabilities; each
    example's term times its weight when `weights` (one per example) are given."""
    if logits:
        log_p, log_q = tf.nn.log_softmax(teacher), tf.nn.log_softmax(student)
    else:
        log_p, log_q = (tf.math.log(tf.clip_by_value(t, _EPSILON, 1.0)) for t in (teacher, student))
    return _weighted_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1), weights)


def binary_kl(teacher, student, logits, weights=None):
    """Mean over units and examples of KL(Bernoulli(p) || Bernoulli(q)); each example's mean over its
    units times its weight when `weights` (one per example) are given."""
    if logits:
        log_p, log_not_p = tf.math.log_sigmoid(teacher), tf.math.log_sigmoid(-teacher)
        log_q, log_not_q = tf.math.log_sigmoid(student), tf.math.log_sigmoid(-student)
    else:
        p, q = (tf.clip_by_value(t, _EPSILON, 1.0 - _EPSILON) for t in (teacher, student))
        log_p, log_not_p, log_q, log_not_q = tf.math.log(p), tf.math.log(1 - p), tf.math.log(q), tf.math.log(1 - q)
    kl = tf.exp(log_p) * (log_p - log_q) + tf.exp(log_not_p) * (log_not_p - log_not_q)
    if weights is None:
        return tf.reduce_mean(kl)
    return _weighted_mean(tf.reduce_mean(tf.reshape(kl, [tf.shape(kl)[0], -1]), axis=-1), weights)


def _weighted_mean(per_example, weights):
    if weights is None:
        return tf.reduce_mean(per_example)
    return tf.reduce_mean(tf.reshape(per_example, [-1]) * tf.reshape(tf.cast(weights, per_example.dtype), [-1]))


__all__ = ["LOSS_FAMILIES", "binary_kl", "class_name", "default_loss", "resolve", "softmax_kl", "string_name"]
