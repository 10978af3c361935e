"""What every export checks before it writes a file: the op census and one run in the interpreter.

A conversion that succeeds can still hand back a file that is not what was asked for. LCE's converter
keeps a binary convolution whose kernel has a channel of scale 0 as a float `CONV_2D` (behind
`LceQuantize -> LceDequantize -> PADV2`), and it writes ops that no interpreter has a kernel for (a
`tf.py_function` becomes a custom `EagerPyFunc` op). So each export counts its binary ops against the
binarized layers it was given (`check_binary_ops`), and loads, allocates and runs its file on one input,
comparing with Keras (`check_runs`). A channel of scale 0 followed by a BatchNormalization has an exact
binary equivalent, which the export uses (`absorb_zero_scales`). `verify_export` measures the parity on a
whole dataset afterwards.
"""

import collections
import dataclasses
import os
import warnings

import numpy as np

from bitat_tf._compat import is_keras3_model, keras, larq, tf
from bitat_tf.errors import BitatError, ConfigError, DatasetError, UnsupportedModelError

LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")
ZERO_SCALE = float(np.finfo(np.float32).eps)  # LCE's converter: |scale| <= this is no binary channel
_FLOAT_CONV_OPS = ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D", "PADV2", "LceDequantize")


class ExportError(BitatError):
    """An export produced a file that does not run, or does not compute what the Keras model computes."""


class FloatFallbackError(ExportError):
    """Binarized layers would run as float convolutions in the LCE file; the message names them and why."""


class ExportWarning(UserWarning):
    """An export wrote a file that runs but is not all the user may expect (float layers, nothing binary)."""


# ---- the model's binary layers, the file's ops ---------------------------------------------------------

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


def check_model(model, what):
    """Refuse what Larq and LCE cannot convert: a Keras 3 model or no model at all."""
    if is_keras3_model(model):
        raise UnsupportedModelError(
            f"{what}: model is a Keras 3 {type(model).__name__}; Larq and LCE convert tf_keras models. Binarize "
            "it with bitat_tf.binarize (which converts Keras 3 models of common layers) and export the result.")
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(f"{what}: model must be a tf_keras.Model, got {type(model).__name__} "
                                    f"{model!r:.80}. Load a saved model first with tf_keras.models.load_model("
                                    "path, custom_objects=bitat_tf.custom_objects()).")


def flatbuffer_bytes(flatbuffer):
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


def is_binary_dense(layer):
    """A binarized 2-D `Dense`: what `export_lce(dense="conv")` computes as a 1x1 binary convolution."""
    return (type(layer) is larq.layers.QuantDense and layer in binarized_layers_of([layer])
            and len(layer.input_shape) == 2)


def op_census(flatbuffer):
    """Count the operators of a flatbuffer's main graph by name (builtin names and custom codes)."""
    return collections.Counter(name for name, _ in operators(flatbuffer))


def operators(flatbuffer, *, tensor_names=False):
    """The main graph's operators in order, each as `(name, [input tensor types])`, e.g. to see which
    full-precision ops run in int8 (`("CONV_2D", ["INT8", "INT8", "INT32"])`); with `tensor_names`, each
    as `(name, [names of its input and output tensors])`."""
    out = []
    for name, op, graph, types in _graph_ops(flatbuffer):
        if tensor_names:
            ids = [op.Inputs(j) for j in range(op.InputsLength())] + [op.Outputs(j) for j in range(op.OutputsLength())]
            out.append((name, [graph.Tensors(t).Name().decode() for t in ids if t >= 0]))
        else:
            out.append((name, [types[graph.Tensors(op.Inputs(j)).Type()] for j in range(op.InputsLength())
                               if op.Inputs(j) >= 0]))
    return out


def _graph_ops(flatbuffer):
    """(name, operator, main graph, {tensor type code: name}) for each operator of the main graph."""
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
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        yield codes[op.OpcodeIndex()], op, graph, types


def bitpacked_outputs(flatbuffer):
    """How many `LceBconv2d` ops write their output bitpacked (int32 words of signs), straight into the
    next binary convolution with no `LceQuantize` between."""
    return sum(1 for name, op, graph, types in _graph_ops(flatbuffer)
               if name == "LceBconv2d" and types[graph.Tensors(op.Outputs(0)).Type()] == "INT32")


BITPACKED = "LceBconv2d writing bitpacked output"


def census_per_bconv(flatbuffer):
    """Each op kind's count and count per `LceBconv2d` (None per bconv in a file without one), with the
    bitpacked outputs as the row `BITPACKED`: {op: (count, per bconv)}."""
    ops = op_census(flatbuffer)
    ops[BITPACKED] = bitpacked_outputs(flatbuffer)
    bconvs = ops.get("LceBconv2d", 0)
    return {op: (n, n / bconvs if bconvs else None) for op, n in ops.items()}


