"""Is the paper's pass starved of steps? Its first blocks at 1x, 4x, 16x and 64x the standard per-layer budget.

    python benchmarks/starvation.py                                   # bitat and sequential, x1,4,16,64
    python benchmarks/starvation.py --methods bitat --factors 1,4     # a subset (resumes what is on disk)
    python benchmarks/starvation.py --factors 16,64 --blocks 1        # long budgets on the first block only
    python benchmarks/starvation.py --summary-only                    # JSON and PNG from the runs on disk

Standard mode's model, data and full-precision start point (`benchmarks/run.py`; the checkpoint is trained
and cached on first use). Each run is Algorithm 1 as published (`BinarizeConfig.paper()`: task loss only, no
last phase, BatchNorms recalibrated above each layer) restricted to the first `--blocks` blocks of
ReActNet-A (8 of 31 convolutions for 3 blocks; everything above stays full precision and is fine-tuned),
with `factor x` the standard run's 28 quantize and 12 fine-tune steps a layer. Validation top-1 is measured
after every layer; the per-block figure is the one after the block's last layer. Both methods run at the
learning-rate scale the trials chose for the paper's pass (`bitat` in `results/trials_quick/trials.json`):
the same step sizes for both, chosen on validation.

Each (method, factor) runs in its own process and writes `<out>/<method>_x<factor>.json`; a rerun skips
runs whose file holds the same settings, and a run interrupted between two layers resumes from its last
finished layer (`checkpoint_dir` under `runs/`). The summary is `<out>/starvation.json` and
`<out>/starvation.png`.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import budgets  # noqa: E402
import trials  # noqa: E402

ROOT = bench.ROOT
MODE = "standard"
LABELS = {"bitat": "BiTAT as published (transform, k-means aggregation)",
          "sequential": "sequential ablation (no transform)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="bitat,sequential")
    p.add_argument("--factors", default="1,4,16,64", help="factors on the standard per-layer steps, run in order")
    p.add_argument("--blocks", type=int, default=3, help="how many of ReActNet-A's 13 blocks to binarize")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, help="learning-rate scale (default: the trials' best for bitat)")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "starvation_standard"))
    p.add_argument("--summary-only", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: "<method>:<factor>"
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(args.methods) - set(LABELS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {sorted(LABELS)}")
    args.factors = [float(f) for f in args.factors.split(",") if f]
    if args.scale is None:
        args.scale = float(budgets.best_scales("quick").get("bitat") or 1.0)
    return args


def run_settings(args, method, factor):
    """What a run's figures depend on; a stored run is reused only when these match."""
    mode = bench.MODES[MODE]
    return {"method": method, "factor": factor, "blocks": args.blocks, "seed": args.seed, "scale": args.scale,
            "steps_per_layer": round(mode["steps_per_layer"] * factor),
            "finetune_steps": round(mode["finetune_steps"] * factor),
            "learning_rate": trials.BASE["learning_rate"] * args.scale,
            "finetune_learning_rate": trials.BASE["finetune_learning_rate"] * args.scale,
            "train_limit": mode["train_limit"], "fp_epochs": mode["fp_epochs"]}


def _path(args, method, factor):
    suffix = "" if args.blocks == 3 else f"_b{args.blocks}"  # runs of the default 3 blocks keep short names
    return os.path.join(args.out, f"{method}_x{factor:g}{suffix}.json")


