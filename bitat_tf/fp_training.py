"""Training the full-precision model that BiTAT starts from, cached on disk by recipe."""

import os
import time

from bitat_tf._compat import keras


def train_full_precision(model, train_ds, *, epochs, learning_rate=2e-3, validation_data=None,
                         cache_path=None, verbose=1):
    """Adam with cosine decay on sparse crossentropy from logits; weights cached at `cache_path`.

    # Arguments
        cache_path: a `.h5` weights file named by the caller after its recipe (model, width, data, epochs);
            when it exists the weights are loaded instead of trained.

    # Returns
        (model, info): the compiled model and `{"seconds", "cached", "accuracy"}` (accuracy on
        `validation_data`, or None).
    """
    batches = int(train_ds.cardinality())
    if batches < 0:  # unknown or infinite: count one pass
        batches = int(train_ds.reduce(0, lambda n, _: n + 1))
    steps = batches * epochs
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    start, cached = time.time(), bool(cache_path and os.path.exists(cache_path))
    if cached:
        model.load_weights(cache_path)
    else:
        model.fit(train_ds, epochs=epochs, verbose=verbose)  # verbose=2: a line per epoch
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
