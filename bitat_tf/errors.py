"""Errors that name the problem and what to do about it."""


class BitatError(ValueError):
    """Base class of the errors bitat_tf raises for bad input."""


class ConfigError(BitatError):
    """A configuration value is out of range or contradicts another."""


class UnsupportedModelError(BitatError):
    """The model cannot be binarized as given (subclassed, unbuilt, Keras 3 with unknown layers, ...)."""


class DatasetError(BitatError):
    """The dataset is empty, unlabeled, or does not fit the model."""


class TrainingError(RuntimeError):
    """Training diverged (NaN or infinite loss); the message names the layer."""
