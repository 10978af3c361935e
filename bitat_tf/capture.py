"""Input capture: the rows of the patch matrix X that a layer actually multiplies, in bounded memory.

For a Conv2D with kernel (kh, kw, cin, cout) a row of X is one receptive field flattened in the kernel's
(kh, kw, cin) order, taken with the layer's own strides, dilation and padding, so that
`X @ kernel.reshape(-1, cout)` equals the convolution's output at that position (without bias). A Dense
layer's rows are its inputs; a DepthwiseConv2D's rows are single-channel (kh, kw) patches pooled over
channels.
"""

import dataclasses

import numpy as np

from bitat_tf._compat import keras, tf
from bitat_tf.errors import DatasetError, UnsupportedModelError
from bitat_tf.quantizers import threshold_init

L = keras.layers


@dataclasses.dataclass
class Capture:
    """Inputs captured for one layer."""

    raw: np.ndarray  # (n_images, ..., channels): the layer's real-valued inputs, for the threshold
    n_images: int


def layer_input_model(model, layer):
    """A model from `model`'s inputs to the tensor `layer` consumes."""
    try:
        tensor = layer.input
    except AttributeError as err:
        raise UnsupportedModelError(
            f"layer {layer.name!r} is called more than once (shared layer); bitat_tf binarizes layers with "
            "a single input. Give each use its own layer.") from err
    if isinstance(tensor, (list, tuple)):
        raise UnsupportedModelError(f"layer {layer.name!r} takes several inputs; it cannot be binarized.")
    return keras.Model(model.inputs, tensor)


def capture_inputs(model, layer, dataset, *, max_batches, memory_mb, seed, feed=None):
    """Run the model up to `layer` on a few batches and keep a bounded random sample of its inputs.

    Feature maps are kept whole (patches need neighbours); the number of images kept is capped so that
    they take at most `memory_mb` megabytes, whatever the dataset size. `dataset` is a dataset or any
    iterable of batches; `feed` (x -> the layer's input) replaces the sub-model built here when given.
    """
    if feed is None:
        sub_model = layer_input_model(model, layer)
        feed = lambda x: sub_model(x, training=False)  # noqa: E731
    batches = dataset.take(max_batches) if isinstance(dataset, tf.data.Dataset) else dataset
    return capture_many([layer], ([feed(x)] for x, *_ in batches), memory_mb=memory_mb, seed=seed)[0]


