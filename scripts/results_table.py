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
                     f"{s['batch_size']}; binarization of all methods {_minutes(summary)} min in all.\n\n"
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


def engine_table():
    record = _load("engine_speed.json")
    if not record:
        return ""
    rows = ["**Per-stage cost** (`results/engine_speed.json`, issue 13's MobileNet case, same machine and sitting):\n",
            "| engine | commit | seconds | seconds a layer |", "|---|---|---|---|"]
    for label, r in record.items():
        rows.append(f"| {label} | {str(r['commit'])[:7]} | {min(r['seconds']):.1f} | {r['seconds_per_layer']:.2f} |")
    return "\n".join(rows)


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
    parts = ("\n".join(rows), bench_tables(), trials_table(), engine_table(), applications_table(), memory_table())
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