@dataclasses.dataclass
class CensusComparison:
    """Two files' op kinds side by side, counted and per `LceBconv2d` (`compare_census`)."""

    names: tuple
    rows: list  # (op, [count, per bconv] of each file)

    def extra_per_bconv(self, op):
        """How many more `op` per binary convolution the first file has than the second (0 if neither has it)."""
        row = dict((name, counts) for name, counts in self.rows).get(op, [(0, 0.0), (0, 0.0)])
        return (row[0][1] or 0.0) - (row[1][1] or 0.0)

    def to_dict(self):
        return {"files": list(self.names), "ops": {op: {name: {"count": n, "per_bconv": per}
                                                          for name, (n, per) in zip(self.names, counts)}
                                                     for op, counts in self.rows}}

    def to_markdown(self):
        head = "| op | " + " | ".join(f"{n}: count | {n}: per LceBconv2d" for n in self.names) + " |"
        lines = [head, "|---" * (1 + 2 * len(self.names)) + "|"]
        for op, counts in self.rows:
            cells = " | ".join(f"{n} | {'-' if per is None else f'{per:.2f}'}" for n, per in counts)
            lines.append(f"| {op} | {cells} |")
        return "\n".join(lines)


def compare_census(flatbuffer, reference, *, names=("ours", "reference")):
    """Every op kind of `flatbuffer` and of `reference` (another file, e.g. a larq-zoo model of the same
    family converted by LCE directly) per binary convolution, to see which ops ours carries that a lean LCE
    model does not. Rows: the binary ops first, then by how many more per bconv the first file has."""
    ours, theirs = census_per_bconv(flatbuffer_bytes(flatbuffer)), census_per_bconv(flatbuffer_bytes(reference))
    zero = (0, 0.0)
    rows = [(op, [list(ours.get(op, zero)), list(theirs.get(op, zero))]) for op in set(ours) | set(theirs)]
    first = {op: i for i, op in enumerate(("LceBconv2d", BITPACKED, "LceQuantize", "LceDequantize"))}
    rows.sort(key=lambda r: (first.get(r[0], len(first)), -((r[1][0][1] or 0.0) - (r[1][1][1] or 0.0)), r[0]))
    return CensusComparison(tuple(names), rows)


def layers_named_by(flatbuffer, op_names, layer_names):
    """Which of `layer_names` the tensors of the ops called `op_names` name (TFLite keeps the TensorFlow
    scope, e.g. 'model/block1_b/PadV2', in tensor names; best effort: long names are cut)."""
    found = []
    for op, names in operators(flatbuffer, tensor_names=True):
        if op not in op_names:
            continue
        scopes = {part for name in names for part in name.replace(";", "/").split("/")}
        found += [n for n in layer_names if n in scopes and n not in found]
    return found


# ---- channels of scale 0 -----------------------------------------------------------------------------

def _conv_of(layer):
    """The Larq convolution inside a binary layer (itself, or a `DenseAsConv1x1`'s 1x1 conv)."""
    return getattr(layer, "conv", layer)


def zero_scale_channels(layer):
    """Output channels of a binary layer whose scale alpha LCE reads as 0 (|alpha| <= float32 epsilon); an
    empty list when its kernel quantizer has no alpha."""
    alpha = getattr(getattr(_conv_of(layer), "kernel_quantizer", None), "alpha", None)
    if alpha is None:
        return []
    alpha = np.asarray(alpha.numpy()).reshape(-1)
    return [int(c) for c in np.flatnonzero(np.abs(alpha) <= ZERO_SCALE)]


def _only_consumer(model, layer):
    """The one layer of `model` that reads `layer`'s output, or None (several, none, or a model output)."""
    if len(layer.inbound_nodes) != 1 or any(t is layer.output for t in model.outputs):
        return None
    readers = [l for l in model.layers for node in l.inbound_nodes
               if any(t is layer.output for t in tf.nest.flatten(node.input_tensors))]
    return readers[0] if len(readers) == 1 and len(readers[0].inbound_nodes) == 1 else None


def _absorbing_batchnorm(model, layer):
    bn = _only_consumer(model, layer)
    if (isinstance(bn, keras.layers.BatchNormalization) and bn.scale and bn.center
            and list(bn.axis) == [len(bn.input_shape) - 1]):
        return bn
    return None