def capture_many(layers, inputs, *, memory_mb, seed):
    """Bounded samples of several layers' inputs: `inputs` yields, per batch, a list of each layer's input
    in `layers`' order (however they were computed: a forward pass of their own or one that also
    recalibrates BatchNorm statistics).

    The memory bound is shared: each layer keeps at most `memory_mb / len(layers)` megabytes of images.
    """
    rng = np.random.default_rng(seed)
    budgets = [max(1, int(memory_mb * 2**20 / len(layers) // max(int(np.prod(layer.input_shape[1:])) * 4, 1)))
               for layer in layers]
    kept, seen = [[] for _ in layers], 0
    for outputs in inputs:
        for pool, budget, out in zip(kept, budgets, outputs):
            pool.append(np.asarray(out))
            if sum(len(k) for k in pool) > budget:  # reservoir-like: drop at random to stay in budget
                merged = np.concatenate(pool)
                pool[:] = [merged[rng.choice(len(merged), budget, replace=False)]]
        seen += len(outputs[0])
    if not seen:
        raise DatasetError("the dataset yielded no batch while capturing layer inputs; pass a non-empty "
                           "dataset of (x, y) batches.")
    return [Capture(np.concatenate(pool), seen) for pool in kept]


def rows_per_image(layer):
    """Rows of X one image gives `layer`: its output positions (times the channels for a depthwise
    convolution; one per input vector for Dense). 1 when a size is unknown."""
    convolution = isinstance(layer, (L.Conv2D, L.DepthwiseConv2D))  # DepthwiseConv2D is no Conv2D
    try:
        shape = layer.output_shape if convolution else layer.input_shape
    except (AttributeError, RuntimeError):  # called more than once: no single shape
        return 1
    sizes = shape[1:3] if convolution else shape[1:-1]
    if isinstance(layer, L.DepthwiseConv2D):
        sizes = [*sizes, layer.input_shape[-1]]
    if any(d is None for d in sizes):
        return 1
    return max(1, int(np.prod(sizes)))


def binarized_inputs(layer, raw):
    """What the layer multiplies: its input quantizer applied to `raw` (identity when inactive)."""
    return layer.input_quantizer(tf.constant(raw)).numpy() if layer.input_quantizer else raw


def patch_matrix(layer, inputs, *, max_rows, seed, return_positions=False):
    """Sample up to `max_rows` rows of X for `layer` from `inputs` (already binarized if it should be)."""
    rng = np.random.default_rng(seed)
    if isinstance(layer, L.Dense):
        rows = inputs.reshape(-1, inputs.shape[-1])
        pick = np.sort(rng.choice(len(rows), min(max_rows, len(rows)), replace=False))
        return (rows[pick], pick) if return_positions else rows[pick]
    padded, out_hw = _pad(layer, inputs)
    n = len(inputs)
    total = n * out_hw[0] * out_hw[1]
    flat = np.sort(rng.choice(total, min(max_rows, total), replace=False))
    img, rest = np.divmod(flat, out_hw[0] * out_hw[1])
    oi, oj = np.divmod(rest, out_hw[1])
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    ii = oi[:, None, None] * sh + np.arange(kh)[None, :, None] * dh  # (rows, kh, 1)
    jj = oj[:, None, None] * sw + np.arange(kw)[None, None, :] * dw  # (rows, 1, kw)
    patches = padded[img[:, None, None], ii, jj]  # (rows, kh, kw, cin)
    if isinstance(layer, L.DepthwiseConv2D):  # one row per (position, channel)
        patches = np.moveaxis(patches, -1, 1).reshape(-1, kh * kw)
    else:
        patches = patches.reshape(len(flat), -1)
    positions = np.stack([img, oi, oj], axis=1)
    return (patches, positions) if return_positions else patches


def _pad(layer, inputs):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise UnsupportedModelError(f"layer {layer.name!r} uses channels_first; only channels_last is "
                                    "supported. Rebuild the model with data_format='channels_last'.")
    h, w = inputs.shape[1:3]
    pads, out_hw = [], []
    for size, k, s, d in zip((h, w), layer.kernel_size, layer.strides, layer.dilation_rate):
        span = d * (k - 1) + 1
        if layer.padding == "same":
            out = -(-size // s)
            total = max((out - 1) * s + span - size, 0)
            pads.append((total // 2, total - total // 2))
        else:
            out = (size - span) // s + 1
            pads.append((0, 0))
        out_hw.append(out)
    value = float(tf.convert_to_tensor(getattr(layer, "pad_values", 0.0)))  # a variable during a run
    padded = np.pad(inputs, [(0, 0), *pads, (0, 0)], constant_values=value)
    return padded, out_hw


def kernel_matrix(layer, kernel):
    """The kernel as the (d_in, d_out) matrix that multiplies rows of X."""
    kernel = tf.convert_to_tensor(kernel)
    if isinstance(layer, L.DepthwiseConv2D):
        kh, kw, cin, mult = kernel.shape
        return tf.reshape(kernel, (kh * kw, cin * mult))
    return tf.reshape(kernel, (-1, kernel.shape[-1]))


def init_threshold(layer, capture, method):
    """Initialise the layer's input threshold beta from the captured inputs."""
    layer.input_quantizer.beta.assign(threshold_init(capture.raw, method))


__all__ = ["Capture", "capture_inputs", "capture_many", "binarized_inputs", "patch_matrix", "kernel_matrix",
           "init_threshold", "layer_input_model", "rows_per_image"]
