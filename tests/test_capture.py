import numpy as np
import pytest

from bitat_tf import capture, graph
from bitat_tf._compat import keras, larq, tf
from bitat_tf.quantizers import ScaledSign, ThresholdSign


def _quant_conv(kind, **kwargs):
    if kind == "depthwise":
        return larq.layers.QuantDepthwiseConv2D(3, input_quantizer=ThresholdSign(),
                                                depthwise_quantizer=ScaledSign(channel_axes=2), **kwargs)
    return larq.layers.QuantConv2D(5, 3, input_quantizer=ThresholdSign(), kernel_quantizer=ScaledSign(),
                                   use_bias=False, **kwargs)


@pytest.mark.parametrize("kind,kwargs", [
    ("conv", dict(padding="same", pad_values=1.0)),
    ("conv", dict(padding="valid", strides=2)),
    ("conv", dict(padding="same", pad_values=1.0, strides=2)),
    ("conv", dict(padding="same", pad_values=1.0, dilation_rate=2)),
    ("depthwise", dict(padding="same", pad_values=1.0, use_bias=False)),
])
def test_patch_rows_times_kernel_equal_layer_output(kind, kwargs):
    """X @ W reproduces the binary convolution at the sampled positions (pad value 1 included)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 9, 9, 4)).astype("float32")
    layer = _quant_conv(kind, **kwargs)
    out = layer(x).numpy()
    layer.input_quantizer.beta.assign(rng.normal(size=4) * 0.3)
    out = layer(x).numpy()
    kernel = graph.kernel_of(layer)
    with larq.context.quantized_scope(True):
        effective = graph.weight_quantizer(layer)(kernel)
    rows, pos = capture.patch_matrix(layer, capture.binarized_inputs(layer, x), max_rows=40, seed=0,
                                     return_positions=True)
    assert set(np.unique(rows)) <= {-1.0, 1.0}
    product = rows @ capture.kernel_matrix(layer, effective).numpy()
    if kind == "depthwise":  # one row per (position, channel): compare channel by channel
        product = product.reshape(len(pos), 4, 4)[:, np.arange(4), np.arange(4)]
    np.testing.assert_allclose(product, out[pos[:, 0], pos[:, 1], pos[:, 2]], rtol=1e-4, atol=1e-4)


def test_dense_rows_are_its_inputs():
    layer = keras.layers.Dense(3)
    x = np.arange(12, dtype="float32").reshape(4, 3)
    rows = capture.patch_matrix(layer, x, max_rows=10, seed=0)
    np.testing.assert_array_equal(np.sort(rows, axis=0), x)


def test_capture_keeps_within_memory_budget():
    inp = keras.Input((16, 16, 8))
    mid = keras.layers.Conv2D(64, 1, name="wide")(inp)
    out = keras.layers.Conv2D(4, 3, name="target")(mid)
    model = keras.Model(inp, out)
    ds = tf.data.Dataset.from_tensor_slices((np.zeros((256, 16, 16, 8), "float32"), np.zeros(256))).batch(32)
    per_image_mb = 16 * 16 * 64 * 4 / 2**20  # 64 KiB
    captured = capture.capture_inputs(model, model.get_layer("target"), ds, max_batches=8, memory_mb=1, seed=0)
    assert captured.n_images == 256
    assert len(captured.raw) == int(1 / per_image_mb) == 16


def test_capture_of_empty_dataset_is_an_error():
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(2)(inp))
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 4), "float32"), np.zeros(0))).batch(2)
    with pytest.raises(ValueError, match="no batch"):
        capture.capture_inputs(model, model.layers[1], empty, max_batches=2, memory_mb=1, seed=0)


def test_rows_per_image_counts_output_positions():
    L = keras.layers
    i = keras.Input((8, 8, 4))
    conv = L.Conv2D(6, 3, strides=2, padding="same")
    depthwise, dense = L.DepthwiseConv2D(3, strides=2, padding="same"), L.Dense(3)
    keras.Model(i, [conv(i), depthwise(i), dense(L.Flatten()(i))])
    assert capture.rows_per_image(conv) == 4 * 4
    assert capture.rows_per_image(depthwise) == 4 * 4 * 4  # one row per (position, channel)
    assert capture.rows_per_image(dense) == 1