def absorb_zero_scales(model, layers):
    """Give each channel of scale 0 an exact binary equivalent, in place; return the reasons of the layers
    for which none exists, as {layer name: reason}.

    Such a channel outputs its bias (a constant). When the layer's only reader is a BatchNormalization, the
    channel gets scale 1 and the BatchNormalization gamma 0 and, as beta, the constant it produced from that
    bias: the same outputs, and a kernel of +-scale in every channel, which LCE converts. Call it on a copy.
    """
    unrepaired = {}
    for layer in layers:
        channels = zero_scale_channels(layer)
        if not channels:
            continue
        bn = _absorbing_batchnorm(model, layer)
        if bn is None:
            unrepaired[layer.name] = (f"channel{'s' if len(channels) > 1 else ''} {_listed(channels)} ha"
                                      f"{'ve' if len(channels) > 1 else 's'} scale alpha=0 (|alpha| <= "
                                      f"{ZERO_SCALE:.2g}) and no BatchNormalization alone reads the layer to "
                                      "absorb it")
            continue
        _absorb(_conv_of(layer), bn, channels)
    return unrepaired


def _absorb(conv, bn, channels):
    bias = conv.bias.numpy() if conv.use_bias else np.zeros(conv.filters, np.float32)
    constant = conv.activation(tf.constant(bias)).numpy().astype(np.float64)  # what a dead channel outputs
    gamma, beta, mean, variance = (v.numpy() for v in (bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance))
    normalized = gamma * (constant - mean) / np.sqrt(variance.astype(np.float64) + bn.epsilon) + beta
    alpha = conv.kernel_quantizer.alpha.numpy()
    alpha[channels], gamma[channels], beta[channels] = 1.0, 0.0, normalized[channels]
    conv.kernel_quantizer.alpha.assign(alpha)
    bn.gamma.assign(gamma)
    bn.beta.assign(beta.astype(np.float32))


