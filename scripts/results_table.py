"""Results tables from the committed JSON files in results/ (never typed by hand).

    python scripts/results_table.py            # docs/results.md to stdout
    python scripts/results_table.py --write    # write docs/results.md and the README's headline table
    python scripts/results_table.py --check    # exit 1 when either is not what the JSON gives now

Every table names the file it comes from; each file's "command" field (or the study folder's README.md)
says how to measure it again. No TensorFlow import: this runs in a fraction of a second.
"""

import datetime
import glob
import importlib.util
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join("docs", "results.md")
START, END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"
SITTING_HOURS = 3  # rows of engine_speed.json this close to a case's newest row were measured with it

# The README's headline: benchmark method -> (what a user calls, a short name). The seeds file gives the
# 1x accuracy, the budgets file the wall times and the other budgets.
HEADLINE = {
    "bitat_e2e_p12": ("the default: the pass on 1/8 of the steps, then end-to-end distillation", "`BinarizeConfig()`"),
    "reactnet": ("ReActNet two-step + distillation", '`EndToEndConfig(method="reactnet")`'),
    "ste_kd": ("end-to-end STE + distillation", '`EndToEndConfig(method="ste", distill_weight=1.0)`'),
    "sequential_e2e_p12": ("the default without the transform", '`BinarizeConfig(variant="sequential")`'),
    "ste": ("end-to-end STE", '`EndToEndConfig(method="ste")`'),
    "bitat": ("BiTAT as published (Algorithm 1)", "`BinarizeConfig.paper()`"),
}

_RECIPES = {"paper": "BiTAT as published", "default": "the default recipe (teacher in every step)",
            "taskpass": "the default, its pass without the teacher (pass_distillation=False)"}
_EVALUATED = {"layer": "after every layer", "block": "at block ends", "end": "at the end"}


# ---- helpers ---------------------------------------------------------------------------------------------

