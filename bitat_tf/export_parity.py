"""Running an exported file: once before it is written (`check_runs`), and on a dataset (`verify_export`).

A file that converts may still not run (a `tf.py_function` becomes a custom `EagerPyFunc` op that no
interpreter has a kernel for) or may compute something else than the Keras model. So each export loads,
allocates and runs its file on one input and compares with Keras (`check_runs`); `verify_export` measures
the parity on a whole dataset afterwards.
"""

import collections
import dataclasses
import os
import warnings

import numpy as np

from bitat_tf._compat import keras, larq, tf
from bitat_tf.errors import DatasetError
from bitat_tf.export_census import flatbuffer_bytes, layers_named_by, op_census, operators
from bitat_tf.export_checks import ExportError, binarized_layers, check_model, is_binary_dense

LCE_OPS = ("LceQuantize", "LceDequantize", "LceBconv2d", "LceBMaxPool2d")


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
        diff, bound = _gap(got, expected, rtol, atol)
        if diff <= bound:
            return
        worst = max(worst or 0.0, diff)
    raise ExportError(f"{what}: the converted file runs but its output differs from the Keras model's by up to "
                      f"{worst:.3g} (allowed {bound:.3g}) on each of {tries} inputs: the conversion changed what the "
                      f"model computes. Ops in the file: {dict(op_census(flatbuffer))}. Nothing was written.")


_RUNTIMES = {"lce": "LCE's interpreter", "tflite": "tf.lite.Interpreter"}


def _gap(got, expected, rtol, atol):
    """The largest |got - expected| and what is allowed: `atol + rtol * max|expected|`."""
    return float(np.max(np.abs(got - expected))), atol + rtol * float(np.max(np.abs(expected)))


def check_front(model, binary_layers, convert, *, what, rtol=1e-3, atol=1e-5):
    """The full-precision layers in front of the first of `binary_layers` (layers of `model`), converted alone
    by `convert` (model -> flatbuffer) and run in LCE's interpreter, must give Keras' values within
    `atol + rtol * max|value|`, else `ExportError` naming them.

    `check_runs` compares whole outputs, which a model whose output barely depends on its input (random
    weights, a head that saturates) cannot tell apart; the front feeds every later sign and has no sign of
    its own, so it matches to float rounding or is wrong. Each tensor that a binarized layer reads and that
    depends on no binarized layer is one front, converted as its own model (several outputs can come back
    from a file in another order): what the converter does to those layers in the whole model, it does
    there too (e.g. LCE 0.16's padding fusion, `export_padding`). A binarized layer reading a model input has
    no front to check."""
    for front in _fronts(model, binary_layers):
        runner = _Runner(convert(front), "lce")
        x = _sample(*runner.input_specs[0], seed=0)
        got, expected = runner.run([x])[0], np.asarray(front(x, training=False))
        diff, bound = _gap(got, expected, rtol, atol)
        if not diff <= bound:
            layers = ", ".join(l.name for l in front.layers if not isinstance(l, keras.layers.InputLayer))
            raise ExportError(
                f"{what}: the full-precision layers before the first signs ({layers}) compute other values in the "
                f"converted file than in Keras: up to {diff:.3g} apart where they reach {np.max(np.abs(expected)):.3g} "
                f"(allowed {bound:.3g}). The converter changed what these layers compute; please report the "
                "layers' configuration. Nothing was written.")


def _fronts(model, binary_layers):
    """One-output models from `model`'s input to each distinct tensor one of `binary_layers` reads that
    depends on none of them (none for a model with several inputs, or whose binary layers are nested)."""
    binary = {id(l) for l in binary_layers}
    if len(model.inputs or []) != 1 or not binary:
        return []
    fronts, seen = [], {id(t) for t in model.inputs}
    for layer in model.layers:
        if id(layer) not in binary or len(layer.inbound_nodes) != 1 or id(layer.input) in seen:
            continue
        seen.add(id(layer.input))
        front = keras.Model(model.inputs, layer.input)
        if not any(id(l) in binary for l in front.layers):
            fronts.append(front)
    return fronts


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
            (f"- binarized convolutions that became LceBconv2d: {self.lce_bconv2d} of "
             f"{self.binarized_convolutions}"),
            f"- not converted: {', '.join(self.not_converted) or 'none'}",
            (f"- Keras vs LCE interpreter on {self.examples} examples: max |diff| {self.max_abs_diff:.3g}, "
             f"top-1 agreement {100 * self.top1_agreement:.2f}%, outputs within {self.atol:g} on "
             f"{100 * self.within_tolerance:.2f}% of examples"),
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
