"""Seeds: the standard-budget runs repeated with other seeds of binarization, mean and spread per method.

    python benchmarks/seeds.py --mode standard --scales-from quick --methods bitat_e2e,reactnet --seeds 0,1,2

Every seed starts from the same full-precision checkpoint (`--fp-seed`, default 0) and changes what the
binarization draws: the order and augmentation of the training data, the sampling of captures and k-means,
TensorFlow's initial random state. Each (seed, method) is one `benchmarks/budgets.py` point at budget 1
under `results/seeds_<mode>/s<seed>/`, so the set resumes after an interruption; seeds run in order, all
methods of a seed before the next. The summary (`results/seeds_<mode>/seeds.json`) gives, per method,
each seed's validation and test top-1, wall seconds and overhead, and their mean, sample standard deviation
and range. Run it in one sitting on one machine when the seconds are to be compared.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import budgets  # noqa: E402
import run as bench  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(bench.MODES), default="standard")
    p.add_argument("--methods", default="bitat_e2e,reactnet")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fp-seed", type=int, default=0)
    p.add_argument("--scales-from", help="the trials' mode whose best learning-rate scales to use")
    p.add_argument("--out", help="default: results/seeds_<mode>")
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args(argv)
    out = args.out or os.path.join(ROOT, "results", f"seeds_{args.mode}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    if not args.summary_only:
        for seed in seeds:
            subprocess.call([sys.executable, os.path.join(ROOT, "benchmarks", "budgets.py"), "--mode", args.mode,
                             "--methods", args.methods, "--budgets", "1", "--seed", str(seed),
                             "--fp-seed", str(args.fp_seed), "--out", os.path.join(out, f"s{seed}"),
                             *(["--scales-from", args.scales_from] if args.scales_from else [])])
    write_summary(out, args)
    return 0


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def write_summary(out, args):
    from bitat_tf import runinfo

    runs = {}
    for name in sorted(os.listdir(out)) if os.path.isdir(out) else []:
        if not (name.startswith("s") and name[1:].isdigit()):
            continue
        for method, points in budgets.curves_on_disk(os.path.join(out, name)).items():
            for point in points:
                if point["budget"] == 1.0:
                    runs.setdefault(method, {})[int(name[1:])] = point
    table = {}
    for method, by_seed in runs.items():
        table[method] = {"label": bench.LABELS[method], "seeds": by_seed,
                         **{key: spread([r[key] for r in by_seed.values()])
                            for key in ("val_accuracy", "test_accuracy", "seconds", "overhead_seconds")}}
    summary = {"mode": args.mode, "fp_seed": args.fp_seed, "methods": table,
               "command": _command(table, args), **runinfo.provenance()}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "seeds.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    for method, row in table.items():
        test, seconds = row["test_accuracy"], row["seconds"]
        print(f"{method:12s} test {100 * test['mean']:.1f}% (sd {100 * (test['std'] or 0):.1f}, "
              f"{100 * test['min']:.1f}-{100 * test['max']:.1f}, n={test['n']}); {seconds['mean']:.0f} s")
    return summary


def _command(table, args):
    source = f" --scales-from {args.scales_from}" if getattr(args, "scales_from", None) else ""
    return bench.regenerate_commands("seeds.py", f"--mode {args.mode}{source}", "--seeds", {
        method: ",".join(str(s) for s in sorted(row["seeds"])) for method, row in table.items()})


if __name__ == "__main__":
    sys.exit(main())
