"""Binary convolutions must reach the LCE flatbuffer as LceBconv2d and compute what Keras computes."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import export, export_model
from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError

CONFIG = dict(steps_per_layer=8, finetune_steps=4, max_groups=8, capture_rows=512, capture_batches=2,
              bn_recalibration_batches=4)


@pytest.fixture(scope="module")
def binary(trained_cnn, digits_ds):
    train, _ = digits_ds
    return bitat_tf.binarize(trained_cnn, train, config=bitat_tf.BinarizeConfig.paper(**CONFIG), verbose=0)


@pytest.fixture(scope="module")
def flatbuffer(binary):
    return export.export_lce(binary.model)


def test_every_binarized_conv_becomes_lce_bconv2d(binary, flatbuffer):
    ops = export.op_census(flatbuffer)
    # Each threshold folds into the BatchNorm before it: no SUB, and the two binary convolutions that feed
    # another write bitpacked output, so only the first one's input needs an LceQuantize.
    assert ops["LceBconv2d"] == 3 and ops["LceQuantize"] == 1 and "SUB" not in ops
    assert export.bitpacked_outputs(flatbuffer) == 2
    assert ops["CONV_2D"] == 1  # the full-precision stem only


def test_keras_and_lce_interpreter_agree(binary, flatbuffer, digits_ds):
    _, test = digits_ds
    check = export.verify_export(binary.model, flatbuffer, test, report=binary.report)
    assert check.binarized_convolutions == 3 and check.bconv_share == 1.0 and not check.not_converted
    # The binary part is exact; float accumulation order may flip a pre-sign value that sits within rounding
    # of its threshold on some CPUs, which moves that example's outputs: judge shares, not the worst case.
    assert check.within_tolerance >= 0.98 and check.top1_agreement >= 0.98
    assert binary.report.to_dict()["export"]["lce_bconv2d"] == 3
    assert "top-1 agreement" in check.to_markdown()


def _with_dead_channel(model, layer_names, channel=3):
    """A copy of `model` in which one channel of each named layer has scale alpha = 0."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name in layer_names:
        alpha = copy.get_layer(name).kernel_quantizer.alpha
        alpha.assign(tf.tensor_scatter_nd_update(alpha, [[channel]], [0.0]))
    return copy


def test_a_dead_channel_before_a_batchnorm_still_exports_as_lce_bconv2d(binary, digits_ds):
    """The user's case: two of three layers with a channel of scale 0. Each is read by a BatchNormalization
    alone, which absorbs the channel's constant exactly: three LceBconv2d, same outputs as the model given."""
    model = _with_dead_channel(binary.model, ["block1_b", "block2_a"])
    flatbuffer = export.export_lce(model)
    ops = export.op_census(flatbuffer)
    assert ops["LceBconv2d"] == 3 and "LceDequantize" not in ops and ops["CONV_2D"] == 1
    check = export.verify_export(model, flatbuffer, digits_ds[1])
    assert check.bconv_share == 1.0 and check.within_tolerance >= 0.98 and check.top1_agreement >= 0.98
    assert model.get_layer("block1_b").kernel_quantizer.alpha.numpy()[3] == 0.0  # the model given is untouched
    assert model.get_layer("block1_b_bn").gamma.numpy()[3] != 0.0


def test_lce_flatbuffer_is_smaller_than_float_tflite(trained_cnn, flatbuffer, tmp_path):
    path = tmp_path / "fp.tflite"
    fp = export.export_tflite(trained_cnn, path)
    assert path.read_bytes() == fp
    assert "LceBconv2d" not in export.op_census(fp)
    assert len(flatbuffer) < len(fp)


@pytest.fixture(scope="module")
def binary_dense(trained_cnn, digits_ds):
    train, _ = digits_ds
    return bitat_tf.binarize(trained_cnn, train.take(4), config=bitat_tf.BinarizeConfig.paper(
        **{**CONFIG, "steps_per_layer": 1, "finetune_steps": 0},
        keep_full_precision=["block1_a", "block1_b", "block2_a"], force_binarize=["classifier"]), verbose=0)


def test_binarized_dense_exports_as_1x1_bconv(binary_dense, digits_ds):
    _, test = digits_ds
    rebuilt = export.inference_model(binary_dense.model)
    x = next(iter(test))[0]
    np.testing.assert_allclose(rebuilt(x).numpy(), binary_dense.model(x).numpy(), rtol=1e-5, atol=1e-5)
    flatbuffer = export.export_lce(binary_dense.model)
    assert export.op_census(flatbuffer)["LceBconv2d"] == 1
    check = export.verify_export(binary_dense.model, flatbuffer, test)
    assert check.binarized_convolutions == 1 and check.lce_bconv2d == 1 and not check.not_converted
    assert check.within_tolerance >= 0.98 and check.top1_agreement >= 0.98


def test_binarized_dense_kept_is_reported_as_not_converted(binary_dense, digits_ds):
    _, test = digits_ds
    flatbuffer = export.export_lce(binary_dense.model, dense="keep")
    assert "LceBconv2d" not in export.op_census(flatbuffer)
    check = export.verify_export(binary_dense.model, flatbuffer, test, dense="keep", max_batches=1)
    assert check.binarized_convolutions == 0 and "classifier (QuantDense" in check.not_converted[0]
    assert check.top1_agreement >= 0.98
    with pytest.raises(ConfigError, match="dense must be one of"):
        export.export_lce(binary_dense.model, dense="drop")


