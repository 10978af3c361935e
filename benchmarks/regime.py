"""The paper's regime: every method's test top-1 against binarization time at 1x, 4x and 16x the standard budget.

    python benchmarks/budgets.py --mode standard --scales-from quick --budgets 1,4,16 \\
        --methods reactnet,ste_kd,bitat_e2e_p12,bitat,sequential,bitat_act_pass \\
        --out results/regime_standard/runs                                          # the runs (resumable)
    python benchmarks/regime.py                                                      # this page from them

The runs' accuracies are read as they are. Their seconds are not comparable across sittings and machines
(a 16x run takes over an hour and may be resumed in another session), so the time axis is derived: each
run's optimizer steps (`timing` in its result) at the seconds a step of that phase took in the method's
1x run, plus that run's time outside the steps (tracing, captures, evaluations, which do not grow with the
budget). The 1x runs of all methods should come from one sitting on one machine: the page records the CPU
and commit of each, and says when they differ.

Writes `results/regime_standard/regime.json`, `regime.png` (test top-1 against derived minutes, log axis,
one line per method, full precision as a horizontal line) and `regime.md` (the table, the leader at each
budget and by how much).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import budgets  # noqa: E402
import run as bench  # noqa: E402

ROOT = bench.ROOT
METHODS = ("reactnet", "ste_kd", "bitat_e2e_p12", "bitat", "sequential", "bitat_act_pass")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=os.path.join(ROOT, "results", "regime_standard", "runs"))
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default=os.path.join(ROOT, "results", "regime_standard"))
    args = p.parse_args(argv)
    page = build(args.runs, [m for m in args.methods.split(",") if m])
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "regime.json"), "w") as f:
        json.dump(page, f, indent=2, default=str)
    with open(os.path.join(args.out, "regime.md"), "w") as f:
        f.write(markdown(page) + "\n")
    if page["curves"]:
        plot(page, os.path.join(args.out, "regime.png"))
    print(markdown(page))
    return 0


def build(runs, methods):
    """Each method's points with derived seconds, the leader at each budget, the sitting's provenance."""
    records = _records(runs, methods)
    curves, sitting = {}, {}
    for method, by_budget in records.items():
        reference = by_budget.get(1.0)
        if reference is None:  # no 1x run: no step times to derive seconds from
            continue
        timing = reference["figures"]["timing"]
        sitting[method] = {**_provenance(runs, method, reference),
                           "seconds_outside_steps": timing["wall_seconds"] - timing["training_seconds"]}
        curves[method] = [_point(budget, record, timing) for budget, record in sorted(by_budget.items())]
    fp = _fp_accuracy(runs, records)
    return {"curves": curves, "labels": {m: bench.LABELS[m] for m in curves}, "fp_test_accuracy": fp,
            "leaders": leaders(curves), "equal_time": equal_time(curves), "sitting": sitting,
            "one_sitting": len({json.dumps([s["cpu"], s["platform"]], sort_keys=True)
                                for s in sitting.values()}) <= 1,
            "command": budgets._commands({m: [{"budget": p["budget"]} for p in pts] for m, pts in curves.items()},
                                         "standard", "quick")}


def _provenance(runs, method, reference):
    """The CPU (model, flags) a method's 1x run measured its step times on, and the commit and platform its
    run summary records."""
    summary_path = os.path.join(runs, method, "x1", "summary.json")
    summary = {}
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    figures = reference["figures"]
    return {"cpu": {"model": figures.get("cpu_model"), "flags": figures.get("cpu_flags")},
            "commit": summary.get("commit"), "platform": (summary.get("machine") or {}).get("platform")}


def _records(runs, methods):
    records = {}
    for method in methods:
        folder = os.path.join(runs, method)
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            path = os.path.join(folder, name, f"{method}.json")
            if name.startswith("x") and os.path.exists(path):
                with open(path) as f:
                    records.setdefault(method, {})[float(name[1:])] = json.load(f)
    return records


def _point(budget, record, reference_timing):
    """A run's accuracies, its steps per phase and its derived seconds (see the module docstring)."""
    figures = record["figures"]
    per_step = {phase: row["seconds_per_step"] for phase, row in reference_timing["phases"].items()}
    steps = {phase: row["steps"] for phase, row in figures["timing"]["phases"].items()}
    missing = sorted(set(steps) - set(per_step))
    if missing:
        raise ValueError(f"{figures['label']} x{budget:g}: phases {missing} have no 1x step time")
    outside = reference_timing["wall_seconds"] - reference_timing["training_seconds"]
    return {"budget": budget, "budget_steps": figures["budget_steps"], "steps": steps,
            "derived_seconds": outside + sum(n * per_step[phase] for phase, n in steps.items()),
            "measured_seconds": figures["binarize_seconds"], "resumed": figures.get("resumed", False),
            "val_accuracy": figures["val_accuracy"], "test_accuracy": figures["test_accuracy"],
            "learning_rate": figures["config"].get("learning_rate"), "cpu": figures.get("cpu")}


