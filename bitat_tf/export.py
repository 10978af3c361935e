"""Export to TFLite and Larq Compute Engine flatbuffers, and proof that the binary layers stay binary.

A model from `binarize` converts as it is: `ThresholdSign` lowers to `Sub(x, beta)` followed by Larq's
sign, which feeds the convolution directly (through a pad of +1 for 'same' padding), and `ScaledSign`'s
`alpha * sign(w)` folds into a constant of +/-alpha per output channel. That is the pattern LCE's
converter turns into `LceQuantize` + `LceBconv2d`, with the scale and the following BatchNorm folded into
the op's output transform. The export converts a copy (`inference_model`, `export_model`) in which each
threshold that folds exactly into the BatchNormalization or bias before it has moved there (`export_fold`),
so that its `SUB` is gone too. Each export checks its file before writing it: every binarized convolution
became `LceBconv2d` (`export_checks`), and the file runs and agrees with Keras on one input
(`export_parity`). `verify_export` measures the agreement on a dataset; `compare_census` (`export_census`)
sets a file's ops per binary convolution beside a reference's. This module holds the exports themselves
and the command line's `export`, and keeps every public name of those modules.
"""

import time

from bitat_tf import export_checks as checks
from bitat_tf import export_parity as parity
from bitat_tf import graph
from bitat_tf._compat import larq, tf
from bitat_tf.errors import ConfigError
from bitat_tf.export_census import (  # noqa: F401 - also public names of bitat_tf.export
    BITPACKED, CensusComparison, bitpacked_outputs, census_per_bconv, compare_census, flatbuffer_bytes, op_census,
    operators)
from bitat_tf.export_checks import (  # noqa: F401 - also public names of bitat_tf.export
    ExportError, ExportWarning, FloatFallbackError, binarized_layers, binarized_layers_of, check_model,
    is_binary_dense)
from bitat_tf.export_model import DenseAsConv1x1, FakeQuant, calibrated_model, inference_model  # noqa: F401
from bitat_tf.export_parity import ExportCheck, verify_export  # noqa: F401 - also public names of bitat_tf.export
from bitat_tf.inputs import check_output_file

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


def _check_export(model, path, what):
    check_model(model, what)
    return None if path is None else check_output_file(path, f"{what}: path")


