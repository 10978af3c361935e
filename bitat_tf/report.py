"""The binarization report: what happened to each layer, and the whole model's figures."""

import dataclasses
import io
import json
from contextlib import redirect_stdout


@dataclasses.dataclass
class LayerReport:
    """One weight layer: binarized or kept (and why), its sizes, and what its stage measured."""

    name: str
    type: str
    binarized: bool
    reason: str
    block: int = None
    d_in: int = None
    d_out: int = None
    groups: int = None  # k: rows of P
    transform_params: int = None  # s and V of the block after this layer
    unaggregated_params: int = None  # the same without aggregation (P = I)
    seconds: float = None
    val_accuracy: float = None
    final_terms: dict = None  # loss terms at the end of the layer's quantisation step


@dataclasses.dataclass
class Report:
    """Per-layer rows plus whole-model figures; `to_dict()` for JSON, `to_markdown()` for people."""

    layers: list
    config: dict
    fp_accuracy: float = None
    binary_accuracy: float = None
    accuracy_split: str = None
    seconds: float = None
    larq_summary: str = None
    export: dict = None  # filled by bitat_tf.verify_export
    timing: dict = None  # per phase: steps, seconds per step; overhead = wall - steps x seconds per step
    task: dict = None  # what was read from the model: outputs, loss, labels, the accuracy (outputs.Task)
    recipe: dict = None  # the recipe binarize(epochs=...) chose for the budget, and why (budget.Choice)

    @property
    def transform_params(self):
        """Trainable s and V over all blocks (each block counted at its largest)."""
        return _per_block_max(self.layers, "transform_params")

    @property
    def unaggregated_params(self):
        return _per_block_max(self.layers, "unaggregated_params")

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["transform_params"] = self.transform_params
        out["unaggregated_params"] = self.unaggregated_params
        return out

    def to_json(self, path=None):
        text = json.dumps(self.to_dict(), indent=2, default=str)
        if path:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_markdown(self):
        lines = [
            "| layer | type | binarized | reason | block | d_in | k | s+V params | unaggregated | "
            "seconds | val acc |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.layers:
            lines.append("| " + " | ".join(_fmt(v) for v in (
                r.name, r.type, "yes" if r.binarized else "no", r.reason, r.block, r.d_in, r.groups,
                r.transform_params, r.unaggregated_params, r.seconds, r.val_accuracy)) + " |")
        ratio = (self.transform_params / self.unaggregated_params) if self.unaggregated_params else None
        lines += [
            "",
            f"- full-precision accuracy ({self.accuracy_split}): {_fmt(self.fp_accuracy)}",
            f"- binary accuracy ({self.accuracy_split}): {_fmt(self.binary_accuracy)}",
            f"- s and V: {_fmt(self.transform_params)} parameters, unaggregated "
            f"{_fmt(self.unaggregated_params)} ({_pct(ratio)})",
            f"- binarization time: {_fmt(self.seconds)} s",
        ]
        if self.recipe:
            lines.append(f"- recipe: {self.recipe['description']} ({self.recipe['reason']})")
        if self.task:
            t = self.task
            lines.append(f"- task: {t['output']} ({t['units']} units, from {t['read_from']}), loss {t['loss']}, "
                         f"labels {t['labels']}; accuracy is {t['accuracy']}")
        if self.timing and self.timing.get("phase_steps") is not None:
            lines.append(f"- optimizer steps: {_steps_line(self.timing['phase_steps'])}")
        if self.larq_summary:
            lines += ["", "```", self.larq_summary.strip(), "```"]
        return "\n".join(lines)


def larq_summary(model):
    """Larq's model summary (memory, binarized MACs) as text."""
    import larq

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        larq.models.summary(model, print_fn=print)
    return buffer.getvalue()


def _steps_line(phase_steps):
    """Steps per phase, a stage's phases grouped by kind: "quantize 3 phases x 1, final end-to-end 35"."""
    kinds = {}
    for phase, steps in phase_steps.items():
        kind = next((k for k in ("quantize", "fine-tune above") if phase.endswith(" " + k)), phase)
        kinds.setdefault(kind, []).append(steps)
    parts = []
    for kind, steps in kinds.items():
        if len(steps) == 1:
            parts.append(f"{kind} {steps[0]}")
        else:
            low, high = min(steps), max(steps)
            parts.append(f"{kind} {len(steps)} phases x {low if low == high else f'{low}-{high}'}")
    return ", ".join(parts) or "none"


def _per_block_max(layers, field):
    best = {}
    for r in layers:
        value = getattr(r, field)
        if value is not None:
            best[r.block] = max(best.get(r.block, 0), value)
    return sum(best.values()) if best else None


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:.1f}"
    return str(value)


def _pct(ratio):
    return "-" if ratio is None else f"{100 * ratio:.3f}% of unaggregated"
