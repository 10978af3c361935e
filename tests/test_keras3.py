"""A Keras 3 model gets converted when it is made of common layers, and a clear refusal otherwise."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf._compat import keras, tf
from bitat_tf.errors import UnsupportedModelError
from bitat_tf.keras3 import to_tf_keras

keras3 = pytest.importorskip("keras")


def _functional():
    L = keras3.layers
    i = keras3.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(i)
    h = L.ReLU()(L.BatchNormalization()(h))
    a = L.Conv2D(8, 3, padding="same", name="block1_a")(h)
    h = L.Add()([L.BatchNormalization()(a), h])
    h = L.Conv2D(16, 3, strides=2, padding="same", name="block1_b")(L.PReLU(shared_axes=[1, 2])(h))
    out = L.Dense(10, name="head")(L.GlobalAveragePooling2D()(h))
    return keras3.Model(i, out)


def test_functional_keras3_model_converts_with_equal_outputs():
    k3 = _functional()
    k3.layers[2].set_weights([np.full(8, 1.5), np.full(8, 0.1), np.full(8, 0.2), np.full(8, 2.0)])  # BN stats
    converted = to_tf_keras(k3)
    assert isinstance(converted, keras.Model) and not isinstance(converted, keras3.Model)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(converted(x).numpy(), np.asarray(k3(x)), atol=1e-5)
    assert [l.name for l in converted.layers if l.weights] == [l.name for l in k3.layers if l.weights]


def test_sequential_keras3_model_converts():
    k3 = keras3.Sequential([keras3.Input((6,)), keras3.layers.Dense(4, activation="relu"),
                            keras3.layers.Dense(3)])
    x = np.ones((2, 6), "float32")
    np.testing.assert_allclose(to_tf_keras(k3)(x).numpy(), np.asarray(k3(x)), atol=1e-6)


def test_unknown_layers_are_listed():
    k3 = keras3.Sequential([keras3.Input((4,)), keras3.layers.Lambda(lambda t: t * 2, name="double"),
                            keras3.layers.Dense(2)])
    with pytest.raises(UnsupportedModelError, match=r"double \(Lambda\).*tf_keras"):
        to_tf_keras(k3)


def test_binarize_accepts_a_keras3_model(digits):
    x, y, _, _ = digits
    ds = tf.data.Dataset.from_tensor_slices((x[:128], y[:128])).batch(64)
    result = bitat_tf.binarize(_functional(), ds, config=bitat_tf.BinarizeConfig.paper(
        steps_per_layer=1, finetune_steps=0, bn_recalibration_batches=1, max_groups=4), verbose=0)
    assert [r.name for r in result.report.layers if r.binarized] == ["block1_a", "block1_b"]
