import numpy as np
import pytest

from bitat_tf import graph
from bitat_tf._compat import keras, larq
from bitat_tf.config import BinarizeConfig
from bitat_tf.errors import UnsupportedModelError
from conftest import make_cnn

L = keras.layers


def test_default_policy_keeps_first_and_classifier():
    plan = graph.make_plan(make_cnn(keras), BinarizeConfig())
    assert plan.binarized == ["block1_a", "block1_b", "block2_a"]
    assert plan["stem"].reason.startswith("first") and plan["classifier"].reason.startswith("classifier")
    assert plan.blocks == [["block1_a", "block1_b"], ["block2_a"]]  # from the blockN_ name prefixes


def test_overrides_by_name_and_type():
    model = make_cnn(keras)
    plan = graph.make_plan(model, BinarizeConfig.paper(keep_full_precision=["block1_b"], force_binarize=["Dense"]))
    assert plan.binarized == ["block1_a", "block2_a", "classifier"]
    assert plan["block1_b"].reason == "kept by keep_full_precision"


def test_depthwise_kept_unless_asked_and_unknown_types_kept():
    i = keras.Input((8, 8, 3))
    h = L.Conv2D(8, 3, name="stem")(i)
    h = L.DepthwiseConv2D(3, name="dw")(h)
    h = L.SeparableConv2D(8, 1, name="sep")(h)
    h = L.Conv2D(8, 1, name="pw")(h)
    model = keras.Model(i, L.Dense(2, name="head")(L.Flatten()(h)))
    plan = graph.make_plan(model, BinarizeConfig())
    assert plan.binarized == ["pw"]
    assert "depthwise" in plan["dw"].reason and "no binary counterpart" in plan["sep"].reason
    assert graph.make_plan(model, BinarizeConfig.paper(binarize_depthwise=True)).binarized == ["dw", "pw"]
    with pytest.raises(UnsupportedModelError, match="SeparableConv2D"):
        graph.make_plan(model, BinarizeConfig.paper(force_binarize=["sep"]))


def test_bad_models_are_refused_with_what_to_do():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), "float32"))
    with pytest.raises(UnsupportedModelError, match="subclassed.*Functional"):
        graph.make_plan(sub, BinarizeConfig())
    with pytest.raises(UnsupportedModelError, match="not built"):
        graph.make_plan(keras.Sequential([L.Dense(2), L.Dense(2)]), BinarizeConfig())
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3)])
    i = keras.Input((4,))
    with pytest.raises(UnsupportedModelError, match="nested"):
        graph.make_plan(keras.Model(i, L.Dense(2)(inner(i))), BinarizeConfig())
    with pytest.raises(UnsupportedModelError, match="no layer to binarize"):
        graph.make_plan(keras.Sequential([keras.Input((4,)), L.Dense(3), L.Dense(2)]), BinarizeConfig())
    with pytest.raises(UnsupportedModelError, match="spelling"):
        graph.make_plan(make_cnn(keras), BinarizeConfig.paper(keep_full_precision=["no_such_layer"]))


def test_explicit_and_fixed_size_blocks():
    model = make_cnn(keras)
    assert graph.make_plan(model, BinarizeConfig.paper(blocks=1)).blocks == [["block1_a"], ["block1_b"], ["block2_a"]]
    custom = [["block1_a"], ["block1_b", "block2_a"]]
    assert graph.make_plan(model, BinarizeConfig.paper(blocks=custom)).blocks == custom
    with pytest.raises(UnsupportedModelError, match="exactly once"):
        graph.make_plan(model, BinarizeConfig.paper(blocks=[["block1_a"]]))
    assert graph.make_plan(model, BinarizeConfig.paper(variant="intra")).blocks == [["block1_a"], ["block1_b"],
                                                                              ["block2_a"]]


def test_larq_twin_matches_original_until_switched_on():
    model = make_cnn(keras)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    twin = graph.to_larq(model, graph.make_plan(model, BinarizeConfig()))
    assert isinstance(twin.get_layer("block1_a"), larq.layers.QuantConv2D)
    assert type(twin.get_layer("stem")) is L.Conv2D
    np.testing.assert_allclose(twin(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
    layer = twin.get_layer("block1_a")
    graph.weight_quantizer(layer).init_from(graph.kernel_of(layer))
    graph.set_binary(layer, True)
    assert layer.pad_values == 1.0 and not np.allclose(twin(x).numpy(), model(x).numpy())
    graph.set_binary(layer, False)
    np.testing.assert_allclose(twin(x).numpy(), model(x).numpy(), rtol=1e-6, atol=1e-6)
