"""The full method's own hyperparameters around the default recipe: lambda, gamma, k (and the transform
itself), each changed alone, measured on validation.

    python benchmarks/levers.py --mode standard --seed 0                 # every lever, resumable
    python benchmarks/levers.py --mode standard --levers default,lambda_x10

Every lever is one `benchmarks/run.py` invocation of the default recipe (`bitat_e2e_p12`, at its best
learning-rate scale from `results/trials_quick/trials.json`) with one `BinarizeConfig` argument changed
(`--set`), from the same full-precision checkpoint and seed; the unchanged recipe runs beside them in the
same sitting ("default"). The transform switched off altogether is the method `sequential_e2e_p12`
(`benchmarks/seeds.py`).
The summary `results/levers_<mode>/levers.json` lists validation (for choosing) and test (reported, not
used) top-1 of each. One seed: a lever shows only where it moves the result by more than the spread of
the default over seeds (`results/seeds_standard`, ~0.3-0.6 points).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import budgets  # noqa: E402
import run as bench  # noqa: E402
import trials  # noqa: E402

METHOD = "bitat_e2e_p12"
# name -> BinarizeConfig arguments changed from the default recipe's (quant_weight=1, l1_weight=0,
# max_groups=32, reg_weight=1). "pass_rates" scales only the pass's two learning rates (quantize and
# fine-tune above; the trials scale them together with the last phase's): the pass starts from the
# full-precision weights, where one Adam step of the default's 2.4e-2 is a large part of a weight.
LEVERS = {
    "default": {},
    "pass_lr_x0.25": {"pass_rates": 0.25},
    "pass_lr_x0.0625": {"pass_rates": 0.0625},
    "lambda_x0.1": {"quant_weight": 0.1},
    "lambda_x10": {"quant_weight": 10.0},
    "gamma_0.1": {"l1_weight": 0.1},
    "k_8": {"max_groups": 8},
    "k_128": {"max_groups": 128},
}
PASS_RATES = ("learning_rate", "finetune_learning_rate")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(bench.MODES), default="standard")
    p.add_argument("--levers", default=",".join(LEVERS), help=f"comma-separated, from {list(LEVERS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scales-from", default="quick", help="the trials' mode whose best learning-rate scale to use")
    p.add_argument("--out", help="default: results/levers_<mode>")
    p.add_argument("--summary-only", action="store_true")
    args = p.parse_args(argv)
    out = args.out or os.path.join(ROOT, "results", f"levers_{args.mode}")
    names = [n for n in args.levers.split(",") if n]
    unknown = sorted(set(names) - set(LEVERS))
    if unknown:
        p.error(f"unknown levers {unknown}; choose from {list(LEVERS)}")
    scale = budgets.best_scales(args.scales_from).get(METHOD)
    if scale is None:
        p.error(f"no learning-rate trials of {METHOD} in results/trials_{args.scales_from}/trials.json; run "
                f"benchmarks/trials.py --mode {args.scales_from} --methods {METHOD} first")
    scale = float(scale)
    if not args.summary_only:
        for name in names:
            subprocess.call([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--mode", args.mode,
                             "--methods", METHOD, "--seed", str(args.seed), "--fp-seed", "0", "--no-export",
                             *lever_flags(LEVERS[name], scale), "--out", os.path.join(out, name)])
    write_summary(out, args, scale)
    return 0


def lever_flags(lever, scale):
    """`benchmarks/run.py` flags of one lever: the learning rates at `scale` (the pass's times the lever's
    factor) and a `--set` per changed config argument."""
    lever = dict(lever)
    pass_factor = lever.pop("pass_rates", 1.0)
    rates = trials.rate_flags(scale, {k: pass_factor for k in PASS_RATES})
    return rates + [f"--set={k}={json.dumps(v)}" for k, v in lever.items()]


def write_summary(out, args, scale):
    from bitat_tf import runinfo

    table = {}
    for name in LEVERS:
        path = os.path.join(out, name, f"{METHOD}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            record = json.load(f)
        figures = record["figures"]
        chosen = record["settings"]
        table[name] = {"overrides": LEVERS[name], "seed": chosen["seed"],
                       "learning_rates": {"quantize": chosen.get("learning_rate"),
                                          "fine_tune_above": chosen.get("finetune_learning_rate"),
                                          "last_phase": chosen.get("baseline_learning_rate")},
                       "val_accuracy": figures["val_accuracy"], "test_accuracy": figures["test_accuracy"],
                       "binarize_seconds": figures["binarize_seconds"],
                       "overhead_seconds": figures["timing"]["overhead_seconds"]}
    summary = {"mode": args.mode, "method": METHOD, "label": bench.LABELS[METHOD], "learning_rate_scale": scale,
               "levers": table, "selection": "validation; test reported, not used",
               "command": f"python benchmarks/levers.py --mode {args.mode} --seed {args.seed} "
                          f"--levers {','.join(table)}", **runinfo.provenance()}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "levers.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    for name, row in table.items():
        print(f"{name:12s} val {100 * row['val_accuracy']:.1f}%  test {100 * row['test_accuracy']:.2f}%  "
              f"{row['binarize_seconds']:.0f} s")
    return summary


if __name__ == "__main__":
    sys.exit(main())
