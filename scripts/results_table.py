"""Print the README's results table from the committed JSON files in results/ (never typed by hand).

    python scripts/results_table.py            # markdown to stdout
    python scripts/results_table.py --readme   # replace the block between the RESULTS markers in README.md
"""

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _load_bench():
    """benchmarks/run.py, for its `table()` (the same markdown the benchmark writes)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", os.path.join(ROOT, "benchmarks", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_tables():
    parts = []
    for path in sorted(glob.glob(os.path.join(ROOT, "results", "bench_*", "summary.json"))):
        with open(path) as f:
            summary = json.load(f)
        s = summary["settings"]
        parts.append(f"**Benchmark, {summary['mode']} run** (`{os.path.relpath(path, ROOT)}`, commit "
                     f"{str(summary.get('commit'))[:12]}): ReActNet-A twin width {s['width']:g}, "
                     f"{s['train_limit']:,} training images, every method from the same full-precision "
                     f"checkpoint with the same budget of {_budget(summary)} optimizer steps of batch "
                     f"{s['batch_size']}; binarization of all methods {_minutes(summary)} min in all. Every method "
                     f"at the runner's default learning rates (BiTAT 3e-3, baselines 1e-3), before the "
                     f"learning-rate trials and the engine work: the paper's ablation side by side; for "
                     f"tuned methods and current times see the accuracy-against-time tables.\n\n"
                     + _load_bench().table(summary))
    return "\n\n".join(parts)


def _minutes(summary):
    return f"{sum(r['binarize_seconds'] for r in summary['methods'].values()) / 60:.0f}"


def _budget(summary):
    budgets = {r.get("budget_steps") for r in summary["methods"].values()}
    return ", ".join(f"{b:,}" for b in sorted(b for b in budgets if b))


def memory_table():
    path = os.path.join(ROOT, "results", "memory.json")
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        record = json.load(f)
    rows = [f"**Peak memory of `binarize`** (`results/memory.json`, capture budget "
            f"{record['points'][0]['capture_memory_mb']} MB, data held in memory):\n",
            "| examples | layer width | dataset in memory | RSS before binarize | peak RSS |", "|---|---|---|---|---|"]
    for p in record["points"]:
        rows.append(f"| {p['examples']:,} | {p['width']} | {p['dataset_mb']:.0f} MB | "
                    f"{p['rss_before_binarize_mb']:.0f} MB | {p['peak_rss_mb']:.0f} MB |")
    return "\n".join(rows)


def _load(*parts):
    path = os.path.join(ROOT, "results", *parts)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def trials_table():
    record = _load("trials_quick", "trials.json")
    if not record:
        return ""
    scales = record["scales"]
    rows = [f"**Learning-rate trials, quick mode** (`results/trials_quick/trials.json`, validation top-1; every "
            "learning rate of a method scaled by the factor; `-` = not run yet):\n",
            "| method | " + " | ".join(f"x{s}" for s in scales) + " | best |", "|---|" + "---|" * (len(scales) + 1)]
    for row in record["methods"].values():
        cells = [_pct(row["trials"][s]["val_accuracy"]) if s in row["trials"] else "-" for s in scales]
        best = f"x{row['best_scale']}" if row["best_scale"] else "-"
        rows.append(f"| {row['label']} | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(rows)


def applications_table():
    record = _load("applications.json")
    if not record:
        return ""
    return (f"**Keras Applications** (`results/applications.json`, `{record['command']}`; random weights, 32x32 "
            f"inputs, one quantisation step a layer):\n\n" + record["table"])


_RECIPES = {"paper": "BiTAT as published", "default": "the default recipe (teacher in every step)",
            "taskpass": "the default, its pass without the teacher (pass_distillation=False)"}


_EVALUATED = {"layer": "after every layer", "block": "at block ends", "end": "at the end"}


def engine_table():
    record = _load("engine_speed.json")
    if not record:
        return ""
    rows = ["**Per-stage cost** (`results/engine_speed.json`, issue 13's MobileNet case: 13 layers, one step each; "
            "compare rows measured in the same sitting only):\n",
            "| engine | commit | measured | seconds | seconds a layer |", "|---|---|---|---|---|"]
    steps, stages, alone, floors = [], [], [], []
    for label, r in record.items():
        if "forward_seconds" in r:
            floors.append((label, r))
            continue
        if "ste_seconds_per_step" in r:
            alone.append((label, r))
            continue
        if "seconds_per_step" in r:
            steps.append((label, r))
            continue
        if "overhead_parts" in r:
            stages.append((label, r))
            continue
        rows.append(f"| {label} | {str(r['commit'])[:7]} | {r.get('measured_at', '?')} | {min(r['seconds']):.1f} | "
                    f"{r['seconds_per_layer']:.2f} |")
    if steps:
        rows += ["", "**Seconds a step on the standard model** (`results/engine_speed.json`, `python benchmarks/"
                 "engine_speed.py --case steps`; ReActNet-A twin width 0.25, batch 128; median of each phase's "
                 "median after warm-up):\n",
                 "| engine | BiTAT recipe | measured | quantize step | fine-tune-above step | end-to-end STE step | "
                 "progressive / STE | the recipe's own end-to-end step (teacher's forward in it) | progressive / "
                 "own |", "|---|---|---|---|---|---|---|---|---|"]
        for label, r in steps:
            t = r["seconds_per_step"]
            own = t.get("final end-to-end")
            mean = (t["quantize"] + t["fine-tune above"]) / 2
            rows.append(f"| {label} | {_RECIPES[r.get('recipe', 'paper')]} | {r.get('measured_at', '?')} | "
                        f"{1000 * t['quantize']:.0f} ms | {1000 * t['fine-tune above']:.0f} ms | "
                        f"{1000 * t['end-to-end STE']:.0f} ms | {r['progressive_mean_vs_end_to_end']:.2f}x | "
                        + (f"{1000 * own:.0f} ms | {mean / own:.2f}x |" if own else "- | - |"))
    if alone:
        rows += ["", "**An end-to-end STE step alone, with and without XLA** (`results/engine_speed.json`, `python "
                 "benchmarks/engine_speed.py --case ste [--xla]`; ReActNet-A twin width 0.25, batch 128, 24 steps):\n",
                 "| engine | XLA (`jit_compile`) | measured | STE step | first phase beyond its steps (trace, compile) |",
                 "|---|---|---|---|---|"]
        for label, r in alone:
            rows.append(f"| {label} | {'yes' if r.get('xla') else 'no'} | {r['measured_at']} | "
                        f"{1000 * r['ste_seconds_per_step']:.0f} ms | {r['timing']['first_phase_extra_seconds']:.0f} s |")
    if floors:
        rows += ["", "**The floor of a progressive step** (`results/engine_speed.json`, `python benchmarks/engine_speed.py "
                 "--case floor`; the binarized standard model with plain Larq quantizers, no BiTAT terms, no teacher, "
                 "batch 128; a train step whose tape differentiates only the weight layers from the named one up, one "
                 "trace each; median seconds and the ratio to the step with every layer):\n",
                 "| engine | measured | tape from layer: seconds a step (x all layers) | forward alone | mean over the "
                 "starting layers |", "|---|---|---|---|---|"]
        for label, r in floors:
            cells = "; ".join(f"{row['name']}: {1000 * row['seconds_per_step']:.0f} ms ({row['vs_all_layers']:.2f}x)"
                              for row in r["rows"])
            rows.append(f"| {label} | {r['measured_at']} | {cells} | {1000 * r['forward_seconds']:.0f} ms | "
                        f"{r['mean_vs_all_layers']:.2f}x |")
    if stages:
        parts = sorted({part for _, r in stages for part in r["overhead_parts"]},
                       key=lambda part: -max(r["overhead_parts"].get(part, {}).get("seconds") or 0 for _, r in stages))
        rows += ["", "**Where a progressive run's non-training time goes** (`results/engine_speed.json`, `python "
                 "benchmarks/engine_speed.py --case stages [--recipe default]`; ReActNet-A twin width 0.25, batch 128 "
                 "(random, in memory), 8 validation batches, 8 + 8 steps a layer, capture 4 and recalibration 8 "
                 "batches; seconds, and calls in parentheses; compare columns measured in the same sitting only):\n",
                 "| | " + " | ".join(label for label, _ in stages) + " |", "|---|" + "---|" * len(stages)]
        rows.append("| recipe, accuracy measured | " + " | ".join(
            f"{_RECIPES[r.get('recipe', 'paper')]}, {_EVALUATED[r.get('evaluate_every', 'block')]}" for _, r in stages) + " |")
        rows.append("| measured | " + " | ".join(r.get("measured_at", "?") for _, r in stages) + " |")
        rows.append("| wall | " + " | ".join(f"{r['wall_seconds']:.0f}" for _, r in stages) + " |")
        rows.append("| steps x median | " + " | ".join(f"{r['timing']['training_seconds']:.0f}" for _, r in stages) + " |")
        rows.append("| **overhead** | " + " | ".join(
            f"**{r['timing']['overhead_seconds']:.0f}** ({100 * r['timing']['overhead_seconds'] / r['wall_seconds']:.0f}%)"
            for _, r in stages) + " |")
        for part in parts:
            cells = []
            for _, r in stages:
                v = r["overhead_parts"].get(part)
                cells.append("-" if v is None else f"{v['seconds']:.1f}" + (f" ({v['calls']})" if v.get("calls") else ""))
            rows.append(f"| {part} | " + " | ".join(cells) + " |")
    standard = _load("engine_standard", "summary.json")
    if standard:
        rows += ["", "**Where a standard run's time goes** (`results/engine_standard/summary.json`; wall time of "
                 "binarization, steps x median seconds a step, and the rest):\n",
                 "| method | wall | training | overhead | overhead share | s/step by phase |", "|---|---|---|---|---|---|"]
        for name, m in standard["methods"].items():
            timing = m.get("timing") or {}
            if not timing:
                continue
            phases = ", ".join(f"{k} {1000 * v['seconds_per_step']:.0f} ms" for k, v in timing["phases"].items()
                               if v.get("seconds_per_step"))
            rows.append(f"| {m['label']} | {timing['wall_seconds']:.0f} s | {timing['training_seconds']:.0f} s | "
                        f"{timing['overhead_seconds']:.0f} s | {100 * timing['overhead_seconds'] / timing['wall_seconds']:.0f}% | "
                        f"{phases} |")
    return "\n".join(rows)


def deployment_table():
    record = _load("deployment.json")
    if not record:
        return ""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deployment", os.path.join(ROOT, "benchmarks", "deployment.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cpu = record.get("machine", {}) if isinstance(record.get("machine"), dict) else {}
    return (f"**What ships** (`results/deployment.json`, `{record['command']}`; LCE's interpreter on this x86 CPU "
            f"({cpu.get('cpu_model', record.get('cpu_model', '?'))}), one image a call, median after warm-up; "
            "agreement is with the Keras model the file came from):\n\n" + module.table(record))


def budgets_table(mode):
    record = _load(f"budgets_{mode}", "budgets.json")
    if not record:
        return ""
    methods = list(record["curves"])
    rows = [f"**Accuracy against time, {mode} mode** (`results/budgets_{mode}/budgets.json`, `{record['command']}`; "
            "each method at its best learning-rate scale from the quick-mode trials; test top-1 read off each "
            "method's curve at the ReActNet-style run's wall time, `-` outside a curve's span):\n",
            "| at the time of | seconds | " + " | ".join(record["labels"][m] for m in methods) + " |",
            "|---|---|" + "---|" * len(methods)]
    for row in record["equal_time"]:
        cells = [_pct(row["methods"].get(m, {}).get("test_accuracy")) for m in methods]
        rows.append(f"| {row['reference']} | {row['seconds']:.0f} | " + " | ".join(cells) + " |")
    rows += ["", "| method | budget | steps | seconds | overhead | val top-1 | test top-1 |",
             "|---|---|---|---|---|---|---|"]
    for m in methods:
        for p in record["curves"][m]:
            overhead = p.get("overhead_seconds")
            overhead = "-" if overhead is None else f"{overhead:.0f} s ({100 * overhead / p['seconds']:.0f}%)"
            rows.append(f"| {record['labels'][m]} | x{p['budget']:g} | {p['budget_steps']:,} | {p['seconds']:.0f} | "
                        f"{overhead} | {_pct(p['val_accuracy'])} | {_pct(p['test_accuracy'])} |")
    return "\n".join(rows)


def seeds_table():
    """Standard-budget runs over seeds: accuracy mean and spread (their seconds are not a timing comparison:
    the seeds ran at different times, some beside other work)."""
    record = _load("seeds_standard", "seeds.json")
    if not record:
        return ""
    rows = [f"**Seeds, standard mode, 1x budget** (`results/seeds_standard/seeds.json`, `{record['command']}`; "
            f"every seed from the same full-precision checkpoint (seed {record['fp_seed']}); mean, sample standard "
            "deviation and range over the seeds; accuracy only, the seeds' seconds are not a timing comparison):\n",
            "| method | seeds | test top-1 (mean ± sd) | test range | val top-1 (mean ± sd) |", "|---|---|---|---|---|"]
    for row in record["methods"].values():
        test, val = row["test_accuracy"], row["val_accuracy"]
        sd = lambda v: "" if v["std"] is None else f" ± {100 * v['std']:.1f}"  # noqa: E731
        rows.append(f"| {row['label']} | {', '.join(str(k) for k in row['seeds'])} | {100 * test['mean']:.1f}%{sd(test)} | "
                    f"{100 * test['min']:.1f}-{100 * test['max']:.1f}% | {100 * val['mean']:.1f}%{sd(val)} |")
    return "\n".join(rows)


def levers_table():
    """The default recipe with one hyperparameter of the full method changed at a time, one seed."""
    record = _load("levers_standard", "levers.json")
    if not record:
        return ""
    # The same configuration and seed in the accuracy-against-time run: how far two runs of it differ
    # (only when the two resolved configs are equal: the package's default may have changed in between).
    twin = _load("budgets_standard", record["method"], "x1", f"{record['method']}.json")
    own = _load("levers_standard", "default", f"{record['method']}.json")
    default = record["levers"].get("default")
    repeat = ""
    if twin and own and default and twin["figures"].get("config") == own["figures"].get("config"):
        repeat = (f", and the same configuration run twice scored {_pct(twin['figures']['test_accuracy'])} "
                  f"(`results/budgets_standard`, x1) and {_pct(default['test_accuracy'])} test")
    elif twin and own:
        repeat = (", and these runs predate stop 21's change of the default's BatchNorm normalisation in the "
                  "pass (`pass_normalization`)")
    rows = [f"**The full method's own levers, standard mode** (`results/levers_standard/levers.json`, "
            f"`{record['command']}`; {record['label']} at x{record['learning_rate_scale']:g}, one argument changed "
            "at a time, seed 0, one sitting; one run each: the 1,000-image validation split alone has a binomial "
            f"sd of ~1.5 points at 65%{repeat}, so only differences beyond ~1.5 points count):\n",
            "| lever | changed | learning rates (quantize / fine-tune above / last phase) | val top-1 | test top-1 "
            "| seconds | overhead |", "|---|---|---|---|---|---|---|"]
    for name, row in record["levers"].items():
        changed = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                            for k, v in row["overrides"].items()) or "nothing"
        rates = " / ".join(f"{v:g}" for v in row["learning_rates"].values())
        rows.append(f"| {name} | {changed} | {rates} | {_pct(row['val_accuracy'])} | {_pct(row['test_accuracy'])} "
                    f"| {row['binarize_seconds']:.0f} | {row['overhead_seconds']:.0f} s |")
    return "\n".join(rows)


def engine_runs_table():
    """The standard default run and STE on this engine and on the session-start engine, one sitting."""
    rows = []
    for folder in ("engine_after_standard", "engine_before_standard"):
        for method in ("bitat_e2e", "ste"):
            record = _load(folder, method, "x1", f"{method}.json")
            if not record:
                continue
            f = record["figures"]
            t = f["timing"]
            steps = ", ".join(f"{k} {1000 * v['seconds_per_step']:.0f} ms" for k, v in t["phases"].items()
                              if v.get("seconds_per_step"))
            commit = (_load(folder, method, "x1", "summary.json") or {}).get("commit") or "?"
            rows.append(f"| {folder.split('_')[1]} ({str(commit)[:7]}) | "
                        f"{f['label']} | {f['binarize_seconds']:.0f} s | {t['overhead_seconds']:.0f} s "
                        f"({100 * t['overhead_seconds'] / t['wall_seconds']:.0f}%) | "
                        f"{t.get('first_phase_extra_seconds') or 0:.0f} s | {_pct(f['test_accuracy'])} | {steps} |")
    if not rows:
        return ""
    return "\n".join([
        "**The engine before and after, standard mode, one sitting** (`results/engine_after_standard/`, "
        "`results/engine_before_standard/`; `python benchmarks/budgets.py --mode standard --scales-from quick "
        "--methods bitat_e2e,ste --budgets 1 --out ...`, the before from a checkout of f3db2aa via `PYTHONPATH`; "
        "seed 0; overhead = wall time minus steps x median seconds a step):\n",
        "| engine | method | wall | overhead | of which the first phase's extra (trace) | test top-1 | "
        "median seconds a step, by phase |", "|---|---|---|---|---|---|---|", *rows])


def table():
    rows = ["| run | FP test acc | BiTAT binary test acc | binarize time | total time | s+V params (aggregated / "
            "unaggregated) | LceBconv2d | Keras vs LCE top-1 | LCE / FP TFLite size |",
            "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(ROOT, "results", "*.json"))):
        with open(path) as f:
            record = json.load(f)
        fig = record.get("figures")
        if not isinstance(fig, dict) or "binary_test_accuracy" not in fig:
            continue  # not an example run (e.g. memory.json)
        export = fig.get("export") or {}
        sizes = (f"{export['lce_bytes']:,} / {export['tflite_fp_bytes']:,} B "
                 f"({export['tflite_fp_bytes'] / export['lce_bytes']:.1f}x smaller)") if export else "-"
        ratio = fig["transform_params"] / fig["unaggregated_params"] if fig.get("unaggregated_params") else None
        rows.append(" | ".join([
            f"| `{os.path.relpath(path, ROOT)}`", _pct(fig["fp_test_accuracy"]), _pct(fig["binary_test_accuracy"]),
            f"{fig['binarize_seconds']:.0f} s", f"{fig['total_seconds']:.0f} s",
            f"{fig['transform_params']:,} / {fig['unaggregated_params']:,} ({100 * ratio:.2f}%)" if ratio else "-",
            f"{export['lce_bconv2d']} of {export['binarized_convolutions']}" if export else "-",
            _pct(export.get("top1_agreement")) if export else "-", sizes]) + " |")
    parts = ("\n".join(rows), bench_tables(), trials_table(), seeds_table(), levers_table(), engine_runs_table(), budgets_table("standard"), budgets_table("quick"),
             engine_table(), deployment_table(),
             applications_table(), memory_table())
    return "\n\n".join(part for part in parts if part)


def main(argv):
    text = table()
    if "--readme" not in argv:
        print(text)
        return 0
    path = os.path.join(ROOT, "README.md")
    readme = open(path).read()
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    with open(path, "w") as f:
        f.write(f"{head}{START}\n{text}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
