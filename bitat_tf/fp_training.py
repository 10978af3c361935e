"""Training the full-precision model that BiTAT starts from, cached on disk by recipe."""

import os
import time

from bitat_tf._compat import keras
from bitat_tf.errors import DatasetError
from bitat_tf.inputs import check_ends, epoch_length, unknown_length


def train_full_precision(model, train_ds, *, epochs, learning_rate=2e-3, validation_data=None,
                         cache_path=None, verbose=1, steps_per_epoch=None):
    """Adam with cosine decay on sparse crossentropy from logits; weights cached at `cache_path`.

    # Arguments
        steps_per_epoch: the batches in one epoch of `train_ds`; by default its `cardinality()`. Needed when
            tf.data cannot tell its length (it repeats forever, or comes from `from_generator`, `filter`, ...):
            the data is never read through to count it. With it an epoch is that many batches of the data
            read on as one stream, as in Keras' `fit`.
        cache_path: a `.h5` weights file named by the caller after its recipe (model, width, data, epochs);
            when it exists the weights are loaded instead of trained.

    # Returns
        (model, info): the compiled model and `{"seconds", "cached", "accuracy"}` (accuracy on
        `validation_data`, or None).
    """
    batches = epoch_length(train_ds, steps_per_epoch, what="train_ds")
    if batches is None:
        raise DatasetError(f"train_full_precision: epochs={epochs} is a budget in epochs, and "
                           f"{unknown_length(train_ds)}; pass steps_per_epoch=N, the batches in one epoch.")
    if validation_data is not None:
        check_ends(validation_data, "validation_data")
    steps = batches * epochs
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    start, cached = time.time(), bool(cache_path and os.path.exists(cache_path))
    if cached:
        model.load_weights(cache_path)
    else:
        # With steps_per_epoch the data is read on as one stream: Keras' fit would stop at its end.
        data = train_ds.repeat() if steps_per_epoch is not None else train_ds
        model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose)  # verbose=2: a line an epoch
        if cache_path:
            os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
            tmp = f"{cache_path}.tmp.h5"
            model.save_weights(tmp)
            os.replace(tmp, cache_path)
    accuracy = None
    if validation_data is not None:  # already compiled with the accuracy metric
        accuracy = float(model.evaluate(validation_data, verbose=0, return_dict=True)["accuracy"])
    return model, {"seconds": time.time() - start, "cached": cached, "accuracy": accuracy}


def accuracy_of(model, dataset):
    """Top-1 accuracy of a classifier that outputs logits, on `(x, class index)` batches (recompiles it)."""
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return float(model.evaluate(dataset, verbose=0, return_dict=True)["accuracy"])
