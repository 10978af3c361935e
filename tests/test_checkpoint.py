"""A run interrupted after a finished layer resumes there and ends where an uninterrupted run ends."""

import numpy as np
import pytest

import bitat_tf
from bitat_tf import graph, progressive
from bitat_tf._compat import larq, tf
from bitat_tf.errors import ConfigError

CONFIG = dict(steps_per_layer=6, finetune_steps=3, max_groups=4, capture_rows=256, capture_batches=2,
              bn_recalibration_batches=2, seed=3)


def _binary_kernels(model):
    out = {}
    for name in ("block1_a", "block1_b", "block2_a"):
        with larq.context.quantized_scope(True):
            out[name] = model.get_layer(name).kernel.numpy()
    return out


@pytest.fixture(scope="module")
def data(digits):
    x, y, _, _ = digits
    # Not shuffled: a resumed run must see the same batches as an uninterrupted one.
    return tf.data.Dataset.from_tensor_slices((x[:512], y[:512])).batch(64)


@pytest.mark.parametrize("extra", [{}, {"activation_warmup_steps": 4}, {"pass_normalization": "batch"}],
                         ids=["paper", "activation_warmup", "batch_statistics"])
def test_resume_after_interruption_matches_uninterrupted_run(trained_cnn, data, tmp_path, monkeypatch, extra):
    """With a warm-up, the resumed run must not redo it, yet binarize the remaining inputs again."""
    config = bitat_tf.BinarizeConfig.paper(**CONFIG, **extra)
    reference = bitat_tf.binarize(trained_cnn, data, config=config, verbose=0)

    calls = []
    original = progressive.ProgressiveRun.quantize_stage

    def dies_on_second_layer(self, names, block_index):
        calls.extend(names)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")
        return original(self, names, block_index)

    monkeypatch.setattr(progressive.ProgressiveRun, "quantize_stage", dies_on_second_layer)
    with pytest.raises(KeyboardInterrupt):
        bitat_tf.binarize(trained_cnn, data, config=config, checkpoint_dir=tmp_path, verbose=0)
    monkeypatch.setattr(progressive.ProgressiveRun, "quantize_stage", original)
    assert (tmp_path / "LATEST").read_text() == "stage-001"

    resumed_names = []
    monkeypatch.setattr(progressive.ProgressiveRun, "quantize_stage",
                        lambda self, names, b: resumed_names.extend(names) or original(self, names, b))
    resumed = bitat_tf.binarize(trained_cnn, data, config=config, checkpoint_dir=tmp_path, verbose=0)
    assert resumed_names == ["block1_b", "block2_a"]  # the finished layer is not redone
    for name, kernel in _binary_kernels(reference.model).items():
        np.testing.assert_allclose(_binary_kernels(resumed.model)[name], kernel, rtol=1e-5, atol=1e-6)
    assert resumed.report.to_dict()["layers"][1]["d_in"] == reference.report.to_dict()["layers"][1]["d_in"]
    assert graph.weight_quantizer(resumed.model.get_layer("block1_a")).active
    assert ("activation_warmup" in resumed.history) == ("activation_warmup_steps" in extra)  # from the checkpoint


def test_checkpoint_of_another_config_is_refused(trained_cnn, data, tmp_path):
    small = dict(CONFIG, keep_full_precision=["block1_b", "block2_a"])
    bitat_tf.binarize(trained_cnn, data, config=bitat_tf.BinarizeConfig.paper(**small), checkpoint_dir=tmp_path,
                      verbose=0)
    with pytest.raises(ConfigError, match="different model or config"):
        bitat_tf.binarize(trained_cnn, data, config=bitat_tf.BinarizeConfig.paper(**dict(small, seed=4)),
                          checkpoint_dir=tmp_path, verbose=0)
