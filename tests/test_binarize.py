"""End to end on sklearn's digits: what `binarize` promises about the model it returns."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import graph
from bitat_tf._compat import keras, larq, tf

QUICK = dict(steps_per_layer=44, finetune_steps=22, learning_rate=3e-3, max_groups=8, capture_rows=512, capture_batches=2)


@pytest.fixture(scope="module")
def result(trained_cnn, digits_ds):
    train, test = digits_ds
    return bitat_tf.binarize(trained_cnn, train, validation_data=test,
                             config=bitat_tf.BinarizeConfig.paper(**QUICK), verbose=0)


def test_binarized_kernels_take_exactly_plus_minus_alpha_per_channel(result):
    for name in ("block1_a", "block1_b", "block2_a"):
        layer = result.model.get_layer(name)
        alpha = graph.weight_quantizer(layer).alpha.numpy()
        with larq.context.quantized_scope(True):
            effective = layer.kernel.numpy()
        assert np.all(alpha > 0)
        for c in range(effective.shape[-1]):
            assert set(np.unique(effective[..., c])) <= {alpha[c], -alpha[c]}, name


def test_binarized_layers_binarize_their_inputs(result):
    model = result.model
    for name in ("block1_a", "block1_b", "block2_a"):
        layer = model.get_layer(name)
        assert layer.input_quantizer.active and graph.weight_quantizer(layer).active
        feed = keras.Model(model.inputs, layer.input)
        x = next(iter(result_data()))[0]
        signs = layer.input_quantizer(feed(x)).numpy()
        assert set(np.unique(signs)) == {-1.0, 1.0}, name  # both signs: no channel collapsed
    assert type(model.get_layer("stem")) is keras.layers.Conv2D  # first layer kept full precision


def result_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    return tf.data.Dataset.from_tensor_slices(((d.images[:64] / 16.0).astype("float32")[..., None],
                                               d.target[:64])).batch(32)


def test_user_model_is_not_mutated(trained_cnn, digits_ds, result):
    before = [w.copy() for w in trained_cnn.get_weights()]
    assert result.model is not trained_cnn
    assert all(np.array_equal(a, b) for a, b in zip(before, trained_cnn.get_weights()))
    assert all(type(l).__module__.startswith("tf_keras") for l in trained_cnn.layers)


def test_report_and_history(result):
    report = result.report.to_dict()
    rows = {r["name"]: r for r in report["layers"]}
    assert not rows["stem"]["binarized"] and rows["block1_b"]["binarized"]
    assert rows["block1_b"]["d_in"] == 9 * 32 and rows["block1_b"]["groups"] <= 8
    # block1 holds two layers: its s and V are sized by both layers' groups
    assert rows["block1_b"]["transform_params"] == (rows["block1_a"]["groups"] + 8) ** 2 + rows["block1_a"][
        "groups"] + 8
    assert report["transform_params"] < report["unaggregated_params"]
    assert 0 <= report["binary_accuracy"] <= 1 and report["fp_accuracy"] > 0.5
    assert "Ratio of MACs that are binarized" in report["larq_summary"]
    assert "| block1_a | Conv2D | yes |" in result.report.to_markdown()
    quant = result.history["block1_a"]["quantize"]
    assert {"loss", "accuracy", "total_loss", "quant_loss", "l1_loss", "reg_loss"} <= set(quant)


def test_binary_model_keeps_most_accuracy(result):
    """Three of five layers binary after a few dozen steps: well above chance (10%)."""
    assert result.report.binary_accuracy > 0.6


def test_saved_binary_model_loads_with_custom_objects(result, tmp_path):
    path = tmp_path / "binary.keras"
    result.model.save(path)
    loaded = keras.models.load_model(path, custom_objects=bitat_tf.custom_objects())
    x = next(iter(result_data()))[0]
    np.testing.assert_allclose(loaded(x).numpy(), result.model(x).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", ["sequential", "cross", "filterwise", "svd"])
def test_every_variant_runs(trained_cnn, digits_ds, variant):
    train, _ = digits_ds
    config = bitat_tf.BinarizeConfig.paper(variant=variant, **{**QUICK, "steps_per_layer": 2, "finetune_steps": 0},
                                     keep_full_precision=["block2_a"])
    result = bitat_tf.binarize(trained_cnn, train.take(4), config=config, verbose=0)
    rows = {r.name: r for r in result.report.layers}
    if variant == "sequential":
        assert rows["block1_a"].transform_params is None
    else:
        assert rows["block1_b"].groups >= 1