def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _load(*parts):
    path = os.path.join(ROOT, "results", *parts)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _module(name):
    """A benchmark module, for its own `table()` (the same markdown the benchmark prints)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(title, source, text, note=""):
    """A titled section: where the table comes from, a note, the table."""
    if not text:
        return ""
    head = f"## {title}\n\nSource: {source}." + (f" {note}" if note else "")
    return f"{head}\n\n{text}"


# ---- the headline: seeds and budgets ------------------------------------------------------------------

def seeds_table():
    """Standard-budget runs over seeds: accuracy mean and spread (their seconds are not a timing comparison:
    the seeds ran at different times, some beside other work)."""
    record = _load("seeds_standard", "seeds.json")
    if not record:
        return ""
    rows = ["| method | seeds | test top-1 (mean ± sd) | test range | val top-1 (mean ± sd) | learning rate |",
            "|---|---|---|---|---|---|"]
    for row in record["methods"].values():
        test, val = row["test_accuracy"], row["val_accuracy"]
        rates = sorted({s.get("learning_rate") for s in row["seeds"].values() if s.get("learning_rate")})
        rows.append(f"| {row['label']} | {', '.join(str(k) for k in row['seeds'])} | {100 * test['mean']:.1f}%"
                    f"{_sd(test)} | {100 * test['min']:.1f}-{100 * test['max']:.1f}% | {100 * val['mean']:.1f}%"
                    f"{_sd(val)} | {', '.join(f'{r:g}' for r in rates) or '-'} |")
    return _section(
        "Seeds: the standard benchmark at 1x", f"`results/seeds_standard/seeds.json`, `{record['command']}`",
        "\n".join(rows),
        f"Every seed starts from the same full-precision checkpoint (seed {record['fp_seed']}); mean, sample standard "
        "deviation and range over the seeds. Accuracy only: the seeds ran in different sittings, so their seconds "
        "are not a timing comparison.")


def _sd(stats):
    return "" if stats["std"] is None else f" ± {100 * stats['std']:.1f}"


def budgets_table(mode):
    record = _load(f"budgets_{mode}", "budgets.json")
    if not record:
        return ""
    methods = list(record["curves"])
    rows = ["| at the time of | seconds | " + " | ".join(record["labels"][m] for m in methods) + " |",
            "|---|---|" + "---|" * len(methods)]
    for row in record["equal_time"]:
        cells = [_pct(row["methods"].get(m, {}).get("test_accuracy")) for m in methods]
        rows.append(f"| {row['reference']} | {row['seconds']:.0f} | " + " | ".join(cells) + " |")
    rows += ["", "| method | budget | steps | learning rate | seconds | overhead | val top-1 | test top-1 |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        for p in record["curves"][m]:
            overhead = p.get("overhead_seconds")
            overhead = "-" if overhead is None else f"{overhead:.0f} s ({100 * overhead / p['seconds']:.0f}%)"
            rate = f"{p['learning_rate']:g}" if p.get("learning_rate") else "-"
            rows.append(f"| {record['labels'][m]} | x{p['budget']:g} | {p['budget_steps']:,} | {rate} | "
                        f"{p['seconds']:.0f} | {overhead} | {_pct(p['val_accuracy'])} | {_pct(p['test_accuracy'])} |")
    chart = f"results/budgets_{mode}/curves.png"
    picture = f"\n\n![accuracy against time, {mode} mode](../{chart})" if os.path.exists(os.path.join(ROOT, chart)) else ""
    return _section(
        f"Accuracy against time, {mode} mode", f"`results/budgets_{mode}/budgets.json`, `{record['command']}`",
        "\n".join(rows) + picture,
        "One sitting, seed 0; each method at its best learning-rate scale from the quick-mode trials. The first "
        "table reads every method's test top-1 off its curve (interpolated in log-time, never extrapolated; `-` "
        "outside a curve's span) at the wall time of the ReActNet-style run at each budget. Overhead is wall time "
        "minus steps x the median seconds a step.")


def headline():
    """The README's one table: the standard benchmark's recipes, test top-1 at 1x over seeds, and time."""
    seeds, budgets = _load("seeds_standard", "seeds.json"), _load("budgets_standard", "budgets.json")
    if not seeds or not budgets:
        return ""
    extra = sorted({p["budget"] for c in budgets["curves"].values() for p in c if p["budget"] > 1})
    rows = ["| recipe | call | learning rate | test top-1 at 1x | wall time at 1x | "
            + " | ".join(f"test top-1 at {b:g}x (wall time)" for b in extra) + " |",
            "|---|---|---|---|---|" + "---|" * len(extra)]
    starred = False
    for method, (name, call) in HEADLINE.items():
        curve = {p["budget"]: p for p in budgets["curves"].get(method, [])}
        row = seeds["methods"].get(method)
        if row and row["test_accuracy"]["n"] > 1:
            t = row["test_accuracy"]
            accuracy = f"{100 * t['mean']:.1f}% ± {100 * t['std']:.1f} ({t['n']} seeds)"
        elif 1.0 in curve:
            accuracy = f"{100 * curve[1.0]['test_accuracy']:.1f}% (1 run)"
        else:
            continue
        if 1.0 in curve:
            wall = f"{curve[1.0]['seconds']:.0f} s"
        else:
            wall, starred = f"{statistics.median(s['seconds'] for s in row['seeds'].values()):.0f} s *", True
        later = [f"{100 * curve[b]['test_accuracy']:.1f}% ({curve[b]['seconds']:.0f} s)" if b in curve else "-"
                 for b in extra]
        rates = {p["learning_rate"] for p in curve.values()} | {s["learning_rate"] for s in (row or {}).get("seeds", {}).values()}
        rows.append(f"| {name} | {call} | {', '.join(f'{r:g}' for r in sorted(rates))} | {accuracy} | {wall} | "
                    + " | ".join(later) + " |")
    settings = _standard_settings(budgets)
    notes = ["", f"ReActNet-A twin (width {settings['width']:g}) on the CIFAR-10 JPEG copy, {settings['train_limit']:,} "
             f"training images, full precision {_pct(_fp_test(budgets))} test; 1x = {settings['steps']:,} optimizer steps "
             f"of batch {settings['batch_size']} for every recipe. Test top-1 at 1x: mean ± sample sd over seeds "
             "(`results/seeds_standard/seeds.json`); wall times and the other budgets: one sitting, seed 0 "
             "(`results/budgets_standard/budgets.json`). Learning rates: each recipe's best scale in the quick trials "
             "(the quantize step's for the BiTAT recipes)."]
    if starred:
        notes.append("\\* median of the seed runs, which ran in other sittings: not comparable with the other times.")
    return "\n".join(rows + notes)


def _standard_settings(budgets):
    """Width, training images, batch size and 1x steps of the standard budgets' runs."""
    for method, curve in budgets["curves"].items():
        for p in curve:
            if p["budget"] == 1.0:
                summary = _load("budgets_standard", method, "x1", "summary.json")
                return {**summary["settings"], "steps": p["budget_steps"]}
    raise ValueError("results/budgets_standard/budgets.json has no 1x run")