# ---- worker: one (method, factor) in its own process -------------------------------------------------------
def worker(args):
    import bitat_tf
    from bitat_tf import data, fp_training, runinfo, zoo

    method, factor = args.worker.split(":")
    chosen = run_settings(args, method, float(factor))
    mode = bench.MODES[MODE]
    fp_args = argparse.Namespace(width=0.25, train_limit=mode["train_limit"], fp_epochs=mode["fp_epochs"],
                                 seed=args.seed, fp_seed=None)
    train, val, _ = data.cifar10_splits(train_limit=mode["train_limit"], batch_size=128, seed=args.seed)
    model = zoo.reactnet_a(width=0.25)
    fp_args.cache_dir = os.path.join(ROOT, "runs", "cache")
    model, _ = fp_training.train_full_precision(model, train, epochs=mode["fp_epochs"], verbose=2,
                                                cache_path=bench.fp_cache(fp_args))
    blocks = zoo.reactnet_a_blocks(model)
    chosen_blocks, above = blocks[:args.blocks], [n for block in blocks[args.blocks:] for n in block]
    config = bitat_tf.BinarizeConfig.paper(
        variant=method, steps_per_layer=chosen["steps_per_layer"], finetune_steps=chosen["finetune_steps"],
        learning_rate=chosen["learning_rate"], finetune_learning_rate=chosen["finetune_learning_rate"],
        blocks=chosen_blocks, keep_full_precision=above, evaluate_every="layer",
        capture_batches=mode["capture_batches"], bn_recalibration_batches=mode["bn_recalibration_batches"],
        seed=args.seed)
    checkpoints = os.path.join(ROOT, "runs", "checkpoints", "starvation",
                               os.path.basename(_path(args, method, float(factor)))[:-5])
    start = time.time()
    result = bitat_tf.binarize(model, train, validation_data=val, config=config, checkpoint_dir=checkpoints,
                               verbose=1)
    rows = {r.name: r for r in result.report.layers}
    per_block = []
    for index, names in enumerate(chosen_blocks, start=1):
        last = rows[names[-1]]
        per_block.append({"block": index, "layers": names, "val_accuracy": last.val_accuracy,
                          "task_loss_end_of_quantize": [(rows[n].final_terms or {}).get("loss")
                                                        for n in names],
                          "seconds": sum(rows[n].seconds or 0.0 for n in names)})
    return {"label": LABELS[method], "config": config.get_config(), "seconds": time.time() - start,
            "fp_val_accuracy": result.report.fp_accuracy, "val_accuracy": result.report.binary_accuracy,
            "per_block": per_block,
            "per_layer": {n: {"val_accuracy": rows[n].val_accuracy, "final_terms": rows[n].final_terms,
                              "seconds": rows[n].seconds} for block in chosen_blocks for n in block},
            "optimizer_steps": sum(t["steps"] for t in result.report.timing["phases"].values()),
            "timing": result.report.timing, **runinfo.cpu()}


# ---- driver ----------------------------------------------------------------------------------------------
def _stored(path, chosen):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    return record if record.get("settings") == chosen else None


def run_all(args, argv):
    for factor in args.factors:  # every method at one factor before the next
        for method in args.methods:
            path, chosen = _path(args, method, factor), run_settings(args, method, factor)
            if _stored(path, chosen):
                print(f"== {method} x{factor:g}: reusing {os.path.relpath(path, ROOT)}", flush=True)
                continue
            print(f"== {method} x{factor:g}: running", flush=True)
            code = subprocess.call([sys.executable, os.path.abspath(__file__), *argv,
                                    "--worker", f"{method}:{factor:g}"])
            if code != 0:
                print(f"== {method} x{factor:g}: FAILED (exit {code}); the others go on", flush=True)


