"""No silent float fallback: an export either holds every binarized layer as LceBconv2d and runs, or says why."""

import pytest

from bitat_tf import export
from bitat_tf._compat import keras, larq, tf
from bitat_tf.export_checks import ExportError, ExportWarning, FloatFallbackError
from bitat_tf.quantizers import ScaledSign, ThresholdSign

def _unabsorbable(dead_channel=None):
    """stem -> BN -> binary conv with a bias and no BatchNormalization after it -> GAP -> Dense."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inputs = keras.Input((8, 8, 1))
    h = L.BatchNormalization(name="stem_bn")(L.Conv2D(8, 3, padding="same", name="stem")(inputs))
    h = larq.layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, name="bconv", input_quantizer=ThresholdSign(),
                                kernel_quantizer=ScaledSign(), kernel_constraint="weight_clip")(h)
    model = keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(h)))
    if dead_channel is not None:
        alpha = model.get_layer("bconv").kernel_quantizer.alpha
        alpha.assign(tf.tensor_scatter_nd_update(alpha, [[dead_channel]], [0.0]))
    return model


def test_a_dead_channel_without_an_exact_equivalent_is_refused_and_named(tmp_path):
    path = tmp_path / "m.tflite"
    assert export.op_census(export.export_lce(_unabsorbable()))["LceBconv2d"] == 1  # the healthy twin converts
    with pytest.raises(FloatFallbackError, match=r"1 of 1 binarized layers would run as float convolutions.*"
                                                 r"'bconv' \(channel 1 has scale alpha=0.*allow_float_fallback"):
        export.export_lce(_unabsorbable(dead_channel=1), path)
    assert not path.exists()


def test_allow_float_fallback_writes_the_file_with_a_warning(tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.warns(ExportWarning, match="'bconv' \\(channel 1 has scale alpha=0.*allow_float_fallback=True"):
        flatbuffer = export.export_lce(_unabsorbable(dead_channel=1), path, allow_float_fallback=True)
    assert path.read_bytes() == flatbuffer and "LceBconv2d" not in export.op_census(flatbuffer)


def test_cli_export_fails_on_a_float_fallback_unless_allowed(tmp_path, capsys):
    from bitat_tf.cli import main

    saved, out = tmp_path / "m.keras", tmp_path / "m.tflite"
    _unabsorbable(dead_channel=1).save(saved)
    assert main(["export", str(saved), str(out)]) == 2
    assert "'bconv' (channel 1 has scale alpha=0" in capsys.readouterr().err and not out.exists()
    with pytest.warns(ExportWarning):
        assert main(["export", str(saved), str(out), "--allow-float-fallback"]) == 0
    assert out.exists()


def _pyfunc_model():
    inputs = keras.Input((4,))
    doubled = keras.layers.Lambda(lambda x: tf.reshape(tf.py_function(lambda t: 2 * t, [x], tf.float32), tf.shape(x)),
                                  name="pyfunc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(doubled))


def test_a_file_that_does_not_run_is_not_written_and_its_op_named(tmp_path):
    """LCE's converter keeps a tf.py_function as a custom op no interpreter has a kernel for."""
    path = tmp_path / "m.tflite"
    with pytest.warns(ExportWarning, match="no binarized layer"), \
            pytest.raises(ExportError, match=r"does not run in LCE's interpreter.*op EagerPyFunc \(from layer "
                                             r"'pyfunc'\) has no kernel"):
        export.export_lce(_pyfunc_model(), path)
    assert not path.exists()


class _Converter:
    """Stands in for tf.lite.TFLiteConverter: hands back a given flatbuffer."""

    def __init__(self, flatbuffer):
        self.flatbuffer, self.optimizations = flatbuffer, []

    def convert(self):
        return self.flatbuffer


def _dense_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(inputs))


def test_export_tflite_checks_that_its_file_runs_and_agrees(monkeypatch, tmp_path):
    path = tmp_path / "m.tflite"
    model, other = _dense_model(0), _dense_model(1)
    assert export.op_census(export.export_tflite(model, path)) == {"FULLY_CONNECTED": 1}
    path.unlink()
    other_file = tf.lite.TFLiteConverter.from_keras_model(other).convert()
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", staticmethod(lambda m: _Converter(other_file)))
    with pytest.raises(ExportError, match="export_tflite: the converted file runs but its output differs from the "
                                          "Keras model's by up to .* on each of 3 inputs"):
        export.export_tflite(model, path)
    assert not path.exists()


def test_export_tflite_names_an_op_its_interpreter_lacks(monkeypatch, tmp_path):
    import larq_compute_engine as lce

    pyfunc_file = lce.convert_keras_model(_pyfunc_model())  # the custom op, without export_lce's check
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", staticmethod(lambda m: _Converter(pyfunc_file)))
    with pytest.raises(ExportError, match=r"export_tflite: the converted file does not run in tf.lite.Interpreter.*"
                                          r"op EagerPyFunc \(from layer 'pyfunc'\)"):
        export.export_tflite(_pyfunc_model(), tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_a_float_model_through_export_lce_warns_that_nothing_is_binary():
    model = _dense_model(0)
    with pytest.warns(ExportWarning, match=f"model '{model.name}' has no binarized layer .*float ops only"):
        flatbuffer = export.export_lce(model)
    assert export.op_census(flatbuffer) == {"FULLY_CONNECTED": 1}


def test_binarized_depthwise_layers_are_named_as_float():
    inputs = keras.Input((8, 8, 4))
    h = larq.layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, name="bdw",
                                         input_quantizer=ThresholdSign(),
                                         depthwise_quantizer=ScaledSign(channel_axes=2))(inputs)
    with pytest.warns(ExportWarning, match="'bdw' \\(QuantDepthwiseConv2D\\) is binarized, but LCE has no binary"):
        export.export_lce(keras.Model(inputs, h))
