"""Equal tuning effort: every method gets the same learning-rate trials, chosen on validation only.

    python benchmarks/trials.py --mode quick                         # the default grid, resumable
    python benchmarks/trials.py --mode quick --methods reactnet,bitat_e2e --scales 1

Each trial scales all of a method's learning rates (BiTAT's quantisation, fine-tune and last-phase rates,
the baselines' rate) by the same factor, so every method gets the same number of trials around its
default. A trial is one `benchmarks/run.py` invocation (resumable per method); this script writes
`results/trials_<mode>/trials.json` with each method's validation accuracy per scale and its best scale.
Test accuracy is not read here: choices are made on validation.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

DEFAULT_METHODS = "reactnet,ste,bitat_e2e,bitat,sequential_e2e,bitat_kd,bitat_ft"
BASE = {"learning_rate": 3e-3, "baseline_learning_rate": 1e-3, "finetune_learning_rate": 5e-4}


def rate_flags(scale, factors=None):
    """`benchmarks/run.py` learning-rate flags: every base rate times `scale`, and times `factors[key]`
    where given."""
    factors = factors or {}
    return [f"--{k.replace('_', '-')}={v * scale * factors.get(k, 1.0):g}" for k, v in BASE.items()]


def trial_dir(out, scale):
    return os.path.join(out, f"lr_x{scale:g}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(bench.MODES), default="quick")
    p.add_argument("--methods", default=DEFAULT_METHODS)
    p.add_argument("--scales", default="1,0.5,2", help="learning-rate factors, tried in this order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="default: results/trials_<mode>")
    args = p.parse_args(argv)
    out = args.out or os.path.join(ROOT, "results", f"trials_{args.mode}")
    methods = [m for m in args.methods.split(",") if m]
    scales = [float(s) for s in args.scales.split(",")]
    for scale in scales:
        rates = rate_flags(scale)
        subprocess.call([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--mode", args.mode,
                         "--methods", ",".join(methods), "--seed", str(args.seed), "--no-export", *rates,
                         "--out", trial_dir(out, scale)])
    write_summary(out)
    return 0


def trials_present(out):
    """Every (method, scale) trial already on disk under `out`, so each invocation's summary covers all."""
    scales, methods = [], []
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        if name.startswith("lr_x") and os.path.isdir(os.path.join(out, name)):
            scales.append(float(name[len("lr_x"):]))
            for f in sorted(os.listdir(os.path.join(out, name))):
                method = f[:-len(".json")]
                if f.endswith(".json") and method in bench.LABELS and method != "fp" and method not in methods:
                    methods.append(method)
    return methods, sorted(scales)


def write_summary(out):
    methods, scales = trials_present(out)
    table = {}
    for method in methods:
        trials = {}
        for scale in scales:
            path = os.path.join(trial_dir(out, scale), f"{method}.json")
            if os.path.exists(path):
                with open(path) as f:
                    figures = json.load(f)["figures"]
                trials[f"{scale:g}"] = {"val_accuracy": figures["val_accuracy"],
                                        "binarize_seconds": figures["binarize_seconds"]}
        best = max(trials, key=lambda s: trials[s]["val_accuracy"]) if trials else None
        table[method] = {"label": bench.LABELS[method], "trials": trials, "best_scale": best,
                         "best_val_accuracy": trials[best]["val_accuracy"] if best else None}
    from bitat_tf import runinfo

    summary = {"scales": [f"{s:g}" for s in scales], "base_learning_rates": BASE, "methods": table,
               "selection": "highest validation accuracy; test accuracy not consulted",
               "command": _commands(table, out), **runinfo.provenance()}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "trials.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    for method, row in table.items():
        cells = ", ".join(f"x{s}: {100 * t['val_accuracy']:.1f}%" for s, t in row["trials"].items())
        print(f"{method:16s} {cells}  best x{row['best_scale']}")


def _commands(table, out):
    mode = os.path.basename(os.path.normpath(out))[len("trials_"):] or "quick"
    return bench.regenerate_commands("trials.py", f"--mode {mode}", "--scales",
                                     {method: ",".join(row["trials"]) for method, row in table.items()})


if __name__ == "__main__":
    sys.exit(main())