def write_summary(args):
    from bitat_tf import runinfo

    runs = {}
    for name in sorted(os.listdir(args.out)) if os.path.isdir(args.out) else []:
        if name.endswith(".json") and "_x" in name:
            with open(os.path.join(args.out, name)) as f:
                record = json.load(f)
            runs.setdefault(record["settings"]["method"], []).append(record)
    curves = {}
    for method, records in runs.items():
        records.sort(key=lambda r: (r["settings"]["factor"], r["settings"]["blocks"]))
        curves[method] = [_point(r) for r in records]
    summary = {"what": "validation top-1 after each of the first blocks, the paper's pass at factor x the "
                       "standard per-layer steps", "curves": curves, "labels": {m: LABELS[m] for m in curves},
               "command": _commands(curves),
               **runinfo.provenance()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "starvation.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    if curves:
        plot(summary, os.path.join(args.out, "starvation.png"))
    for method, points in curves.items():
        for p in points:
            blocks = " ".join(f"{100 * a:.1f}" for a in p["val_after_block"])
            print(f"{method} x{p['factor']:g}: val after blocks {blocks} (FP {100 * p['fp_val_accuracy']:.1f}); "
                  f"{p['seconds']:.0f} s")
    return summary


def _commands(curves):
    """The commands that regenerate the runs on disk: one per number of blocks, with its methods and factors."""
    groups = {}
    for method, points in curves.items():
        for p in points:
            group = groups.setdefault(p["blocks"], ({}, set()))
            group[0][method] = None
            group[1].add(p["factor"])
    return "; ".join(f"python benchmarks/starvation.py --methods {','.join(methods)} --factors "
                     f"{','.join(f'{f:g}' for f in sorted(factors))}" + ("" if blocks == 3 else f" --blocks {blocks}")
                     for blocks, (methods, factors) in sorted(groups.items(), reverse=True))


def _point(record):
    figures, settings = record["figures"], record["settings"]
    after = [b["val_accuracy"] for b in figures["per_block"]]
    drops = [before - now for before, now in zip([figures["fp_val_accuracy"]] + after, after)]
    return {"factor": settings["factor"], "blocks": settings["blocks"], "steps_per_layer": settings["steps_per_layer"],
            "finetune_steps": settings["finetune_steps"], "optimizer_steps": figures["optimizer_steps"],
            "seconds": figures["seconds"], "fp_val_accuracy": figures["fp_val_accuracy"],
            "val_after_block": after, "drop_per_block": drops,
            "task_loss_end_of_quantize": [b["task_loss_end_of_quantize"] for b in figures["per_block"]],
            "cpu": figures.get("cpu")}


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    factors = sorted({p["factor"] for points in summary["curves"].values() for p in points})
    color = {f: plt.get_cmap("viridis")(i / max(1, len(factors) - 1)) for i, f in enumerate(factors)}
    for method, points in summary["curves"].items():
        style = "-" if method == "bitat" else "--"  # the colour is the factor, the line style the method
        for p in points:
            left.plot(range(0, len(p["val_after_block"]) + 1),
                      [100 * p["fp_val_accuracy"]] + [100 * a for a in p["val_after_block"]], style, marker="o",
                      color=color[p["factor"]], label=f"{method} x{p['factor']:g}")
        for b in range(max(len(p["drop_per_block"]) for p in points)):  # runs may cover fewer blocks
            have = [p for p in points if len(p["drop_per_block"]) > b]
            right.plot([p["factor"] for p in have], [100 * p["drop_per_block"][b] for p in have], style,
                       marker="o", label=f"{method}, block {b + 1}")
    left.set_xticks(range(0, max(len(p["val_after_block"]) for c in summary["curves"].values() for p in c) + 1))
    left.set_xlabel("blocks binarized (0 = full precision)")
    left.set_ylabel("validation top-1 (%)")
    left.set_title("accuracy after each block")
    left.legend(fontsize=7, ncol=2)
    right.set_xscale("log", base=2)
    right.set_xlabel("factor on the standard per-layer steps (28 quantize + 12 fine-tune)")
    right.set_ylabel("validation points lost in the block")
    right.set_title("what each block costs, against steps")
    right.axhline(0, color="gray", linewidth=0.8)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.worker:
        method, factor = args.worker.split(":")
        chosen = run_settings(args, method, float(factor))
        bench.write_record(_path(args, method, float(factor)), {"settings": chosen, "figures": worker(args)})
        return 0
    if not args.summary_only:
        run_all(args, argv)
    write_summary(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