def _fp_test(budgets):
    for method, curve in budgets["curves"].items():
        for p in curve:
            folder = os.path.join("budgets_standard", method, f"x{p['budget']:g}", "fp.json")
            fp = (_load(folder) or {}).get("figures") or {}
            if fp.get("fp_test_accuracy") is not None:
                return fp["fp_test_accuracy"]
    return None


# ---- the method's studies --------------------------------------------------------------------------------

def bench_tables():
    parts = []
    for path in sorted(glob.glob(os.path.join(ROOT, "results", "bench_*", "summary.json"))):
        with open(path) as f:
            summary = json.load(f)
        s = summary["settings"]
        parts.append(_section(
            f"The paper's ablation, {summary['mode']} mode",
            f"`{os.path.relpath(path, ROOT)}`, `python benchmarks/run.py --mode {summary['mode']}` at commit "
            f"{str(summary.get('commit'))[:7]}",
            _module("run").table(summary),
            f"ReActNet-A twin width {s['width']:g}, {s['train_limit']:,} training images, every method from the same "
            f"full-precision checkpoint with {_budget(summary)} optimizer steps of batch {s['batch_size']}. Every "
            "method at the runner's untuned learning rates (BiTAT 3e-3, baselines 1e-3) and on an older engine: "
            "compare the methods with each other here; tuned methods and current times are in the tables above."))
    return "\n\n".join(parts)


def _budget(summary):
    budgets = {r.get("budget_steps") for r in summary["methods"].values()}
    return ", ".join(f"{b:,}" for b in sorted(b for b in budgets if b))


def trials_table():
    record = _load("trials_quick", "trials.json")
    if not record:
        return ""
    scales = record["scales"]
    rows = ["| method | " + " | ".join(f"x{s}" for s in scales) + " | best |", "|---|" + "---|" * (len(scales) + 1)]
    for row in record["methods"].values():
        cells = [_pct(row["trials"][s]["val_accuracy"]) if s in row["trials"] else "-" for s in scales]
        best = f"x{row['best_scale']}" if row["best_scale"] else "-"
        rows.append(f"| {row['label']} | " + " | ".join(cells) + f" | {best} |")
    return _section(
        "Learning-rate trials, quick mode", f"`results/trials_quick/trials.json`, `{record['command']}`",
        "\n".join(rows),
        "Validation top-1; every learning rate of a method scaled by the factor; `-` = not run. The best scale is "
        "what the standard-mode runs use (`--scales-from quick`).")