def test_unknown_options_are_refused(binary):
    with pytest.raises(ConfigError, match="unknown options \\['quantize'\\]"):
        export.export_lce(binary.model, quantize=True)
    with pytest.raises(ConfigError, match="export_tflite"):
        export.export_tflite(binary.model, target="arm")


def test_cli_export_of_a_saved_model(binary, tmp_path, capsys):
    from bitat_tf.cli import main

    saved = tmp_path / "binary.keras"
    binary.model.save(saved)
    assert main(["export", str(saved), str(tmp_path / "m.tflite"), "--verify-data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "LceBconv2d': 3" in out and "became LceBconv2d: 3 of 3" in out


def test_cli_export_with_calibrated_int8(binary, tmp_path, capsys):
    from bitat_tf.cli import main

    saved = tmp_path / "binary.keras"
    binary.model.save(saved)
    assert main(["export", str(saved), str(tmp_path / "m.tflite"), "--int8", "head"]) != 0
    assert "--int8 needs --format lce and --calibration-data" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()
    assert main(["export", str(saved), str(tmp_path / "m.tflite"), "--int8", "head", "--calibration-data", "digits",
                 "--verify-data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "became LceBconv2d: 3 of 3" in out and "'FULLY_CONNECTED'" in out
    ops = export.operators((tmp_path / "m.tflite").read_bytes())
    assert [types[0] for name, types in ops if name == "FULLY_CONNECTED"] == ["INT8"]


def test_int8_option_puts_the_full_precision_layers_in_int8(binary, digits_ds):
    """With LCE's default int8 range the stem conv and the classifier take int8; binary convs stay binary."""
    flatbuffer = export.export_lce(binary.model, experimental_default_int8_range=(-3.0, 3.0))
    ops = export.operators(flatbuffer)
    assert [types[0] for name, types in ops if name in ("CONV_2D", "FULLY_CONNECTED")] == ["INT8", "INT8"]
    assert export.op_census(flatbuffer)["LceBconv2d"] == 3
    check = export.verify_export(binary.model, flatbuffer, digits_ds[1])
    assert check.bconv_share == 1.0 and check.top1_agreement > 0.3  # uncalibrated: runs, not exact


def test_calibrated_int8_runs_the_head_in_int8_with_measured_ranges(binary, digits, digits_ds):
    """int8_calibration puts the classifier (and the pooling before it) in int8 with ranges measured on the
    training data; the stem stays float and every binary conv stays LceBconv2d. The FakeQuant ranges are
    the measured extremes of each tensor."""

    train = tf.data.Dataset.from_tensor_slices((digits[0][:640], digits[1][:640])).batch(64)  # same batches twice
    test = digits_ds[1]
    inference = export.inference_model(binary.model)
    head = export_model._int8_layer_names(inference, "head")
    assert len(head) == 4 and head[:2] == ["block2_a_bn", "block2_a_relu"] and head[3] == "classifier"
    assert head[2].startswith("global_average_pooling2d")  # Keras numbers auto-named layers per session
    calibrated = export.calibrated_model(inference, train, layers="head")
    fakes = [l for l in calibrated.layers if isinstance(l, export.FakeQuant)]
    assert len(fakes) == len(head) + 1  # a chain: the last binary conv's output, then each head layer's
    logits = np.concatenate([binary.model(x, training=False).numpy() for x, _ in train])
    assert fakes[-1].minimum == pytest.approx(min(logits.min(), 0), rel=1e-5)
    assert fakes[-1].maximum == pytest.approx(max(logits.max(), 0), rel=1e-5)
    flatbuffer = export.export_lce(binary.model, int8_calibration=train)
    ops = dict((name, types) for name, types in export.operators(flatbuffer) if name in ("CONV_2D", "FULLY_CONNECTED"))
    assert ops["CONV_2D"][0] == "FLOAT32" and ops["FULLY_CONNECTED"][0] == "INT8"
    check = export.verify_export(binary.model, flatbuffer, test)
    # 256 levels over the logits' range: only near-ties can change the top-1 class.
    assert check.bconv_share == 1.0 and check.top1_agreement >= 0.9


def test_calibrated_int8_refuses_bad_arguments(binary, digits_ds):
    train, _ = digits_ds
    with pytest.raises(ConfigError, match="not both"):
        export.export_lce(binary.model, int8_calibration=train, experimental_default_int8_range=(-3, 3))
    with pytest.raises(ConfigError, match="int8_layers must be 'head', 'all' or a list"):
        export.export_lce(binary.model, int8_calibration=train, int8_layers="stem")
    with pytest.raises(ConfigError, match=r"\['block1_a'\] are not full-precision layers"):
        export.export_lce(binary.model, int8_calibration=train, int8_layers=["block1_a"])
    with pytest.raises(bitat_tf.DatasetError, match="no batches"):
        export.export_lce(binary.model, int8_calibration=train.take(0))


def test_deployment_figures_writes_both_files_and_reports(trained_cnn, binary, digits_ds, tmp_path):
    check, figures = export.deployment_figures(binary.model, trained_cnn, digits_ds[1], stem=str(tmp_path / "m"))
    assert (tmp_path / "m.lce.tflite").stat().st_size == figures["lce_bytes"] == check.flatbuffer_bytes
    assert (tmp_path / "m.fp.tflite").stat().st_size == figures["tflite_fp_bytes"]
    assert figures["lce_bconv2d"] == 3 and figures["lce_x86_ms_per_image"] > 0