def _listed(items, most=8):
    shown = ", ".join(str(i) for i in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


# ---- the census -----------------------------------------------------------------------------------------

def check_binary_ops(flatbuffer, expected, reasons, *, allow_float_fallback, what="export_lce"):
    """Raise `FloatFallbackError` (or warn, with `allow_float_fallback`) when fewer `LceBconv2d` ops than
    `expected` binary layers reached the file; `reasons` ({name: why}) explains those it can."""
    missing = len(expected) - op_census(flatbuffer).get("LceBconv2d", 0)
    if missing <= 0:
        return
    message = (f"{what}: {missing} of {len(expected)} binarized layers would run as float convolutions, not "
               f"LceBconv2d: {_suspects(flatbuffer, expected, reasons, missing)}.")
    if allow_float_fallback:
        warnings.warn(f"{message} The file was written because allow_float_fallback=True.", ExportWarning,
                      stacklevel=3)
        return
    advice = ("Binarize again with this bitat_tf (it keeps every alpha >= 1e-6 while training) or set those "
              "channels' alpha to a small positive value and check the accuracy with verify_export; or pass "
              if reasons else "Or pass ")
    raise FloatFallbackError(f"{message} Nothing was written. {advice}allow_float_fallback=True (CLI: "
                             "--allow-float-fallback) to accept float convolutions there.")


def _suspects(flatbuffer, expected, reasons, missing):
    """The layers behind the float convolutions: those with a known reason, then those the file's float
    ops name."""
    named_by_file = layers_named_by(flatbuffer, _FLOAT_CONV_OPS, [l.name for l in expected])
    suspects = list(reasons) + [n for n in named_by_file if n not in reasons]
    named = [f"{n!r} ({reasons.get(n, 'its float convolution names it')})" for n in suspects]
    if len(suspects) < missing:
        named.append("a layer the file does not name (check that nothing sits between the sign and the "
                     "convolution, e.g. a reshape)")
    return "; ".join(named)


def warn_float_kinds(layers, what="export_lce"):
    """Binarized layers of kinds LCE has no binary kernel for run as float ops: say so, once."""
    if layers:
        kinds = ", ".join(f"{l.name!r} ({type(l).__name__})" for l in layers)
        warnings.warn(f"{what}: {kinds} {'are' if len(layers) > 1 else 'is'} binarized, but LCE has no binary "
                      "kernel for that kind: they run as float ops on +-1 values.", ExportWarning, stacklevel=4)


def warn_nothing_binary(model, what="export_lce"):
    """A model without binarized layers through LCE's converter is a float model: say so."""
    warnings.warn(f"{what}: model {model.name!r} has no binarized layer (none with active 1-bit input and "
                  "kernel quantizers), so the file holds float ops only. Binarize it first with "
                  "bitat_tf.binarize, or use export_tflite for a float model.", ExportWarning, stacklevel=4)


# ---- one run in the interpreter -------------------------------------------------------------------------

class _Runner:
    """One flatbuffer loaded in LCE's interpreter ("lce") or TensorFlow Lite's ("tflite")."""

    def __init__(self, flatbuffer, runtime):
        if runtime == "lce":
            from larq_compute_engine.tflite.python.interpreter import Interpreter

            self._lce = Interpreter(flatbuffer, num_threads=1)
            self.input_specs = list(zip(self._lce.input_shapes, self._lce.input_types))
        else:
            with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to LiteRT
                warnings.simplefilter("ignore")
                self._tfl = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
            self._tfl.allocate_tensors()
            self.input_specs = [(tuple(d["shape"]), d["dtype"]) for d in self._tfl.get_input_details()]

    def run(self, inputs):
        if hasattr(self, "_lce"):
            out = self._lce.predict(inputs[0] if len(inputs) == 1 else inputs)
            return out if isinstance(out, list) else [out]
        for detail, x in zip(self._tfl.get_input_details(), inputs):
            self._tfl.set_tensor(detail["index"], x)
        self._tfl.invoke()
        return [self._tfl.get_tensor(d["index"]) for d in self._tfl.get_output_details()]


def check_runs(model, flatbuffer, *, runtime, compare=True, what, rtol=1e-2, atol=1e-3, tries=3):
    """Load `flatbuffer`, allocate its tensors and run one input of batch 1; with `compare`, its output must
    match `model`'s within `atol + rtol * max|output|`. Raise `ExportError` naming the ops (and layers) at
    fault. A mismatch is retried on up to `tries` inputs and only all of them failing counts: a float value
    that sits within rounding of a sign's threshold may flip one bit on one input, a wrong file differs on
    every input. Int8 files (compare=False) must run and give outputs of the model's shapes."""
    try:
        runner = _Runner(flatbuffer, runtime)
        inputs = [_sample(shape, dtype, seed=0) for shape, dtype in runner.input_specs]
        outputs = runner.run(inputs)
    except (RuntimeError, ValueError) as err:
        raise ExportError(f"{what}: the converted file does not run in {_RUNTIMES[runtime]} ({type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0][:200]}){_unrunnable_ops(flatbuffer, model, runtime)}. "
                          "Nothing was written.") from err
    _check_shapes(model, outputs, what)
    if not compare or len(outputs) != 1 or len(inputs) != 1:
        return
    worst = None
    for seed in range(tries):
        x = inputs[0] if seed == 0 else _sample(*runner.input_specs[0], seed=seed)
        expected = np.asarray(model(x, training=False))
        got = outputs[0] if seed == 0 else runner.run([x])[0]
        diff, bound = float(np.max(np.abs(got - expected))), atol + rtol * float(np.max(np.abs(expected)))
        if diff <= bound:
            return
        worst = max(worst or 0.0, diff)
    raise ExportError(f"{what}: the converted file runs but its output differs from the Keras model's by up to "
                      f"{worst:.3g} (allowed {bound:.3g}) on each of {tries} inputs: the conversion changed what the "
                      f"model computes. Ops in the file: {dict(op_census(flatbuffer))}. Nothing was written.")


_RUNTIMES = {"lce": "LCE's interpreter", "tflite": "tf.lite.Interpreter"}


def _sample(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape).astype(dtype)  # an image-like input in [0, 1)
    return np.zeros(shape, dtype)


def _check_shapes(model, outputs, what):
    """The file's outputs have the model's shapes at batch 1 (as far as the model knows them)."""
    wanted = [(1, *tuple(s)[1:]) for s in (model.output_shape if isinstance(model.output_shape, list)
                                          else [model.output_shape])]
    got = [tuple(np.shape(o)) for o in outputs]
    if any(None in shape for shape in wanted):
        return
    if collections.Counter(got) != collections.Counter(wanted):  # TFLite may order several outputs otherwise
        raise ExportError(f"{what}: the converted file's outputs have shapes {got}, the model's {wanted} (batch 1). "
                          "Nothing was written.")


def _unrunnable_ops(flatbuffer, model, runtime):
    known = LCE_OPS if runtime == "lce" else ()
    custom = sorted({name for name, _ in operators(flatbuffer) if not name.isupper() and name not in known})
    if not custom:
        return ""
    layers = layers_named_by(flatbuffer, custom, [l.name for l in model.layers])
    origin = f" (from layer{'s' if len(layers) > 1 else ''} {', '.join(map(repr, layers))})" if layers else ""
    return (f": op{'s' if len(custom) > 1 else ''} {', '.join(custom)}{origin} ha{'ve' if len(custom) > 1 else 's'} "
            "no kernel there (a tf.py_function or a TensorFlow op TFLite lacks); build the model from layers "
            "TFLite supports")


# ---- parity on a dataset -------------------------------------------------------------------------------

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

    check_model(model, "verify_export")
    flatbuffer = flatbuffer_bytes(flatbuffer)
    check_input_dataset(dataset, model, what="verify_export: dataset")
    ops = op_census(flatbuffer)
    layers = binarized_layers(model)
    convs = [l for l in layers if type(l) is larq.layers.QuantConv2D or (dense == "conv" and is_binary_dense(l))]
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