def levers_table():
    """The default recipe with one hyperparameter of the full method changed at a time, one seed."""
    record = _load("levers_standard", "levers.json")
    if not record:
        return ""
    own = _load("levers_standard", "default", f"{record['method']}.json")
    normalization = ((own or {}).get("figures", {}).get("config") or {}).get("pass_normalization")
    caveat = ("" if normalization else " These runs predate the `pass_normalization` option: their pass "
              "re-estimated the BatchNorm statistics after every stage, as `\"recalibrated\"` does.")
    rows = ["| lever | changed | learning rates (quantize / fine-tune above / last phase) | val top-1 | test top-1 "
            "| seconds | overhead |", "|---|---|---|---|---|---|---|"]
    for name, row in record["levers"].items():
        changed = ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                            for k, v in row["overrides"].items()) or "nothing"
        rates = " / ".join(f"{v:g}" for v in row["learning_rates"].values())
        rows.append(f"| {name} | {changed} | {rates} | {_pct(row['val_accuracy'])} | {_pct(row['test_accuracy'])} "
                    f"| {row['binarize_seconds']:.0f} | {row['overhead_seconds']:.0f} s |")
    return _section(
        "The full method's own levers, standard mode", f"`results/levers_standard/levers.json`, `{record['command']}`",
        "\n".join(rows),
        f"Recipe: {record['label']}, at x{record['learning_rate_scale']:g}; one argument changed at a time, seed 0, one "
        "sitting, one run each: the 1,000-image validation split alone has a binomial sd of ~1.5 points at 65%, so "
        f"only differences beyond that count.{caveat}")


def starvation_table():
    record = _load("starvation_standard", "starvation.json")
    if not record or not record.get("curves"):
        return ""
    width = max(len(p["val_after_block"]) for c in record["curves"].values() for p in c)
    rows = ["| method | factor | steps a layer (quantize + fine-tune) | seconds | full precision | "
            + " | ".join(f"after block {i + 1}" for i in range(width)) + " |", "|---|---|---|---|---|" + "---|" * width]
    for method, points in record["curves"].items():
        for p in points:
            after = [_pct(a) for a in p["val_after_block"]] + ["-"] * (width - len(p["val_after_block"]))
            rows.append(f"| {record['labels'].get(method, method)} | x{p['factor']:g} | {p['steps_per_layer']} + "
                        f"{p['finetune_steps']} | {p['seconds']:.0f} | {_pct(p['fp_val_accuracy'])} | "
                        + " | ".join(after) + " |")
    return _section("Is the paper's pass starved of steps?",
                    f"`results/starvation_standard/starvation.json`, `{record['command']}`", "\n".join(rows),
                    "Validation top-1 after each of the first blocks of BiTAT as published (`BinarizeConfig.paper()`).")


def teacher_table():
    record = _load("teacher_quick", "teacher.json")
    if not record or not record.get("rows"):
        return ""
    return _section("Distillation from an under-trained teacher",
                    f"`results/teacher_quick/teacher.json`, `{record['command']}`", _module("teacher").markdown(record),
                    "Quick mode, one seed, validation and test top-1; every student of one start point takes the "
                    "same optimizer steps.")


# ---- the engine ------------------------------------------------------------------------------------------