@graph.float32_policy()  # the copies it converts are made in float32 under a caller's mixed-precision policy
def export_lce(model, path=None, *, dense="conv", int8_calibration=None, int8_layers="head",
               calibration_batches=16, allow_float_fallback=False, fold_thresholds=True, **options):
    """Convert a binarized model to a Larq Compute Engine flatbuffer (bytes; written to `path` if given).

    Before anything is written the file is checked: every binarized convolution (and binarized `Dense`,
    with dense="conv") must have become an `LceBconv2d`, else `FloatFallbackError` names the layers and
    why; and the file must run in LCE's interpreter and give the Keras model's output on one input, and the
    full-precision layers before the first signs, converted alone, must give Keras' values
    (`export_parity.check_front`), else `ExportError`. A channel whose scale alpha is 0 has no binary form
    in LCE; when a BatchNormalization alone reads the layer, the export gives the channel an exact binary
    equivalent (see `export_checks.absorb_zero_scales`) and the model passed in is left as it is.

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
        allow_float_fallback: write the file even when binarized layers would run as float convolutions
            (an `ExportWarning` names them) instead of raising `FloatFallbackError`.
        fold_thresholds: move each input threshold that can go exactly into the BatchNormalization or bias
            before it (through a ReLU that nothing else reads) into that offset, so that the file holds no
            `SUB` for it, and LCE writes bitpacked outputs where a binary convolution feeds only the next
            one (`inference_model`, `export_fold`). False keeps every threshold as a `SUB`.
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
    exported, expected, unrepaired = _binary_ready(model, dense, fold_thresholds)
    _warn_float_layers(model, dense)
    if int8_calibration is not None:
        exported = calibrated_model(exported, int8_calibration, layers=int8_layers, max_batches=calibration_batches)
    flatbuffer = lce.convert_keras_model(exported, **options)
    checks.check_binary_ops(flatbuffer, expected, unrepaired, allow_float_fallback=allow_float_fallback)
    compare = not _has_int8(int8_calibration, options)
    parity.check_runs(model, flatbuffer, runtime="lce", compare=compare, what="export_lce")
    if compare:
        parity.check_front(exported, expected + checks.binarized_layers(exported),
                           lambda front: lce.convert_keras_model(front, **options), what="export_lce")
    return _write(flatbuffer, path)


def _has_int8(int8_calibration, options):
    """Whether a file holds int8 ops or tensors, whose outputs an export only checks for their shapes."""
    io_types = (options.get("inference_input_type"), options.get("inference_output_type"))
    return (int8_calibration is not None or options.get("experimental_default_int8_range") is not None
            or any(t is not None and t != tf.float32 for t in io_types))


def _binary_ready(model, dense, fold_thresholds):
    """The model LCE converts (`inference_model`'s copy), its layers that must become `LceBconv2d`, and
    {name: reason} for those of them that cannot (channels of scale 0 kept as they are)."""
    exported = inference_model(model, dense=dense, fold_thresholds=fold_thresholds)
    layers = _lce_binary_layers(exported)
    return exported, layers, checks.absorb_zero_scales(exported, layers)


def _lce_binary_layers(model):
    """The layers of a model as exported that LCE computes as binary convolutions."""
    binary = {id(l) for l in binarized_layers(model)}
    return [l for l in model.layers if isinstance(l, DenseAsConv1x1)
            or (type(l) is larq.layers.QuantConv2D and id(l) in binary)]


def _warn_float_layers(model, dense):
    layers = binarized_layers(model)
    if not layers:
        checks.warn_nothing_binary(model)
    checks.warn_float_kinds([l for l in layers if type(l) is not larq.layers.QuantConv2D and not is_binary_dense(l)
                             and not (dense == "keep" and type(l) is larq.layers.QuantDense)])



@graph.float32_policy()
def export_tflite(model, path=None, **options):
    """Plain TFLite flatbuffer of `model` (float kernels): the baseline an LCE export is compared with.

    Before it is written the file must run in `tf.lite.Interpreter` and give the Keras model's output on
    one input (with `optimizations`, only run and give outputs of the right shapes), else `ExportError`.

    # Arguments
        options: `optimizations` (e.g. [tf.lite.Optimize.DEFAULT] for dynamic-range int8 weights).
    """
    path = _check_export(model, path, "export_tflite")
    _check_options(options, _TFLITE_OPTIONS, "export_tflite")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = options.get("optimizations", [])
    flatbuffer = converter.convert()
    parity.check_runs(model, flatbuffer, runtime="tflite", compare=not converter.optimizations, what="export_tflite")
    return _write(flatbuffer, path)


def lce_latency_ms(flatbuffer, image, *, repeats=50, num_threads=1, warmup=5):
    """Median milliseconds per call of LCE's interpreter on `image` (one batch), after `warmup` calls.

    LCE's interpreter runs plain TFLite models too (float and int8 builtin ops), so one call times every
    kind of file on the same runtime and threads. On x86 these are LCE's reference kernels for the binary
    ops: a comparison on this CPU, not the Arm speed users will see.
    """
    import statistics

    return statistics.median(lce_latencies_ms(flatbuffer, image, repeats=repeats, num_threads=num_threads,
                                              warmup=warmup))


def lce_latencies_ms(flatbuffer, image, *, repeats=50, num_threads=1, warmup=5, use_xnnpack=False):
    """Milliseconds of each of `repeats` calls of LCE's interpreter on `image`, after `warmup` calls; with
    `use_xnnpack`, XNNPack's delegate runs the float (and int8) builtin ops it supports."""
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    interpreter = Interpreter(flatbuffer_bytes(flatbuffer), num_threads=num_threads, use_xnnpack=use_xnnpack)
    for _ in range(warmup):
        interpreter.predict(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        interpreter.predict(image)
        times.append(1000 * (time.perf_counter() - start))
    return times


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
    parser.add_argument("--allow-float-fallback", action="store_true",
                        help="write the LCE file even if binarized layers would run as float convolutions "
                             "(a warning names them); without it the export fails and writes nothing")


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
        flatbuffer = export_lce(model, args.output, allow_float_fallback=args.allow_float_fallback,
                                **({"int8_calibration": calibration, "int8_layers": args.int8} if args.int8 else {}))
    else:
        flatbuffer = export_tflite(model, args.output)
    print(f"{args.output}: {len(flatbuffer)} bytes, ops {dict(op_census(flatbuffer))}")
    if args.verify_data and args.format == "lce":
        print(verify_export(model, flatbuffer, _cli_data(args.verify_data, "test", model, args.data_dir)).to_markdown())
    return 0
