"""The tensorflow-model-optimization flow: annotate, apply without an 8-bit input layer, train, binary."""

import numpy as np
import pytest

from bitat_tf import tfmot as bt_tfmot
from bitat_tf._compat import keras, tf
from conftest import make_cnn

tfmot = pytest.importorskip("tensorflow_model_optimization")


def _effective_kernels(model):
    """The kernels as the quantize wrappers apply them, per wrapped layer name."""
    out = {}
    for layer in model.layers:
        if hasattr(layer, "quantize_config") and hasattr(layer, "_weight_vars"):
            for weight, quantizer, qvars in layer._weight_vars:
                out[layer.layer.name] = quantizer(weight, False, qvars).numpy()
    return out


def test_annotate_apply_train_gives_binary_weights(digits):
    x, y, _, _ = digits
    model = make_cnn(keras)
    with bt_tfmot.quantize_scope():
        qat = tfmot.quantization.keras.quantize_apply(bt_tfmot.annotate(model, skip=["stem", "classifier"]),
                                                      scheme=bt_tfmot.BinaryScheme())
    names = [l.__class__.__name__ for l in qat.layers]
    assert "QuantizeLayer" not in names  # no 8-bit input layer
    assert names.count("QuantizeWrapperV2") + names.count("QuantizeWrapper") == 3
    qat.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                ["accuracy"])
    before = qat.get_weights()
    qat.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, qat.get_weights()))  # it trained
    kernels = _effective_kernels(qat)
    assert sorted(kernels) == ["block1_a", "block1_b", "block2_a"]
    for name, kernel in kernels.items():
        for c in range(kernel.shape[-1]):
            values = np.unique(np.abs(kernel[..., c]))
            assert len(values) == 1 and values[0] > 0, name  # +/- one alpha per output channel


def test_weight_quantizer_gradient_is_clipped_ste():
    q = bt_tfmot.BinaryWeightQuantizer()
    w = tf.Variable([[0.5, -2.0], [-0.25, 0.1]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(q(w, True, {}))
    grad = tape.gradient(y, w).numpy()
    alpha = np.abs(w.numpy()).mean(0)
    np.testing.assert_allclose(grad, np.where(np.abs(w.numpy()) <= 1, alpha, 0.0), rtol=1e-6)


def test_configs_serialize():
    for cls in bt_tfmot.CONFIGS.values():
        config = cls(binarize_output=True)
        assert cls(**config.get_config()).get_config() == {"binarize_output": True}
