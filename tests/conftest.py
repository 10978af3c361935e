"""Shared fixtures. Keras 2 must be chosen before TensorFlow is first imported."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8x8 digits as (x_train, y_train, x_test, y_test), float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    y = d.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def make_cnn(keras, *, input_shape=(8, 8, 1), classes=10, width=16, seed=0):
    """stem -> two binarizable convs (one strided) -> a third -> GAP -> Dense classifier."""
    L = keras.layers
    init = keras.initializers.GlorotUniform(seed)
    i = keras.Input(input_shape)
    h = i
    for name, filters, stride in (("stem", width, 1), ("block1_a", 2 * width, 1),
                                  ("block1_b", 2 * width, 2), ("block2_a", 2 * width, 1)):
        h = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name,
                     kernel_initializer=init)(h)
        h = L.BatchNormalization(momentum=0.9, name=f"{name}_bn")(h)
        h = L.ReLU(name=f"{name}_relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    return keras.Model(i, L.Dense(classes, name="classifier", kernel_initializer=init)(h))


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A small CNN trained on digits (a few seconds), shared read-only by the tests."""
    from bitat_tf._compat import keras, tf

    keras.utils.set_random_seed(0)
    x, y, xt, yt = digits
    model = make_cnn(keras)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
    model.fit(x, y, batch_size=64, epochs=8, verbose=0)
    return model


@pytest.fixture(scope="session")
def digits_ds(digits):
    from bitat_tf._compat import tf

    x, y, xt, yt = digits
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1400, seed=0).batch(64)
    test = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(128)
    return train, test
