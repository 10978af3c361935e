"""Thresholds folded into the offset before them: fewer ops per binary convolution, the same outputs."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import export, export_fold
from bitat_tf._compat import keras, larq, tf
from bitat_tf.quantizers import ScaledSign, ThresholdSign

TINY = dict(steps_per_layer=1, finetune_steps=0, final_finetune_steps=1, capture_rows=256, capture_batches=1,
            bn_recalibration_batches=2)


@pytest.fixture(scope="module")
def binary(trained_cnn, digits_ds):
    return bitat_tf.binarize(trained_cnn, digits_ds[0], config=bitat_tf.BinarizeConfig(**TINY), verbose=0).model


@pytest.fixture(scope="module")
def files(binary):
    return export.export_lce(binary, fold_thresholds=False), export.export_lce(binary)


def test_folding_removes_the_sub_and_relu_of_every_threshold_and_bitpacks(binary, files):
    """stem -> BN -> ReLU -> sign -> bconv -> BN -> ReLU -> sign -> bconv ...: every threshold folds into the
    BatchNormalization before it, and the two binary convolutions that feed another write bitpacked output."""
    before, after = (export.census_per_bconv(f) for f in files)
    assert before["LceBconv2d"] == after["LceBconv2d"] == (3, 1.0)
    assert before["SUB"] == (3, 1.0) and "SUB" not in after
    assert before["RELU"][0] == 3 and after["RELU"][0] == 1  # the last block's ReLU feeds the pooling
    assert before["LceQuantize"][0] == 3 and after["LceQuantize"][0] == 1
    assert before[export.BITPACKED][0] == 0 and after[export.BITPACKED][0] == 2
    assert [(f.layer, f.offset, f.activation) for f in export_fold.threshold_folds(binary)] == [
        ("block1_a", "stem_bn", "stem_relu"), ("block1_b", "block1_a_bn", "block1_a_relu"),
        ("block2_a", "block1_b_bn", "block1_b_relu")]


def test_folded_file_gives_the_keras_outputs(binary, files, digits_ds):
    test = digits_ds[1]
    x = next(iter(test))[0]
    np.testing.assert_allclose(export.inference_model(binary)(x).numpy(), binary(x).numpy(), rtol=1e-5, atol=1e-5)
    unfolded, folded = (export.verify_export(binary, f, test) for f in files)
    assert folded.bconv_share == 1.0 and not folded.not_converted
    assert folded.top1_agreement >= 0.98 and folded.within_tolerance >= 0.98
    assert folded.max_abs_diff <= max(1e-3, 2 * unfolded.max_abs_diff)


def _mixed_model():
    """A fold of every kind and one that must not happen: a biased stem into a binary conv; a BN and a
    ReLU6 into a binary conv, with thresholds below 0, inside (0, 6] and above 6; a Dense's bias into a
    binary Dense; and a ReLU read by a binary conv and a shortcut, whose SUB stays."""
    keras.utils.set_random_seed(1)
    L, rng = keras.layers, np.random.default_rng(1)

    def binary(filters, kernel, name):
        return larq.layers.QuantConv2D(filters, kernel, padding="same", pad_values=1.0, use_bias=False, name=name,
                                       input_quantizer=ThresholdSign(), kernel_quantizer=ScaledSign(),
                                       kernel_constraint="weight_clip")

    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(16, 3, padding="same", name="stem")(inputs)
    h = L.ReLU(6.0, name="relu1")(L.BatchNormalization(name="bn1")(binary(16, 3, "bconv1")(h)))
    h = L.ReLU(name="relu2")(L.BatchNormalization(name="bn2")(binary(32, 1, "bconv2")(h)))
    h = L.Add(name="shortcut")([binary(32, 3, "bconv3")(h), h])
    h = L.Dense(16, name="fc")(L.GlobalAveragePooling2D(name="pool")(h))
    outputs = larq.layers.QuantDense(10, name="bdense", input_quantizer=ThresholdSign(),
                                     kernel_quantizer=ScaledSign(), kernel_constraint="weight_clip")(h)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 1, n), rng.normal(0, 1, n),
                               rng.uniform(0.5, 2, n)])
        if isinstance(getattr(layer, "input_quantizer", None), ThresholdSign):
            n = layer.input_quantizer.beta.shape[0]
            layer.input_quantizer.beta.assign(rng.normal(0, 0.5, n))
    beta = model.get_layer("bconv2").input_quantizer.beta.numpy()
    beta[:8] = [-1.0, 0.0, 0.01, 3.0, 6.0, 6.5, 10.0, -0.2]  # every case of the ReLU6 fold
    model.get_layer("bconv2").input_quantizer.beta.assign(beta)
    return model


def test_each_kind_of_fold_keeps_the_outputs_and_leaves_the_model_given_alone():
    model = _mixed_model()
    weights = [w.copy() for w in model.get_weights()]
    folds = export_fold.threshold_folds(model)
    assert [(f.layer, f.offset, f.activation, f.clip) for f in folds] == [
        ("bconv1", "stem", None, None), ("bconv2", "bn1", "relu1", (0.0, 6.0)), ("bdense", "fc", None, None)]
    x = np.random.default_rng(2).normal(0, 1, (256, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(export.inference_model(model)(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    before, after = export.export_lce(model, fold_thresholds=False), export.export_lce(model)
    # TFLite's converter itself moves a constant SUB into a convolution's bias (the stem's), not past a BN
    # and a ReLU, nor past the reshape in front of the binary Dense; after folding only bconv3's stays.
    assert export.op_census(before)["SUB"] == 3 and export.op_census(after)["SUB"] == 1
    assert export.bitpacked_outputs(after) == 1  # bconv1 -> bn1 -> sign -> bconv2
    check = export.verify_export(model, after, tf.data.Dataset.from_tensor_slices(x).batch(64))
    assert check.lce_bconv2d == 4 and check.top1_agreement >= 0.98 and check.within_tolerance >= 0.95
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def test_census_comparison_with_a_zoo_model(files):
    """Ours beside QuickNet as LCE converts it: the SUB and ReLU per bconv are gone after folding."""
    larq_zoo = pytest.importorskip("larq_zoo")
    import larq_compute_engine as lce

    reference = lce.convert_keras_model(larq_zoo.sota.QuickNetSmall(weights=None, input_shape=(32, 32, 3),
                                                                    num_classes=10))
    before, after = (export.compare_census(f, reference, names=("bitat", "QuickNet")) for f in files)
    assert before.extra_per_bconv("SUB") == 1.0 and after.extra_per_bconv("SUB") == 0.0
    assert before.extra_per_bconv("LceQuantize") == 0.0 and after.extra_per_bconv("LceQuantize") < 0
    ops = after.to_dict()["ops"]
    assert ops["LceBconv2d"]["QuickNet"]["count"] > 0 and ops["ADD"]["QuickNet"]["per_bconv"] == 1.0
    assert "SUB" not in ops and "SUB" in before.to_dict()["ops"]
    table = after.to_markdown().splitlines()
    assert table[0].startswith("| op | bitat: count") and table[2].startswith("| LceBconv2d | 3 | 1.00 |")
