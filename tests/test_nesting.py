"""Nested models (a base inside a transfer-learning model) flatten into one graph and binarize."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import export, nesting
from bitat_tf._compat import keras, tf
from bitat_tf.errors import UnsupportedModelError
from conftest import make_cnn

L = keras.layers
X = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
Y = np.arange(32) % 5
CHEAP = dict(steps_per_layer=1, finetune_steps=0, max_groups=4, bn_recalibration_batches=1, capture_batches=1)


def _base():
    inputs = keras.Input((8, 8, 1))
    h = L.Conv2D(8, 3, padding="same", name="stem")(inputs)
    h = L.BatchNormalization(name="stem_bn")(h)
    h = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv")(h)
    h = L.BatchNormalization(name="conv_bn")(h)
    return keras.Model(inputs, L.ReLU(name="relu")(h), name="base")


def _transfer():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), _base(), L.GlobalAveragePooling2D(name="gap"),
                             L.Dense(5, name="head")], name="transfer")


def test_transfer_learning_sequential_flattens_with_equal_outputs_and_path_names():
    model = _transfer()
    flat = nesting.flatten(model)
    assert not nesting.has_nested_models(flat)
    assert [l.name for l in flat.layers][1:] == ["base.stem", "base.stem_bn", "base.conv", "base.conv_bn",
                                                 "base.relu", "gap", "head"]
    np.testing.assert_allclose(flat(X).numpy(), model(X).numpy(), rtol=1e-6, atol=1e-6)


def test_models_nested_twice_in_a_functional_model_flatten():
    inner = keras.Sequential([keras.Input((8, 8, 16)), L.Conv2D(16, 1, name="mix")], name="inner")
    keras.utils.set_random_seed(1)
    middle_in = keras.Input((8, 8, 1))
    middle = keras.Model(middle_in, inner(_base()(middle_in)), name="middle")
    outer_in = keras.Input((8, 8, 1))
    h = L.Conv2D(16, 1, name="side")(outer_in)
    model = keras.Model(outer_in, L.Dense(5, name="head")(L.GlobalAveragePooling2D()(L.Add()([middle(outer_in), h]))))
    flat = nesting.flatten(model)
    assert "middle.inner.mix" in [l.name for l in flat.layers] and "middle.base.conv" in [l.name for l in flat.layers]
    np.testing.assert_allclose(flat(X).numpy(), model(X).numpy(), rtol=1e-6, atol=1e-6)


def test_binarize_takes_a_nested_model_and_names_layers_by_path():
    model = _transfer()
    before = [w.copy() for w in model.get_weights()]
    result = bitat_tf.binarize(model, tf.data.Dataset.from_tensor_slices((X, Y)).batch(16),
                               config=bitat_tf.BinarizeConfig.paper(**CHEAP), verbose=0)
    assert [r.name for r in result.report.layers if r.binarized] == ["base.conv"]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the user's model untouched
    assert export.op_census(export.export_lce(result.model))["LceBconv2d"] == 1


def test_a_nested_subclassed_model_is_named_in_the_error():
    class Block(keras.Model):
        def __init__(self):
            super().__init__(name="custom_block")
            self.conv = L.Conv2D(8, 3, padding="same")

        def call(self, x):
            return self.conv(x)

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, L.Dense(5)(L.GlobalAveragePooling2D()(Block()(inputs))))
    with pytest.raises(UnsupportedModelError, match="nested model 'custom_block' .*not a built Functional or "
                                                    "Sequential.*Functional API"):
        bitat_tf.binarize(model, tf.data.Dataset.from_tensor_slices((X, Y)).batch(16),
                          config=bitat_tf.BinarizeConfig.paper(**CHEAP), verbose=0)