def engine_runs_table():
    """Standard runs of the default recipe on the newest engine study (`results/engine_*_standard/`)."""
    folders = sorted(glob.glob(os.path.join(ROOT, "results", "engine_*_standard")))
    if not folders:
        return ""
    study = os.path.relpath(folders[-1], ROOT)
    rows = ["| run | wall (s) | overhead (s, % of wall) | outside the steps (s) | first phase beyond its steps (s) | "
            "quantize / fine-tune-above / last-phase step | pass / last-phase step | val / test top-1 |",
            "|---|---|---|---|---|---|---|---|"]
    for run in sorted(os.listdir(folders[-1])):
        for path in sorted(glob.glob(os.path.join(folders[-1], run, "*.json"))):
            if os.path.basename(path) == "summary.json":
                continue
            with open(path) as f:
                figures = json.load(f)["figures"]
            t = figures["timing"]
            phases = t["phases"]
            steps = " / ".join(f"{1000 * phases[k]['seconds_per_step']:.0f}" for k in
                               ("quantize", "fine-tune above", "final end-to-end") if k in phases)
            pass_steps = sum(phases[k]["steps"] for k in ("quantize", "fine-tune above") if k in phases)
            pass_step = sum(phases[k]["steps"] * phases[k]["seconds_per_step"]
                            for k in ("quantize", "fine-tune above") if k in phases) / max(pass_steps, 1)
            last = phases.get("final end-to-end", {}).get("seconds_per_step")
            outside = t.get("outside_steps_seconds")
            rows.append(f"| `{run}` | {t['wall_seconds']:.0f} | {t['overhead_seconds']:.1f} "
                        f"({100 * t['overhead_seconds'] / t['wall_seconds']:.1f}%) | "
                        f"{'-' if outside is None else f'{outside:.1f}'} | {t['first_phase_extra_seconds']:.1f} | "
                        f"{steps} ms | {'-' if not last else f'{pass_step / last:.2f}'} | "
                        f"{100 * figures['val_accuracy']:.1f} / {_pct(figures['test_accuracy'])} |")
    return _section(
        "Standard runs of the default recipe: where the time goes", f"`{study}/` (its README.md says what each run is "
        "and how to repeat it)", "\n".join(rows),
        "1x budget, one process a run, one sitting. Overhead = wall time minus steps x the median seconds a step; "
        "\"outside the steps\" = wall time minus the steps' own measured durations. \"Pass / last-phase step\" is the "
        "pass's mean step (quantize and fine-tune above, weighted by their steps) over the last phase's step.")


def _measured(record):
    return datetime.datetime.strptime(record["measured_at"], "%Y-%m-%d %H:%M:%S")


def _newest_sitting(rows):
    """The rows measured within SITTING_HOURS of the newest one: the case's current figures."""
    rows = [(label, r) for label, r in rows if r.get("measured_at")]
    if not rows:
        return []
    newest = max(_measured(r) for _, r in rows)
    return [(label, r) for label, r in rows if newest - _measured(r) <= datetime.timedelta(hours=SITTING_HOURS)]


def _code(r):
    return r.get("code") or str(r.get("commit"))[:7]


def engine_speed_tables():
    record = _load("engine_speed.json")
    if not record:
        return ""
    cases = {"mobilenet": [], "steps": [], "ste": [], "floor": [], "stages": []}
    for label, r in record.items():
        kind = ("floor" if "forward_seconds" in r else "ste" if "ste_seconds_per_step" in r else
                "steps" if "seconds_per_step" in r else "stages" if "overhead_parts" in r else "mobilenet")
        cases[kind].append((label, r))
    cases = {kind: _newest_sitting(rows) for kind, rows in cases.items()}
    parts = [
        "## Engine micro-benchmarks\n\nSource: `results/engine_speed.json` (`python benchmarks/engine_speed.py "
        "--case <case> --label <label>`). Each table shows the case's newest sitting only (rows measured within "
        f"{SITTING_HOURS} hours of its newest row); the file keeps every older row. Compare rows of one table only.",
        _mobilenet_rows(cases["mobilenet"]), _steps_rows(cases["steps"]), _ste_rows(cases["ste"]),
        _floor_rows(cases["floor"]), _stages_rows(cases["stages"])]
    return "\n\n".join(part for part in parts if part)


def _mobilenet_rows(rows):
    if not rows:
        return ""
    out = ["**Per-stage cost** (`--case mobilenet`, the default): MobileNet alpha 0.25 at 32x32, 13 binarized layers, "
           "one step each.\n", "| label | code | seconds | seconds a layer |", "|---|---|---|---|"]
    for label, r in rows:
        out.append(f"| {label} | {_code(r)} | {min(r['seconds']):.1f} | {r['seconds_per_layer']:.2f} |")
    return "\n".join(out)


