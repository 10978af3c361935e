"""Accuracy against wall-clock: each method at several step budgets, compared at equal time.

    python benchmarks/budgets.py --mode quick                                  # default methods and budgets
    python benchmarks/budgets.py --mode quick --methods reactnet,bitat_e2e --budgets 0.5,1,2
    python benchmarks/budgets.py --mode standard --scales-from quick --budgets 1,2,0.5

A budget factor scales the mode's steps per layer and fine-tune steps, so the whole step budget that every
method shares (`benchmarks/run.py`) scales with it. Each method runs at its best learning-rate scale from
the trials (`results/trials_<mode>/trials.json`, chosen on validation), each (method, budget) in its own
`benchmarks/run.py` invocation under `results/budgets_<mode>/<method>/x<budget>/`, so the whole set
resumes after an interruption. Run it in one sitting on one machine: the comparison is of wall-clock
seconds.

The summary (`results/budgets_<mode>/budgets.json`, `curves.png`) holds each method's curve of (binarize
seconds, validation and test top-1) and, at each reference time (the ReActNet-style run at each budget),
every method's accuracy read off its curve by linear interpolation in log-time; outside a curve's span
the value is missing, never extrapolated.
"""

import argparse
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402
import trials  # noqa: E402

REFERENCE = "reactnet"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(bench.MODES), default="quick")
    p.add_argument("--methods", default="reactnet,ste,bitat_e2e,bitat_act_e2e")
    p.add_argument("--budgets", default="0.5,1,2", help="factors on the mode's step budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp-seed", type=int, help="seed of the full-precision start point (default: --seed)")
    p.add_argument("--scales-from", help="the trials' mode whose best learning-rate scales to use (default: "
                   "--mode; trials run in quick mode, the README's figures in standard mode)")
    p.add_argument("--out", help="default: results/budgets_<mode>")
    p.add_argument("--summary-only", action="store_true", help="rewrite the summary from what is on disk")
    args = p.parse_args(argv)
    out = args.out or os.path.join(ROOT, "results", f"budgets_{args.mode}")
    methods = [m for m in args.methods.split(",") if m]
    budgets = [float(b) for b in args.budgets.split(",")]
    scales = best_scales(args.scales_from or args.mode)
    mode = bench.MODES[args.mode]
    if not args.summary_only:
        for budget in budgets:  # every method at one budget before the next: a partial set is still a comparison
            for method in methods:
                scale = float(scales.get(method) or 1.0)
                rates = trials.rate_flags(scale)
                subprocess.call([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--mode", args.mode,
                                 "--methods", method, "--seed", str(args.seed), "--no-export", *rates,
                                 *([f"--fp-seed={args.fp_seed}"] if args.fp_seed is not None else []),
                                 f"--steps-per-layer={max(1, round(mode['steps_per_layer'] * budget))}",
                                 f"--finetune-steps={round(mode['finetune_steps'] * budget)}",
                                 "--out", os.path.join(out, method, f"x{budget:g}")])
    write_summary(out, args.mode, scales, scales_from=args.scales_from or args.mode)
    return 0


def best_scales(mode):
    path = os.path.join(ROOT, "results", f"trials_{mode}", "trials.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {m: row["best_scale"] for m, row in json.load(f)["methods"].items()}


def curves_on_disk(out):
    curves = {}
    methods = [m for m in sorted(os.listdir(out)) if os.path.isdir(os.path.join(out, m))] if os.path.isdir(out) else []
    for method in methods:
        for name in os.listdir(os.path.join(out, method)):
            path = os.path.join(out, method, name, f"{method}.json")
            if name.startswith("x") and os.path.exists(path):
                with open(path) as f:
                    figures = json.load(f)["figures"]
                curves.setdefault(method, []).append({
                    "budget": float(name[1:]), "budget_steps": figures["budget_steps"],
                    "seconds": figures["binarize_seconds"], "val_accuracy": figures["val_accuracy"],
                    "test_accuracy": figures["test_accuracy"],
                    "overhead_seconds": (figures.get("timing") or {}).get("overhead_seconds"),
                    "seconds_per_step": {phase: row["seconds_per_step"] for phase, row in
                                         ((figures.get("timing") or {}).get("phases") or {}).items()},
                    "learning_rate": (figures.get("config") or {}).get("learning_rate")})
    for points in curves.values():
        points.sort(key=lambda p: p["seconds"])
    return curves


def at_time(points, seconds, key):
    """`key` read off a curve at `seconds` (linear in log-time between its points); None outside it."""
    for a, b in zip(points, points[1:]):
        if a["seconds"] <= seconds <= b["seconds"]:
            t = (math.log(seconds) - math.log(a["seconds"])) / (math.log(b["seconds"]) - math.log(a["seconds"]))
            return a[key] + t * (b[key] - a[key])
    exact = [p[key] for p in points if abs(p["seconds"] - seconds) < 1e-9]
    return exact[0] if exact else None


def write_summary(out, mode, scales, scales_from=None):
    from bitat_tf import runinfo

    curves = curves_on_disk(out)
    comparisons = []
    for ref in curves.get(REFERENCE, []):
        row = {"reference": f"{REFERENCE} at x{ref['budget']:g}", "seconds": ref["seconds"], "methods": {}}
        for method, points in curves.items():
            row["methods"][method] = {key: at_time(points, ref["seconds"], key)
                                      for key in ("val_accuracy", "test_accuracy")}
        comparisons.append(row)
    # Each point records the learning rate it ran with; the scales are the trials' best when this summary
    # was written (a later trial can move them).
    summary = {"mode": mode, "learning_rate_scales": {m: scales.get(m) for m in curves},
               "learning_rate_scales_from": f"results/trials_{scales_from or mode}/trials.json", "curves": curves,
               "equal_time": comparisons, "labels": {m: bench.LABELS[m] for m in curves},
               "command": _commands(curves, mode, scales_from), **runinfo.provenance()}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "budgets.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    if curves:
        plot(summary, os.path.join(out, "curves.png"))
    for row in comparisons:
        cells = ", ".join(f"{m} {_pct(v['test_accuracy'])}" for m, v in row["methods"].items())
        print(f"at {row['seconds']:.0f} s ({row['reference']}): test {cells}")
    return summary


def _commands(curves, mode, scales_from):
    source = f" --scales-from {scales_from}" if scales_from and scales_from != mode else ""
    return bench.regenerate_commands("budgets.py", f"--mode {mode}{source}", "--budgets", {
        method: ",".join(f"{p['budget']:g}" for p in sorted(points, key=lambda p: p["budget"]))
        for method, points in curves.items()})


def _pct(value):
    return "-" if value is None else f"{100 * value:.1f}%"


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, points in summary["curves"].items():
        ax.plot([p["seconds"] / 60 for p in points], [100 * p["test_accuracy"] for p in points], "o-",
                label=summary["labels"][method])
    ax.set_xscale("log")
    ax.set_xlabel("binarization wall time (minutes, 2 CPU cores, log scale)")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_title(f"{summary['mode']} mode: accuracy against time, each method at its best learning rate")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
