"""Export to TFLite and Larq Compute Engine flatbuffers, and proof that the binary layers stay binary.

A model from `binarize` converts as it is: `ThresholdSign` lowers to `Sub(x, beta)` followed by Larq's
sign, which feeds the convolution directly (through a pad of +1 for 'same' padding), and `ScaledSign`'s
`alpha * sign(w)` folds into a constant of +/-alpha per output channel. That is the pattern LCE's
converter turns into `LceQuantize` + `LceBconv2d`, with the scale and the following BatchNorm folded into
the op's output transform. `verify_export` checks that this happened and that the numbers agree.
"""

import collections
import dataclasses
import itertools
import os
import time

import numpy as np

from bitat_tf._compat import is_keras3_model, keras, larq, tf
from bitat_tf.errors import ConfigError, DatasetError, UnsupportedModelError
from bitat_tf.inputs import check_output_file
from bitat_tf.quantizers import ScaledSign, ThresholdSign

_LCE_OPTIONS = ("inference_input_type", "inference_output_type", "target", "experimental_default_int8_range")
_DENSE = ("conv", "keep")
_INT8_LAYERS = ("head", "all")
_TFLITE_OPTIONS = ("optimizations",)


def _check_options(options, allowed, what):
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"{what}: unknown options {unknown}; allowed are {list(allowed)}.")


def _write(flatbuffer, path):
    if path is not None:
        with open(path, "wb") as f:
            f.write(flatbuffer)
    return flatbuffer


def _check_model(model, what):
    if is_keras3_model(model):
        raise UnsupportedModelError(
            f"{what}: model is a Keras 3 {type(model).__name__}; Larq and LCE convert tf_keras models. Binarize "
            "it with bitat_tf.binarize (which converts Keras 3 models of common layers) and export the result.")
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"{what}: model must be a tf_keras.Model, got {type(model).__name__} "
                                    f"{model!r:.80}. Load a saved model first with tf_keras.models.load_model("
                                    "path, custom_objects=bitat_tf.custom_objects()).")


def _check_export(model, path, what):
    _check_model(model, what)
    return None if path is None else check_output_file(path, f"{what}: path")


def _flatbuffer_bytes(flatbuffer):
    """The bytes of a TFLite flatbuffer given as bytes or as a path to a .tflite file."""
    if isinstance(flatbuffer, (str, os.PathLike)):
        if not os.path.isfile(flatbuffer):
            raise ConfigError(f"verify_export: flatbuffer {os.fspath(flatbuffer)!r} is not a file; pass the "
                              "bytes export_lce returned or the path of the .tflite file it wrote.")
        with open(flatbuffer, "rb") as f:
            flatbuffer = f.read()
    if not isinstance(flatbuffer, (bytes, bytearray)):
        raise ConfigError(f"verify_export: flatbuffer must be bytes or a .tflite path, got "
                          f"{type(flatbuffer).__name__}.")
    if len(flatbuffer) < 8 or bytes(flatbuffer[4:8]) != b"TFL3":
        raise ConfigError(f"verify_export: the flatbuffer ({len(flatbuffer)} bytes) is not a TFLite model (no "
                          "'TFL3' identifier); pass what export_lce returned or wrote.")
    return bytes(flatbuffer)