def _steps_rows(rows):
    if not rows:
        return ""
    out = ["**Seconds a step on the standard model** (`--case steps`): ReActNet-A twin width 0.25, batch 128, 8 + 8 "
           "steps a layer; median of each phase's median after warm-up.\n",
           "| label | code | recipe | quantize step | fine-tune-above step | end-to-end STE step (no teacher) | "
           "progressive / STE | the recipe's own end-to-end step (teacher in it) | progressive / own |",
           "|---|---|---|---|---|---|---|---|---|"]
    for label, r in rows:
        t = r["seconds_per_step"]
        own = t.get("final end-to-end")
        mean = (t["quantize"] + t["fine-tune above"]) / 2
        out.append(f"| {label} | {_code(r)} | {_RECIPES[r.get('recipe', 'paper')]} | {1000 * t['quantize']:.0f} ms | "
                   f"{1000 * t['fine-tune above']:.0f} ms | {1000 * t['end-to-end STE']:.0f} ms | "
                   f"{r['progressive_mean_vs_end_to_end']:.2f}x | "
                   + (f"{1000 * own:.0f} ms | {mean / own:.2f}x |" if own else "- | - |"))
    return "\n".join(out)


def _ste_rows(rows):
    if not rows:
        return ""
    out = ["**An end-to-end STE step alone, with and without XLA** (`--case ste [--xla]`): ReActNet-A twin width "
           "0.25, batch 128, 24 steps.\n",
           "| label | code | XLA (`jit_compile`) | STE step | first phase beyond its steps (trace, compile) |",
           "|---|---|---|---|---|"]
    for label, r in rows:
        out.append(f"| {label} | {_code(r)} | {'yes' if r.get('xla') else 'no'} | "
                   f"{1000 * r['ste_seconds_per_step']:.0f} ms | {r['timing']['first_phase_extra_seconds']:.0f} s |")
    return "\n".join(out)


def _floor_rows(rows):
    if not rows:
        return ""
    out = ["**The floor of a progressive step** (`--case floor`): the binarized standard model with plain Larq "
           "quantizers, no BiTAT terms, no teacher, batch 128; a train step whose tape differentiates only the weight "
           "layers from the named one up (a fine-tune-above step's floor) or that layer alone (a quantize step's); "
           "median seconds and the ratio to the step with every layer.\n",
           "| label | tape from layer up / that layer alone | forward alone | teacher's forward | mean over the "
           "starting layers (from / alone) |", "|---|---|---|---|---|"]
    for label, r in rows:
        cells = "; ".join(
            f"{row['name']}: {1000 * row['seconds_per_step']:.0f} ms ({row['vs_all_layers']:.2f}x)"
            + (f" / {1000 * row['layer_only_seconds_per_step']:.0f} ms ({row['layer_only_vs_all_layers']:.2f}x)"
               if "layer_only_seconds_per_step" in row else "") for row in r["rows"])
        teacher = r.get("teacher_forward_seconds")
        alone = r.get("layer_only_mean_vs_all_layers")
        out.append(f"| {label} | {cells} | {1000 * r['forward_seconds']:.0f} ms | "
                   f"{'-' if teacher is None else f'{1000 * teacher:.0f} ms'} | {r['mean_vs_all_layers']:.2f}x"
                   f"{'' if alone is None else f' / {alone:.2f}x'} |")
    return "\n".join(out)


