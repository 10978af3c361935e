"""Zero padding in front of a convolution, trimmed to what the convolution reads, in the copy an export converts.

LCE's converter (`-tfl-fuse-padding`, larq-compute-engine 0.16) fuses a `PAD` in front of a VALID
convolution into the convolution's SAME padding when the pad splits as SAME would split it (before = total
// 2, after = the rest) and the output has SAME's size, but it does not check that the total is the one
SAME pads. Keras' ResNet and DenseNet stems, `ZeroPadding2D(3)` and then a 7x7 convolution of stride 2,
pass that test on an even input size with a total of 6 where SAME pads 5 (2 before, 3 after): the file's
stem then reads every image shifted by one pixel. Measured on the DenseNet121 of
`results/applications.json`: the stem's output off by up to 1.0 where it reaches 1.9, and the same on a
freshly built DenseNet121 and on `ZeroPadding2D(3)` + `Conv2D(8, 7, strides=2)` alone (TensorFlow Lite's
own converter keeps the `PAD` and is exact).

The last rows and columns of such a padding are never read: the convolution's windows end before them. The
export's copy pads only up to the last row and column a window reads, which computes the same values, and
then the total is SAME's whenever the converter's test passes, so a fused padding is the right one.
"""

from bitat_tf._compat import keras
from bitat_tf.export_fold import readers_of

_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)  # Larq's QuantConv2D is a Conv2D


def trimmed_paddings(model):
    """{name of a ZeroPadding2D of `model`: the padding ((top, bottom), (left, right)) its only reader, a VALID
    convolution, reads} for each padding that reads more than that (the model is only read)."""
    readers = readers_of(model)
    trims = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.ZeroPadding2D) or layer.data_format != "channels_last" \
                or len(layer.inbound_nodes) != 1:
            continue
        reader = readers.get(id(layer.output), [])
        if len(reader) != 1 or not _valid_convolution(reader[0]):
            continue
        sizes = tuple(layer.input_shape[1:3])
        if None in sizes:
            continue
        conv = reader[0]
        padding = tuple(
            (before, min(after, max(0, _read_after(size, before, after, k, s, d))))
            for size, (before, after), k, s, d in zip(sizes, layer.padding, conv.kernel_size, conv.strides,
                                                      conv.dilation_rate))
        if padding != tuple(tuple(p) for p in layer.padding):
            trims[layer.name] = padding
    return trims


def _valid_convolution(layer):
    return (isinstance(layer, _CONVOLUTIONS) and not isinstance(layer, keras.layers.Conv2DTranspose)
            and layer.padding == "valid" and layer.data_format == "channels_last" and len(layer.inbound_nodes) == 1)


def _read_after(size, before, after, kernel, stride, dilation):
    """Padding rows after the input that a VALID window of `kernel` (dilated) at `stride` reads."""
    span = (kernel - 1) * dilation + 1
    outputs = (size + before + after - span) // stride + 1
    return (outputs - 1) * stride + span - (size + before)


__all__ = ["trimmed_paddings"]
