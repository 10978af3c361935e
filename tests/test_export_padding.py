"""A ZeroPadding2D in front of a VALID convolution: LCE's converter fuses some into the wrong SAME padding;
the export's copy pads only what the convolution reads, so its file computes what Keras computes."""

import numpy as np
import pytest

from bitat_tf import export
from bitat_tf._compat import keras, larq
from bitat_tf.export_padding import trimmed_paddings
from bitat_tf.quantizers import ScaledSign, ThresholdSign

# (input size, ZeroPadding2D's padding, kernel, stride, the padding the convolution reads)
CASES = [
    (16, 3, 7, 2, ((3, 2), (3, 2))),  # Keras ResNet's and DenseNet's stem: LCE fused it as SAME's (2, 3)
    (15, 3, 7, 2, ((3, 3), (3, 3))),  # odd size: every row read
    (16, 1, 3, 2, ((1, 0), (1, 0))),
    (16, ((0, 1), (0, 1)), 3, 2, ((0, 1), (0, 1))),  # MobileNet's: read as it is
    (9, 2, 5, 1, ((2, 2), (2, 2))),
]


def _model(size, padding, kernel, stride):
    """The padding and its convolution as a stem, then one binary convolution (the export needs one)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    h = keras.layers.ZeroPadding2D(padding, name="pad")(inputs)
    h = keras.layers.Conv2D(8, kernel, strides=stride, use_bias=False, name="stem")(h)
    h = larq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False, name="bconv",
                                input_quantizer=ThresholdSign(), kernel_quantizer=ScaledSign(),
                                kernel_constraint="weight_clip")(h)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))


def _run(flatbuffer, x):
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    interpreter = Interpreter(flatbuffer, num_threads=1)
    return np.concatenate([interpreter.predict(example[None]) for example in x])


def test_lce_fuses_a_resnet_stem_padding_into_a_same_padding_that_is_not_its():
    """Upstream's fault, kept as a test: when LCE's converter gets this right, `export_padding` can go."""
    import larq_compute_engine as lce

    model = _model(16, 3, 7, 2)
    stem = keras.Model(model.inputs, model.get_layer("stem").output)
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    flatbuffer = lce.convert_keras_model(stem)
    assert "PAD" not in export.op_census(flatbuffer)  # fused
    assert np.abs(_run(flatbuffer, x) - stem(x).numpy()).max() > 0.05  # one pixel shifted


@pytest.mark.parametrize("size, padding, kernel, stride, read", CASES)
def test_the_export_pads_what_the_convolution_reads_and_agrees_with_keras(size, padding, kernel, stride, read):
    model = _model(size, padding, kernel, stride)
    wanted = {} if read == tuple(tuple(p) for p in model.get_layer("pad").padding) else {"pad": read}
    assert trimmed_paddings(model) == wanted
    x = np.random.default_rng(1).random((3, size, size, 3)).astype(np.float32)
    copy = export.inference_model(model)
    np.testing.assert_array_equal(copy.get_layer("stem")(copy.get_layer("pad")(x)).numpy(),
                                  model.get_layer("stem")(model.get_layer("pad")(x)).numpy())
    flatbuffer = export.export_lce(model)  # checks the file against Keras before returning it
    np.testing.assert_allclose(_run(flatbuffer, x), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_a_padding_read_by_something_else_is_left_alone():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    padded = keras.layers.ZeroPadding2D(3, name="pad")(inputs)
    a = keras.layers.Conv2D(4, 7, strides=2, name="a")(padded)
    b = keras.layers.Conv2D(4, 7, strides=2, name="b")(padded)
    assert trimmed_paddings(keras.Model(inputs, [a, b])) == {}
    pooled = keras.layers.MaxPooling2D(3, strides=2)(keras.layers.ZeroPadding2D(1, name="pad2")(inputs))
    assert trimmed_paddings(keras.Model(inputs, pooled)) == {}


def test_a_misconverted_stem_is_refused_even_where_the_output_does_not_show_it(monkeypatch):
    """A head that ignores its input (zero kernel) gives the same output whatever the stem computes, as
    random-weight models nearly do: the check of the layers before the first sign still sees the fault."""
    from bitat_tf import export_model, export_parity

    model = _model(16, 3, 7, 2)
    head = keras.layers.Dense(3, kernel_initializer="zeros", bias_initializer="ones", name="head")
    model = keras.Model(model.inputs, head(model.output))
    monkeypatch.setattr(export_model, "trimmed_paddings", lambda model: {})  # the export without its fix
    with pytest.raises(export.ExportError, match=r"before the first signs \(pad, stem\)"):
        export.export_lce(model)
    assert [front.output.name for front in export_parity._fronts(model, [model.get_layer("bconv")])] \
        == [model.get_layer("stem").output.name]
    bconv = larq.layers.QuantConv2D(4, 3, input_quantizer=ThresholdSign(), kernel_quantizer=ScaledSign())
    first_binary = keras.Sequential([keras.Input((8, 8, 3)), bconv])
    assert export_parity._fronts(first_binary, [bconv]) == []  # it reads the model's input: no front