def _stages_rows(rows):
    if not rows:
        return ""
    parts = sorted({part for _, r in rows for part in r["overhead_parts"]},
                   key=lambda part: -max(r["overhead_parts"].get(part, {}).get("seconds") or 0 for _, r in rows))
    out = ["**Where a progressive run's non-training time goes** (`--case stages [--recipe default]`): ReActNet-A "
           "twin width 0.25, batch 128 (random, in memory), 8 validation batches, 8 + 8 steps a layer, capture 4 and "
           "recalibration 8 batches; seconds, and calls in parentheses.\n",
           "| | " + " | ".join(label for label, _ in rows) + " |", "|---|" + "---|" * len(rows),
           "| code | " + " | ".join(_code(r) for _, r in rows) + " |",
           "| recipe, accuracy measured | " + " | ".join(
               f"{_RECIPES[r.get('recipe', 'paper')]}, {_EVALUATED[r.get('evaluate_every', 'block')]}"
               for _, r in rows) + " |",
           "| wall | " + " | ".join(f"{r['wall_seconds']:.0f}" for _, r in rows) + " |",
           "| steps x median | " + " | ".join(f"{r['timing']['training_seconds']:.0f}" for _, r in rows) + " |",
           "| **overhead** | " + " | ".join(
               f"**{r['timing']['overhead_seconds']:.0f}** ({100 * r['timing']['overhead_seconds'] / r['wall_seconds']:.0f}%)"
               for _, r in rows) + " |"]
    for part in parts:
        cells = []
        for _, r in rows:
            v = r["overhead_parts"].get(part)
            cells.append("-" if v is None else f"{v['seconds']:.1f}" + (f" ({v['calls']})" if v.get("calls") else ""))
        out.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---- deployment, models, memory, examples --------------------------------------------------------------

def deployment_table():
    record = _load("deployment.json")
    if not record:
        return ""
    cpu = record.get("machine", {}) if isinstance(record.get("machine"), dict) else {}
    return _section(
        "What ships", f"`results/deployment.json`, `{record['command']}`", _module("deployment").table(record),
        f"LCE's interpreter on an x86 CPU ({cpu.get('cpu_model', '?')}), one image a call, median after warm-up; "
        "agreement is top-1 agreement with the Keras model the file came from. On x86 LCE runs reference kernels "
        "for its binary ops: these latencies compare files on this CPU and do not predict a phone.")


def applications_table():
    record = _load("applications.json")
    if not record:
        return ""
    return _section("Keras Applications", f"`results/applications.json`, `{record['command']}`", record["table"],
                    "Random weights (the standard model: its trained full-precision weights), random 32x32 data, each "
                    "recipe at a tiny budget (one quantisation step a layer for the pass, 20 steps a whole-network "
                    "phase): what converts, not accuracy. The export raises on any binarized layer left float, so "
                    "a row without error has every binarized layer as LceBconv2d.")


def memory_table():
    record = _load("memory.json")
    if not record:
        return ""
    rows = ["| examples | layer width | dataset in memory | RSS before binarize | peak RSS |", "|---|---|---|---|---|"]
    for p in record["points"]:
        rows.append(f"| {p['examples']:,} | {p['width']} | {p['dataset_mb']:.0f} MB | "
                    f"{p['rss_before_binarize_mb']:.0f} MB | {p['peak_rss_mb']:.0f} MB |")
    return _section("Peak memory of `binarize`", f"`results/memory.json`, `{record['command']}`", "\n".join(rows),
                    f"Capture budget {record['points'][0]['capture_memory_mb']} MB, data held in memory.")