def export_lce(model, path=None, *, dense="conv", int8_calibration=None, int8_layers="head",
               calibration_batches=16, **options):
    """Convert a binarized model to a Larq Compute Engine flatbuffer (bytes; written to `path` if given).

    # Arguments
        dense: "conv" computes each binarized `Dense` as a 1x1 binary convolution (LCE has a binary
            convolution kernel and no binary dense one); "keep" leaves it a float FULLY_CONNECTED on signs.
        int8_calibration: a dataset of x or (x, y) batches (training or validation data, not test): the
            full-precision layers chosen by `int8_layers` then run in int8 with ranges measured on up to
            `calibration_batches` of its batches (`calibrated_model`).
        int8_layers: "head" (the layers after the last binary one: pooling, classifier), "all" (every
            full-precision layer, the stem and the tensors that feed the signs included) or a list of layer
            names. Every rounding in front of a sign can flip a bit that the rest of the network then
            carries, so "all" costs far more agreement than "head"; check with `verify_export`.
        options: passed to `larq_compute_engine.convert_keras_model`: inference_input_type,
            inference_output_type (tf.float32 or tf.int8), target ("arm" or "xcore"),
            experimental_default_int8_range: `(min, max)`; the full-precision layers (stem convolution,
            classifier, the threshold subtractions) then run in int8 with that one range for every
            activation. LCE calls it a latency-testing aid: the range is not calibrated, so check the
            accuracy with `verify_export` before shipping such a model.
    """
    import larq_compute_engine as lce

    path = _check_export(model, path, "export_lce")
    _check_options(options, _LCE_OPTIONS, "export_lce")
    if dense not in _DENSE:
        raise ConfigError(f"export_lce: dense must be one of {_DENSE}, got {dense!r}.")
    if int8_calibration is not None and "experimental_default_int8_range" in options:
        raise ConfigError("export_lce: give int8_calibration (measured ranges) or experimental_default_int8_range "
                          "(one fixed range), not both.")
    if dense == "conv":
        model = inference_model(model)
    if int8_calibration is not None:
        model = calibrated_model(model, int8_calibration, layers=int8_layers, max_batches=calibration_batches)
    return _write(lce.convert_keras_model(model, **options), path)


@keras.utils.register_keras_serializable(package="bitat_tf")
class FakeQuant(keras.layers.Layer):
    """8-bit fake quantization with a fixed, measured range: where LCE's converter reads int8 ranges."""

    def __init__(self, minimum, maximum, **kwargs):
        super().__init__(**kwargs)
        self.minimum, self.maximum = float(min(minimum, 0.0)), float(max(maximum, 0.0))  # 0 representable

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_args(inputs, min=self.minimum, max=self.maximum, num_bits=8)

    def get_config(self):
        return {**super().get_config(), "minimum": self.minimum, "maximum": self.maximum}


