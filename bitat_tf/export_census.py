"""What a TFLite flatbuffer holds: its op census, its operators in order, and one file's census beside another's.

Pure reading of the flatbuffer (TensorFlow Lite's schema), no interpreter: the export's checks
(`export_checks`, `export_parity`) count ops with it, and `compare_census` sets a file's ops per binary
convolution beside a reference's (e.g. a larq-zoo model converted by LCE directly).
"""

import collections
import dataclasses
import os

from bitat_tf.errors import ConfigError


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
        row = {name: counts for name, counts in self.rows}.get(op, [(0, 0.0), (0, 0.0)])
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