def demo_table():
    rows = ["| report | recipe | full precision | binary | seconds | accuracy split |", "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(ROOT, "results", "demo", "*.json"))):
        with open(path) as f:
            report = json.load(f)
        recipe = "`--paper` (Algorithm 1 as published)" if report["config"].get("final_finetune_epochs") == 0 \
            else "the default"
        rows.append(f"| `{os.path.relpath(path, ROOT)}` | {recipe} | {_pct(report['fp_accuracy'])} | "
                    f"{_pct(report['binary_accuracy'])} | {report['seconds']:.0f} | {report['accuracy_split']} "
                    "(the digits test split) |")
    if len(rows) == 2:
        return ""
    return _section("The demo", "`results/demo/`, `.venv/bin/bitat-tf demo --verbose 0 [--paper] --report "
                    "results/demo/<name>.json`", "\n".join(rows),
                    "A small CNN trained on sklearn's 8x8 digits (seeded), then binarized.")


def example_table():
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
    if len(rows) == 2:
        return ""
    return _section("The CIFAR-10 example", "`results/cifar10_quick.json`, `.venv/bin/python "
                    "examples/cifar10_reactnet.py --quick --out results/cifar10_quick.json`", "\n".join(rows),
                    "The ReActNet-A twin (width 0.25) trained on 16,000 images, then BiTAT as published on a deliberately "
                    "tiny budget, exported to TFLite and LCE: the pipeline end to end, not the best accuracy.")


# ---- the documents ---------------------------------------------------------------------------------------

_INTRO = """# Results

Generated by `python scripts/results_table.py --write` from the JSON files in `results/`; do not edit by
hand (`tests/test_docs.py` fails when this page differs from what the script writes). Accuracies are top-1
on the 10,000-image test split of the CIFAR-10 JPEG copy (not comparable with published CIFAR-10 figures)
unless a table says validation; times are wall-clock seconds on a 2-core x86 machine, comparable only
within one table. How the benchmark works and how to rerun each study: [benchmarks.md](benchmarks.md)."""

def pending_section():
    """What the paper's-regime study has still to run: each method of `benchmarks/regime.py` at 1x, 4x, 16x."""
    regime = _module("regime")
    record = _load("regime_standard", "regime.json") or {}
    done = {(m, p["budget"]) for m, points in record.get("curves", {}).items() for p in points}
    missing = {}
    for method in regime.METHODS:
        budgets = [b for b in (1.0, 4.0, 16.0) if (method, b) not in done]
        if budgets:
            missing[method] = budgets
    if not missing:
        return ""
    runs = "; ".join(f"`{m}` at {', '.join(f'{b:g}x' for b in budgets)}" for m, budgets in missing.items())
    return ("## Being measured\n\n"
            f"Still to run in the paper's-regime study (`results/regime_standard/README.md` has the command; the "
            f"runs resume): {runs}. Their rows appear above when their JSON is committed and this page is "
            "regenerated.")


def regime_section():
    """The paper's regime (`benchmarks/regime.py`): every method at 1x, 4x and 16x, time derived from steps."""
    record = _load("regime_standard", "regime.json")
    if not record or not record.get("curves"):
        return ""
    chart = "results/regime_standard/regime.png"
    picture = f"\n\n![test top-1 against derived time](../{chart})" if os.path.exists(os.path.join(ROOT, chart)) else ""
    return _section("The paper's regime: 1x, 4x and 16x the standard budget",
                    "`results/regime_standard/regime.json`, `python benchmarks/regime.py` (from the runs in "
                    "`results/regime_standard/runs/`, all from the committed full-precision start point)", _module("regime").markdown(record) + picture,
                    "Minutes are derived from each run's optimizer steps at the step times of the method's 1x run, "
                    "plus that run's time outside the steps.")


def document():
    """The text of docs/results.md."""
    parts = (_INTRO, seeds_table(), budgets_table("standard"), regime_section(), starvation_table(), teacher_table(),
             pending_section(), bench_tables(),
             trials_table(), budgets_table("quick"), levers_table(), engine_runs_table(), engine_speed_tables(),
             deployment_table(), applications_table(), memory_table(), demo_table(), example_table())
    return "\n\n".join(part for part in parts if part) + "\n"


def readme_with_headline(readme):
    head, rest = readme.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{headline()}\n{END}{tail}"


def main(argv):
    text = document()
    if not argv:
        print(text, end="")
        return 0
    doc_path, readme_path = os.path.join(ROOT, DOC), os.path.join(ROOT, "README.md")
    with open(readme_path) as f:
        readme = f.read()
    wanted = {doc_path: text, readme_path: readme_with_headline(readme)}
    if argv == ["--check"]:
        stale = [os.path.relpath(p, ROOT) for p, t in wanted.items() if not os.path.exists(p) or open(p).read() != t]
        for path in stale:
            print(f"{path} is stale: run python scripts/results_table.py --write", file=sys.stderr)
        return 1 if stale else 0
    if argv != ["--write"]:
        print(__doc__, file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(doc_path), exist_ok=True)
    for path, content in wanted.items():
        with open(path, "w") as f:
            f.write(content)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
