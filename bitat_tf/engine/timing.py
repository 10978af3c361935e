"""Timing: each phase's optimizer steps and seconds, and the summary every report carries."""

import dataclasses
import statistics

STAGE_PHASES = ("quantize", "fine-tune above")  # "<layer> quantize", "<layer> fine-tune above"
WARMUP_STEPS = 2  # steps left out of the seconds-per-step median (first-call costs)


@dataclasses.dataclass
class PhaseTiming:
    """One training phase: optimizer steps, the median seconds a step, the phase's wall time and the time
    its steps took (the warm-up steps counted at the median: their first-call cost is not a step's)."""

    phase: str
    steps: int
    seconds_per_step: float
    seconds: float
    step_seconds: float

    @property
    def training_seconds(self):
        return self.steps * self.seconds_per_step


def phase_timing(phase, durations, seconds):
    """The `PhaseTiming` of a phase whose steps took `durations` seconds each, in `seconds` of wall time."""
    timed = durations[min(WARMUP_STEPS, len(durations) - 1):]
    median = statistics.median(timed)
    return PhaseTiming(phase, len(durations), median, seconds, sum(timed) + (len(durations) - len(timed)) * median)


def timing_summary(timing, wall_seconds):
    """The optimizer steps of every phase that trained (`phase_steps`, by label); per phase kind (a stage's
    "quantize" or "fine-tune above", else the phase's label): steps, median seconds a step, seconds; the
    overhead, wall time minus steps x seconds a step over all phases; and the part of it spent in the first
    phase beyond its steps (tracing the train step, once a run).

    `outside_steps_seconds` is wall time minus the time the steps took (the warm-up steps at the median):
    the overhead less the steps slower than the median, which on a shared host come in periods of
    hundreds of steps (a busy neighbour), not from the engine."""
    phases, phase_steps = {}, {}
    for t in timing:
        phase_steps[t.phase] = phase_steps.get(t.phase, 0) + t.steps
        kind = next((k for k in STAGE_PHASES if t.phase.endswith(" " + k)), t.phase)
        row = phases.setdefault(kind, {"steps": 0, "training_seconds": 0.0, "seconds": 0.0})
        row["steps"] += t.steps
        row["training_seconds"] += t.training_seconds
        row["seconds"] += t.seconds
    for row in phases.values():
        row["seconds_per_step"] = row["training_seconds"] / row["steps"] if row["steps"] else None
    trained = sum(t.training_seconds for t in timing)
    # The first phase's time beyond its steps is mostly the one trace and graph optimisation of the train
    # step, paid once a run; part of the overhead.
    first = timing[0].seconds - timing[0].training_seconds if timing else 0.0
    in_steps = sum(t.step_seconds for t in timing)
    return {"phases": phases, "phase_steps": phase_steps, "training_seconds": trained, "wall_seconds": wall_seconds,
            "overhead_seconds": wall_seconds - trained, "first_phase_extra_seconds": first,
            "outside_steps_seconds": wall_seconds - in_steps}


def clock(seconds):
    """`seconds` as h:mm:ss."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


__all__ = ["PhaseTiming", "clock", "phase_timing", "timing_summary"]