def _fp_accuracy(runs, records):
    """The start point's test top-1, from any run's folder (every run starts from the same checkpoint)."""
    for method, by_budget in records.items():
        for budget in by_budget:
            path = os.path.join(runs, method, f"x{budget:g}", "fp.json")
            if os.path.exists(path):
                with open(path) as f:
                    return json.load(f)["figures"]["fp_test_accuracy"]
    return None


def leaders(curves):
    """At each budget (equal steps): the method with the best test top-1 and its lead over the runner-up,
    and the same on validation (`val_*`), by which `bitat_tf.budget.LEADERS` chooses."""
    rows = []
    for budget in sorted({p["budget"] for pts in curves.values() for p in pts}):
        row = {"budget": budget}
        for key, prefix in (("test_accuracy", ""), ("val_accuracy", "val_")):
            at = sorted(((p[key], m) for m, pts in curves.items() for p in pts if p["budget"] == budget),
                        reverse=True)
            row.update({f"{prefix}leader": at[0][1], key: at[0][0],
                        f"{prefix}lead_over": at[1][1] if len(at) > 1 else None,
                        f"{prefix}lead_points": 100 * (at[0][0] - at[1][0]) if len(at) > 1 else None,
                        "methods": len(at)})
        rows.append(row)
    return rows


def equal_time(curves, reference="reactnet"):
    """At each budget's derived time of the reference method, every method's validation and test top-1 read
    off its curve (linear in log-time between its runs; missing outside a curve's span)."""
    rows = []
    for point in curves.get(reference, []):
        methods = {}
        for method, points in curves.items():
            timed = [{**p, "seconds": p["derived_seconds"]} for p in points]
            val = budgets.at_time(timed, point["derived_seconds"], "val_accuracy")
            test = budgets.at_time(timed, point["derived_seconds"], "test_accuracy")
            if val is not None:
                methods[method] = {"val_accuracy": val, "test_accuracy": test}
        rows.append({"reference": f"{reference} at x{point['budget']:g}", "seconds": point["derived_seconds"],
                     "methods": methods})
    return rows


def markdown(page):
    budgets_ = sorted({p["budget"] for pts in page["curves"].values() for p in pts})
    head = "| method | " + " | ".join(f"x{b:g} test (val), min" for b in budgets_) + " |"
    rows = [head, "|---" * (len(budgets_) + 1) + "|"]
    for method, points in page["curves"].items():
        cells = {p["budget"]: f"{100 * p['test_accuracy']:.1f}% ({100 * p['val_accuracy']:.1f}), "
                              f"{p['derived_seconds'] / 60:.0f}" for p in points}
        rows.append(f"| {page['labels'][method]} | " + " | ".join(cells.get(b, "-") for b in budgets_) + " |")
    lines = rows + [""]
    if page["fp_test_accuracy"] is not None:
        lines.append(f"Full precision (start point): {100 * page['fp_test_accuracy']:.1f}% test.")
    for row in page["leaders"]:
        said = []
        for split, prefix, key in (("validation", "val_", "val_accuracy"), ("test", "", "test_accuracy")):
            over = row[f"{prefix}lead_over"]
            lead = "" if over is None else f", {row[f'{prefix}lead_points']:.1f} points above {over}"
            said.append(f"{split} led by {row[f'{prefix}leader']} with {100 * row[key]:.1f}%{lead}")
        lines.append(f"- x{row['budget']:g} ({row['methods']} methods, one seed each): " + "; ".join(said) + ".")
    for row in page.get("equal_time", []):
        read = "; ".join(f"{m} {100 * r['val_accuracy']:.1f}% val / {100 * r['test_accuracy']:.1f}% test"
                         for m, r in row["methods"].items())
        lines.append(f"- At the time of {row['reference']} ({row['seconds'] / 60:.0f} min, curves read in "
                     f"log-time): {read}.")
    if not page["one_sitting"]:
        lines.append("- The 1x runs that give the step times come from more than one machine: derived times "
                     "compare only roughly.")
    return "\n".join(lines)


def plot(page, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for method, points in page["curves"].items():
        ax.plot([p["derived_seconds"] / 60 for p in points], [100 * p["test_accuracy"] for p in points], "o-",
                label=page["labels"][method])
        for p in points:
            ax.annotate(f"x{p['budget']:g}", (p["derived_seconds"] / 60, 100 * p["test_accuracy"]),
                        textcoords="offset points", xytext=(4, -10), fontsize=7)
    if page["fp_test_accuracy"] is not None:
        ax.axhline(100 * page["fp_test_accuracy"], color="gray", linestyle="--", label="full precision")
    ax.set_xscale("log")
    ax.set_xlabel("binarization time (minutes, 2 CPU cores; steps x the 1x run's step times, log scale)")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_title("ReActNet-A twin (width 0.25): accuracy against time, x1 / x4 / x16 the standard budget")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