def calibrated_model(model, dataset, *, layers="head", max_batches=16):
    """A copy of `model` with a `FakeQuant` on the inputs and outputs of the chosen full-precision layers,
    each with the range (min, max) its tensor takes on `dataset`; outputs are otherwise unchanged.

    `layers` is "head", "all" or a list of names (see `export_lce`). LCE's converter runs a layer in int8
    when the tensors around it carry such ranges (there is no representative-dataset option in
    `convert_keras_model`; this is how ranges reach it).
    """
    from bitat_tf.inputs import check_input_dataset

    check_input_dataset(dataset, model, what="export_lce: int8_calibration")
    chosen = _int8_layer_names(model, layers)
    if any(len(model.get_layer(n).inbound_nodes) != 1 for n in chosen):
        raise UnsupportedModelError("export_lce: int8_calibration needs each chosen layer called once; a shared "
                                    "layer is among " f"{chosen}.")
    watched = {}  # id(tensor) -> tensor: the chosen layers' inputs and outputs
    for name in chosen:
        layer = model.get_layer(name)
        for t in tf.nest.flatten(layer.inbound_nodes[0].input_tensors) + tf.nest.flatten(layer.output):
            watched[id(t)] = t
    probe = keras.Model(model.inputs, list(watched.values()))
    low, high = {}, {}
    for batch in dataset.take(max_batches):
        x = batch[0] if isinstance(batch, tuple) else batch
        values = probe(x, training=False)
        for key, value in zip(watched, values if isinstance(values, list) else [values]):
            low[key] = min(low.get(key, 0.0), float(tf.reduce_min(value)))
            high[key] = max(high.get(key, 0.0), float(tf.reduce_max(value)))
    if not low:
        raise DatasetError("export_lce: int8_calibration yielded no batches; pass a non-empty dataset.")

    names = (f"int8_range_{i}" for i in itertools.count())

    def quantized(tensor, rebuilt):
        if id(tensor) not in watched:
            return rebuilt
        return FakeQuant(low[id(tensor)], high[id(tensor)], name=next(names))(rebuilt)

    tensors = {}
    inputs = [keras.Input(t.shape[1:], dtype=t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    for old, new in zip(model.inputs, inputs):
        tensors[id(old)] = quantized(old, new)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        node = layer.inbound_nodes[0]
        args = tf.nest.map_structure(lambda t: tensors[id(t)], node.input_tensors)
        clone = layer.__class__.from_config(layer.get_config())
        out = clone(args)
        clone.set_weights(layer.get_weights())
        for old, new in zip(tf.nest.flatten(layer.output), tf.nest.flatten(out)):
            tensors[id(old)] = quantized(old, new)
    return keras.Model(inputs, tf.nest.map_structure(lambda t: tensors[id(t)], model.outputs))


def _int8_layer_names(model, layers):
    binary = {l.name for l in binarized_layers(model)}
    full_precision = [l.name for l in model.layers if not isinstance(l, keras.layers.InputLayer) and l.name not in binary
                      and not _has_binary_inside(l)]
    if layers == "all":
        return full_precision
    if layers == "head":
        last = max((i for i, l in enumerate(model.layers) if l.name in binary or _has_binary_inside(l)), default=-1)
        return [l.name for l in model.layers[last + 1:]]
    if isinstance(layers, (list, tuple)) and all(isinstance(n, str) for n in layers):
        unknown = sorted(set(layers) - set(full_precision))
        if unknown:
            raise ConfigError(f"export_lce: int8_layers {unknown} are not full-precision layers of the model; "
                              f"choose among {full_precision}.")
        return list(layers)
    raise ConfigError(f"export_lce: int8_layers must be 'head', 'all' or a list of layer names, got {layers!r}.")


def _has_binary_inside(layer):
    return isinstance(layer, DenseAsConv1x1)


@keras.utils.register_keras_serializable(package="bitat_tf")
class DenseAsConv1x1(keras.layers.Layer):
    """A binarized `Dense` computed as a 1x1 `QuantConv2D` on a 1x1 image (same weights, same output)."""

    def __init__(self, units, use_bias=True, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units, self.use_bias, self.activation = units, use_bias, keras.activations.get(activation)
        self.conv = larq.layers.QuantConv2D(units, 1, use_bias=use_bias, activation=activation,
                                            input_quantizer=ThresholdSign(), kernel_quantizer=ScaledSign(),
                                            kernel_constraint="weight_clip", name="conv1x1")

    def call(self, inputs):
        return tf.squeeze(self.conv(inputs[:, None, None, :]), axis=[1, 2])

    def get_config(self):
        return {**super().get_config(), "units": self.units, "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)}


def _is_binary_dense(layer):
    return (type(layer) is larq.layers.QuantDense and layer in binarized_layers_of([layer])
            and len(layer.input_shape) == 2)


def inference_model(model):
    """A copy of `model` in which every binarized 2-D `Dense` is a `DenseAsConv1x1`; outputs are unchanged."""

    def clone(layer):
        if not _is_binary_dense(layer):
            return layer.__class__.from_config(layer.get_config())
        return DenseAsConv1x1(layer.units, layer.use_bias, keras.activations.serialize(layer.activation),
                              name=layer.name)

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, rebuilt.layers):
        if isinstance(new, DenseAsConv1x1):
            conv, (kernel, *rest) = new.conv, old.get_weights()
            conv.set_weights([kernel.reshape(1, 1, *kernel.shape), *rest])
        else:
            new.set_weights(old.get_weights())
    return rebuilt


def export_tflite(model, path=None, **options):
    """Plain TFLite flatbuffer of `model` (float kernels): the baseline an LCE export is compared with.

    # Arguments
        options: `optimizations` (e.g. [tf.lite.Optimize.DEFAULT] for dynamic-range int8 weights).
    """
    path = _check_export(model, path, "export_tflite")
    _check_options(options, _TFLITE_OPTIONS, "export_tflite")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = options.get("optimizations", [])
    return _write(converter.convert(), path)


def op_census(flatbuffer):
    """Count the operators of a flatbuffer's main graph by name (builtin names and custom codes)."""
    return collections.Counter(name for name, _ in operators(flatbuffer))


def operators(flatbuffer):
    """The main graph's operators in order, each as `(name, [input tensor types])`, e.g. to see which
    full-precision ops run in int8 (`("CONV_2D", ["INT8", "INT8", "INT32"])`)."""
    from tensorflow.lite.python import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(flatbuffer, 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        if code.CustomCode():
            codes.append(code.CustomCode().decode())
        else:
            codes.append(builtin[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    graph = root.Subgraphs(0)
    out = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        inputs = [types[graph.Tensors(op.Inputs(j)).Type()] for j in range(op.InputsLength()) if op.Inputs(j) >= 0]
        out.append((codes[op.OpcodeIndex()], inputs))
    return out


@dataclasses.dataclass
class ExportCheck:
    """What `verify_export` found: op census, parity with Keras, sizes."""

    ops: dict
    binarized_convolutions: int
    lce_bconv2d: int
    not_converted: list
    max_abs_diff: float
    top1_agreement: float
    examples: int
    flatbuffer_bytes: int
    within_tolerance: float = float("nan")  # share of examples whose outputs all agree within `atol`
    atol: float = 1e-3

    @property
    def bconv_share(self):
        return self.lce_bconv2d / self.binarized_convolutions if self.binarized_convolutions else None

    def to_dict(self):
        return {**dataclasses.asdict(self), "bconv_share": self.bconv_share}

    def to_markdown(self):
        return "\n".join([
            f"- binarized convolutions that became LceBconv2d: {self.lce_bconv2d} of "
            f"{self.binarized_convolutions}",
            f"- not converted: {', '.join(self.not_converted) or 'none'}",
            f"- Keras vs LCE interpreter on {self.examples} examples: max |diff| {self.max_abs_diff:.3g}, "
            f"top-1 agreement {100 * self.top1_agreement:.2f}%, outputs within {self.atol:g} on "
            f"{100 * self.within_tolerance:.2f}% of examples",
            f"- flatbuffer: {self.flatbuffer_bytes} bytes",
            f"- ops: {dict(sorted(self.ops.items()))}",
        ])


def binarized_layers(model):
    """Layers of `model` whose inputs and kernel are both binarized (Larq precision 1)."""
    return binarized_layers_of(model.layers)


def binarized_layers_of(layers):
    found = []
    for layer in layers:
        input_q = getattr(layer, "input_quantizer", None)
        kernel_q = getattr(layer, "kernel_quantizer", None) or getattr(layer, "depthwise_quantizer", None)
        if all(getattr(q, "precision", None) == 1 and getattr(q, "active", True) for q in (input_q, kernel_q)):
            found.append(layer)
    return found


def verify_export(model, flatbuffer, dataset, *, dense="conv", max_batches=None, report=None, atol=1e-3):
    """Census of the flatbuffer's ops and Keras-vs-LCE parity on `dataset` ((x, y) or x batches).

    Binary layers compute exactly in both; float layers differ in accumulation order, so a pre-sign value
    within rounding of its threshold can flip one bit on one CPU and not on another. Parity is therefore
    reported as top-1 agreement and the share of examples whose outputs agree within `atol`, next to the
    worst difference.

    `dense` says how the flatbuffer was exported (see `export_lce`): with "conv", binarized 2-D `Dense`
    layers are expected as `LceBconv2d` too. Binarized `DepthwiseConv2D` layers (and `Dense` with "keep")
    are listed as not converted: LCE has binary kernels only for 2D convolutions. The result joins
    `report.export` when a binarization report is given.
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from bitat_tf.inputs import check_input_dataset

    _check_model(model, "verify_export")
    flatbuffer = _flatbuffer_bytes(flatbuffer)
    check_input_dataset(dataset, model, what="verify_export: dataset")
    ops = op_census(flatbuffer)
    layers = binarized_layers(model)
    convs = [l for l in layers if type(l) is larq.layers.QuantConv2D or (dense == "conv" and _is_binary_dense(l))]
    not_converted = [f"{l.name} ({type(l).__name__}: LCE has no binary kernel for it)"
                     for l in layers if l not in convs]
    missing = len(convs) - ops.get("LceBconv2d", 0)
    if missing > 0:
        not_converted.append(f"{missing} of the binary convolutions (check that nothing sits between the sign "
                             "and the convolution)")
    interpreter = Interpreter(flatbuffer, num_threads=os.cpu_count() or 1)
    diffs, agree, count = [], 0, 0
    per_example = []
    for batch in dataset.take(max_batches) if max_batches else dataset:
        x = batch[0] if isinstance(batch, tuple) else batch
        keras_out = model(x, training=False).numpy()
        lce_out = np.asarray(interpreter.predict(x.numpy()))
        worst = np.abs(keras_out - lce_out).reshape(len(keras_out), -1).max(axis=1)
        per_example.append(worst)
        diffs.append(float(worst.max()))
        agree += int(np.sum(keras_out.argmax(-1) == lce_out.argmax(-1)))
        count += len(keras_out)
    if not count:
        raise DatasetError("verify_export: dataset yielded no examples; pass a non-empty dataset of x or "
                           "(x, y) batches.")
    check = ExportCheck(dict(ops), len(convs), ops.get("LceBconv2d", 0), not_converted,
                        max(diffs) if diffs else float("nan"), agree / count if count else float("nan"), count,
                        len(flatbuffer), float(np.mean(np.concatenate(per_example) <= atol)), atol)
    if report is not None:
        report.export = check.to_dict()
    return check


def lce_latency_ms(flatbuffer, image, *, repeats=50, num_threads=1, warmup=5):
    """Median milliseconds per call of LCE's interpreter on `image` (one batch), after `warmup` calls.

    LCE's interpreter runs plain TFLite models too (float and int8 builtin ops), so one call times every
    kind of file on the same runtime and threads. On x86 these are LCE's reference kernels for the binary
    ops: a comparison on this CPU, not the Arm speed users will see.
    """
    import statistics

    from larq_compute_engine.tflite.python.interpreter import Interpreter

    interpreter = Interpreter(_flatbuffer_bytes(flatbuffer), num_threads=num_threads)
    for _ in range(warmup):
        interpreter.predict(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.predict(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def deployment_figures(binary_model, fp_model, dataset, *, stem=None, report=None):
    """Export both models, verify the binary one on `dataset`, time LCE: the figures a benchmark records.

    `stem` writes `<stem>.lce.tflite` and `<stem>.fp.tflite`; `report` receives the check as in
    `verify_export`. Returns `(check, figures)`: the `ExportCheck` and a JSON-ready dict of its figures
    plus the file sizes and the x86 latency of one image.
    """
    lce = export_lce(binary_model, stem and f"{stem}.lce.tflite")
    fp = export_tflite(fp_model, stem and f"{stem}.fp.tflite")
    check = verify_export(binary_model, lce, dataset, report=report)
    image = next(iter(dataset))[0][:1].numpy()
    return check, {**check.to_dict(), "lce_bytes": len(lce), "tflite_fp_bytes": len(fp),
                   "lce_x86_ms_per_image": lce_latency_ms(lce, image)}


def add_cli_arguments(parser):
    parser.add_argument("model", help="a saved binarized model (.keras/.h5/SavedModel)")
    parser.add_argument("output", help="where to write the flatbuffer (.tflite)")
    parser.add_argument("--format", choices=("lce", "tflite"), default="lce")
    parser.add_argument("--verify-data", help="digits, mnist, cifar10 (its test split) or a path to your data "
                                              "(as binarize --data): check Keras vs LCE parity on it")
    parser.add_argument("--int8", choices=_INT8_LAYERS, help="run the head (or every) full-precision layer in "
                        "int8 with ranges calibrated on --calibration-data (lce format)")
    parser.add_argument("--calibration-data", help="as --verify-data, its training split (or all of a path): "
                                                   "the images int8 ranges are measured on")
    parser.add_argument("--data-dir")


def _cli_data(value, split, model, data_dir):
    from bitat_tf import data
    from bitat_tf.userdata import is_user_data, load_user_data

    if is_user_data(value):
        return load_user_data(value, input_shape=model.input_shape[1:], validation_split=0.0)[0]
    return data.load(value, split, data_dir=data_dir)


def run_cli(args):
    from bitat_tf.inputs import load_saved_model

    if args.int8 and (args.format != "lce" or not args.calibration_data):
        raise ConfigError("export: --int8 needs --format lce and --calibration-data (training images, not the "
                          "test set) to measure the ranges on.")
    model = load_saved_model(args.model)
    if args.format == "lce":
        calibration = args.int8 and _cli_data(args.calibration_data, "train", model, args.data_dir)
        flatbuffer = export_lce(model, args.output, **(dict(int8_calibration=calibration, int8_layers=args.int8)
                                                      if args.int8 else {}))
    else:
        flatbuffer = export_tflite(model, args.output)
    print(f"{args.output}: {len(flatbuffer)} bytes, ops {dict(op_census(flatbuffer))}")
    if args.verify_data and args.format == "lce":
        print(verify_export(model, flatbuffer, _cli_data(args.verify_data, "test", model, args.data_dir)).to_markdown())
    return 0
