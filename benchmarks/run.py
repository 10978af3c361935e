"""BiTAT against ReActNet-style and straight-through binarization, and the paper's ablation, side by side.

    python benchmarks/run.py --mode quick       # one small run for development (about 15 minutes)
    python benchmarks/run.py --mode standard    # the README's figures (at most 90 minutes, FP cached)
    python benchmarks/run.py --mode standard --methods bitat,reactnet --seed 1

Protocol (../shared/design/benchmarks.md): one full-precision ReActNet-A twin, trained once and cached by
recipe; every method starts from that checkpoint with the same training budget, counted in optimizer steps
of the same batch size: BiTAT's `layers x (steps_per_layer + finetune_steps)`, which the end-to-end
baselines spend in one (STE) or two (ReActNet) phases. Choices use a validation split held out from the
training records; the test split is read once per method, at the end.

Each method runs in its own process (clean peak RSS, and a crash loses only that method) and writes
`<out>/<method>.json`; a rerun skips methods whose file exists for the same settings and the package's
same config defaults, so an interrupted benchmark resumes. At the end the runner writes
`<out>/summary.json`, `<out>/table.md` and `<out>/accuracy_vs_time.png`.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALIDATION = 1000  # the last training records

# Method name -> (kind, settings). BiTAT variants are BinarizeConfig(variant=...), baselines EndToEndConfig.
METHODS = {
    "bitat": ("bitat", {"variant": "bitat"}),
    "sequential": ("bitat", {"variant": "sequential"}),
    "intra": ("bitat", {"variant": "intra"}),
    "cross": ("bitat", {"variant": "cross"}),
    "filterwise": ("bitat", {"variant": "filterwise"}),
    "svd": ("bitat", {"variant": "svd"}),
    "reactnet": ("baseline", {"method": "reactnet"}),
    "ste": ("baseline", {"method": "ste"}),
    "ste_larq": ("baseline", {"method": "ste", "quantizers": "larq_ste", "distill_weight": 0.0}),
    # end-to-end STE with ReActNet's distribution loss: every layer binary at once from the start, no pass,
    # no activation step; the limit of the default recipe as its pass's share goes to zero
    "ste_kd": ("baseline", {"method": "ste", "distill_weight": 1.0}),
    # Recipes beyond the paper built on the progressive pass (issue 12); `pass_share` is the share of the
    # step budget the progressive pass gets, the rest goes to the last phase.
    "bitat_kd": ("bitat", {"variant": "bitat", "distill_weight": 1.0}),
    "bitat_ft": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "finetune",
                           "pass_share": 0.5}),
    "bitat_e2e": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "end_to_end",
                            "pass_share": 0.5}),
    "sequential_e2e": ("bitat", {"variant": "sequential", "distill_weight": 1.0, "final_phase": "end_to_end",
                                 "pass_share": 0.5}),
    # the same recipe with a smaller share of the budget in the pass: what the pass itself is worth
    "bitat_e2e_p25": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "end_to_end",
                                "pass_share": 0.25}),
    # `binarize`'s default (configs here start from `paper()`, so what the default changes is set here)
    "bitat_e2e_p12": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "end_to_end",
                                "pass_share": 0.125, "pass_normalization": "batch"}),
    # the default with the pass on the task loss: the teacher only in the last phase
    "bitat_e2e_p12_taskpass": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "end_to_end",
                                         "pass_share": 0.125, "pass_normalization": "batch",
                                         "pass_distillation": False}),
    "bitat_e2e_p6": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "end_to_end",
                               "pass_share": 0.0625}),
    # the default's shape without the transform (the paper's sequential ablation), layer by layer or a
    # block at a time (fewer stages: less per-stage work, no k-means/PCA)
    "sequential_e2e_p12": ("bitat", {"variant": "sequential", "distill_weight": 1.0, "final_phase": "end_to_end",
                                     "pass_share": 0.125}),
    "sequential_block_p12": ("bitat", {"variant": "sequential", "distill_weight": 1.0, "final_phase": "end_to_end",
                                       "pass_share": 0.125, "stage": "block"}),
    # a quarter of the budget binarizes all activations first (weights real), then the pass and a last
    # end-to-end phase share the rest
    "bitat_act_e2e": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "end_to_end",
                                "pass_share": 0.375, "warmup_share": 0.25}),
    # the charitable reading of the paper's text ("sequentially quantizes the weights at each layer of a
    # pre-trained model"): ReActNet's first step (activations binary, weights real) on half the budget, then
    # the paper's pass binarizing the weights on the other half; task loss only, no last phase
    "bitat_act_pass": ("bitat", {"variant": "bitat", "pass_share": 0.5, "warmup_share": 0.5,
                                 "warmup_at_final_lr": True}),
    # shaped like ReActNet's two steps: half the budget binarizes the activations (weights real, at the last
    # phase's learning rate), then a short pass binarizes the weights layer by layer instead of all at once
    "bitat_act_p12": ("bitat", {"variant": "bitat", "distill_weight": 1.0, "final_phase": "end_to_end",
                                "pass_share": 0.125, "warmup_share": 0.5, "warmup_at_final_lr": True}),
    # progressive STE (issue 29, item 5): the binarization moves up a block at a time, as in the pass, but
    # every layer trains in every stage (the binarized blocks below through their signs); half the budget,
    # then end-to-end distillation on the other half
    "progressive_ste": ("bitat", {"variant": "sequential", "stage": "block", "pass_trains": "network",
                                  "distill_weight": 1.0, "final_phase": "end_to_end", "pass_share": 0.5,
                                  "pass_normalization": "batch"}),
}
LABELS = {
    "bitat": "BiTAT (full, k-means aggregated)", "sequential": "BiTAT sequential only",
    "intra": "BiTAT intra-layer transform", "cross": "BiTAT cross-layer, no aggregation",
    "filterwise": "BiTAT filter-wise groups", "svd": "BiTAT truncated SVD",
    "reactnet": "ReActNet two-step + distillation", "ste": "end-to-end STE (scaled sign, thresholds)",
    "ste_larq": "end-to-end STE (plain Larq ste_sign)",
    "ste_kd": "end-to-end STE + distillation (no pass, no activation step)",
    "bitat_kd": "BiTAT + distillation in every stage",
    "bitat_ft": "BiTAT + distillation, half the budget on a last fine-tune",
    "bitat_e2e": "BiTAT warm start + end-to-end distillation: half the budget each (the default recipe gives the warm start an eighth)",
    "sequential_e2e": "sequential warm start + end-to-end distillation (half each)",
    "bitat_e2e_p25": "BiTAT warm start on a quarter of the budget + end-to-end distillation",
    "bitat_e2e_p12": "the default: BiTAT warm start on an eighth of the budget + end-to-end distillation",
    "bitat_e2e_p12_taskpass": "the default with the pass on the task loss (distillation in the last phase only)",
    "bitat_e2e_p6": "BiTAT warm start on a sixteenth of the budget + end-to-end distillation",
    "sequential_e2e_p12": "sequential warm start (no transform) on an eighth + end-to-end distillation",
    "sequential_block_p12": "sequential warm start a block at a time on an eighth + end-to-end distillation",
    "bitat_act_e2e": "activations first, then BiTAT pass, then end-to-end distillation",
    "bitat_act_p12": "activations first on half the budget, BiTAT pass on an eighth, end-to-end distillation",
    "progressive_ste": "progressive STE: binarized a block at a time, every layer training, then end-to-end",
    "bitat_act_pass": "activations first on half the budget (weights real), then BiTAT's pass on the weights",
}
# BinarizeConfig / EndToEndConfig arguments the runner derives from its own flags and the budget; `--set`
# may not override them (two sources for one value).
RUNNER_OWNED = {"steps_per_layer", "finetune_steps", "steps", "learning_rate", "finetune_learning_rate",
                "final_learning_rate", "final_finetune_steps", "blocks", "capture_batches",
                "bn_recalibration_batches", "seed"}
MODES = {
    # 16k training images, 4 FP epochs; 31 layers x 16 steps = 496 steps (4 epochs of the subset) a method.
    "quick": dict(train_limit=16000, fp_epochs=4, steps_per_layer=10, finetune_steps=6, capture_batches=2,
                  bn_recalibration_batches=4, methods="bitat,sequential,reactnet,ste"),
    # 49k images, 10 FP epochs (the calibrated recipe); 31 x 40 = 1240 steps (3.2 epochs) a method.
    "standard": dict(train_limit=50000 - VALIDATION, fp_epochs=10, steps_per_layer=28, finetune_steps=12,
                     capture_batches=4, bn_recalibration_batches=8,
                     methods="bitat,sequential,intra,cross,reactnet,ste,ste_larq"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=sorted(MODES), default="quick")
    p.add_argument("--methods", help=f"comma-separated, from {sorted(METHODS)} (default: the mode's)")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp-seed", type=int, help="seed of the full-precision model (default: --seed); give one "
                   "value to start every seed of binarization from the same checkpoint")
    p.add_argument("--learning-rate", type=float, default=3e-3, help="BiTAT's quantisation step size")
    p.add_argument("--baseline-learning-rate", type=float, default=1e-3, help="the baselines' step size")
    p.add_argument("--finetune-learning-rate", type=float, default=5e-4)
    p.add_argument("--distill-weight", type=float, help="override the distillation weight of recipes that use it")
    for key in ("train_limit", "fp_epochs", "steps_per_layer", "finetune_steps", "capture_batches",
                "bn_recalibration_batches"):
        p.add_argument("--" + key.replace("_", "-"), type=int, help="override the mode's value")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a BinarizeConfig argument of the BiTAT recipes (repeatable), e.g. quant_weight=10")
    p.add_argument("--no-export", dest="export", action="store_false", help="skip LCE export of BiTAT's model")
    p.add_argument("--data-dir", help="datasets folder (default: $BITAT_DATASETS or ../shared/datasets)")
    p.add_argument("--cache-dir", default=os.path.join(ROOT, "runs", "cache"))
    p.add_argument("--out", help="output folder (default: results/bench_<mode>)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one method (or "fp") in this process
    args = p.parse_args(argv)
    for key, value in MODES[args.mode].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {sorted(METHODS)}")
    args.out = args.out or os.path.join(ROOT, "results", f"bench_{args.mode}")
    try:
        args.overrides = dict(_override(item) for item in args.overrides)
    except ValueError as err:
        p.error(str(err))
    owned = sorted(set(args.overrides) & RUNNER_OWNED)
    if owned:
        p.error(f"--set {', '.join(owned)}: the runner sets these itself; use its own flags (--learning-rate, "
                "--steps-per-layer, --seed, ...)")
    return args


def _override(item):
    """`"key=value"` -> (key, value), the value read as JSON (numbers, true/false, lists) or else a string."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. quant_weight=10")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def settings(args):
    """What a method's figures depend on; a stored result is reused only when these match."""
    keys = ("mode", "width", "batch_size", "seed", "learning_rate", "baseline_learning_rate", "distill_weight",
            "finetune_learning_rate", "train_limit", "fp_epochs", "steps_per_layer", "finetune_steps",
            "capture_batches", "bn_recalibration_batches")
    chosen = {k: getattr(args, k) for k in keys}
    if args.fp_seed is not None:  # absent from older results, which stay reusable
        chosen["fp_seed"] = args.fp_seed
    if args.overrides:
        chosen["overrides"] = args.overrides
    return chosen


def regenerate_commands(script, fixed, flag, keys):
    """Commands of `benchmarks/<script>` that regenerate the runs on disk (each resumes): one per distinct
    value of `keys` (method -> e.g. its scales), given after `flag`, with the methods that share it."""
    groups = {}
    for method, key in keys.items():
        groups.setdefault(key, []).append(method)
    return "; ".join(f"python benchmarks/{script} {fixed} --methods {','.join(methods)} {flag} {key}"
                     for key, methods in groups.items())


def recipe(args):
    seed = args.seed if args.fp_seed is None else args.fp_seed
    return f"reactnet_a_w{args.width:g}_n{args.train_limit}_e{args.fp_epochs}_s{seed}"


# ---- worker: one method in its own process ---------------------------------------------------------------
def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args):
    import bitat_tf
    from bitat_tf import data, fp_training, runinfo, zoo
    from bitat_tf.fp_training import accuracy_of

    train, val, test = data.cifar10_splits(train_limit=args.train_limit, data_dir=args.data_dir,
                                           batch_size=args.batch_size, seed=args.seed)
    model = zoo.reactnet_a(width=args.width)
    model, fp = fp_training.train_full_precision(model, train, epochs=args.fp_epochs, cache_path=fp_cache(args),
                                                 verbose=2)
    if args.worker == "fp":
        return {"fp_train_seconds": None if fp["cached"] else fp["seconds"],
                "fp_val_accuracy": accuracy_of(model, val), "fp_test_accuracy": accuracy_of(model, test),
                "presign_inputs": presign_statistics(model, val, zoo.reactnet_a_blocks(model))}
    kind, extra = METHODS[args.worker]
    extra = {**extra, **args.overrides}  # a key the config does not take fails in its constructor
    layers = sum(len(block) for block in zoo.reactnet_a_blocks(model))
    budget = layers * (args.steps_per_layer + args.finetune_steps)
    if kind == "bitat":
        share = extra.pop("pass_share", 1.0)
        warmup = round(budget * extra.pop("warmup_share", 0.0))
        if warmup:
            extra["activation_warmup_steps"] = warmup
        if extra.pop("warmup_at_final_lr", False):
            extra["warmup_learning_rate"] = args.baseline_learning_rate
        steps_per_layer = max(1, round(args.steps_per_layer * share))
        finetune_steps = round(args.finetune_steps * share)
        if share < 1.0:  # the rest of the same budget goes to the last phase; accuracy measured as by default
            extra["evaluate_every"] = "end"
            extra["final_finetune_steps"] = budget - warmup - layers * (steps_per_layer + finetune_steps)
            extra["final_learning_rate"] = args.baseline_learning_rate
        if args.distill_weight is not None and "distill_weight" in extra:
            extra["distill_weight"] = args.distill_weight
        config = bitat_tf.BinarizeConfig.paper(
            steps_per_layer=steps_per_layer, finetune_steps=finetune_steps,
            learning_rate=args.learning_rate, finetune_learning_rate=args.finetune_learning_rate,
            blocks=zoo.reactnet_a_blocks(model), capture_batches=args.capture_batches,
            bn_recalibration_batches=args.bn_recalibration_batches, seed=args.seed, **extra)
    else:
        config = bitat_tf.EndToEndConfig(
            steps=budget, learning_rate=args.baseline_learning_rate, capture_batches=args.capture_batches,
            bn_recalibration_batches=args.bn_recalibration_batches, seed=args.seed, **extra)
    rss_before = _rss_mb()
    checkpoints = checkpoint_dir(args, args.worker)
    resumed = os.path.isdir(checkpoints) and bool(os.listdir(checkpoints))
    start = time.time()
    result = bitat_tf.binarize(model, train, validation_data=val, config=config, checkpoint_dir=checkpoints)
    seconds = time.time() - start
    figures = {
        "label": LABELS[args.worker], "config": config.get_config(), "budget_steps": budget,
        # A resumed run's seconds are its last process's only: compare times of runs that were not resumed,
        # or derive them from the steps (`timing`) and the step times of one sitting (engine_speed.py).
        "binarize_seconds": seconds, "resumed": resumed,
        "peak_rss_mb": _rss_mb(), "rss_before_binarize_mb": rss_before,
        "val_accuracy": result.report.binary_accuracy, "test_accuracy": accuracy_of(result.model, test),
        "fp_val_accuracy": result.report.fp_accuracy,
        "transform_params": result.report.transform_params,
        "unaggregated_params": result.report.unaggregated_params,
        "per_layer_val_accuracy": {r.name: r.val_accuracy for r in result.report.layers if r.binarized},
        "timing": result.report.timing, **runinfo.cpu(),
    }
    if args.export and args.worker == "bitat":
        from bitat_tf import export

        figures["export"] = export.deployment_figures(result.model, model, test)[1]
    return figures


def fp_cache(args):
    """The full-precision start point's weights file. The standard recipe's is committed under
    `benchmarks/checkpoints/` (10 epochs take 20-65 minutes on 2 cores, and every machine needs the same
    start point); it is copied into the cache, where any other recipe is trained and kept."""
    path = os.path.join(args.cache_dir, f"{recipe(args)}.h5")
    shipped = os.path.join(ROOT, "benchmarks", "checkpoints", os.path.basename(path))
    if not os.path.exists(path) and os.path.exists(shipped):
        os.makedirs(args.cache_dir, exist_ok=True)
        shutil.copyfile(shipped, path)
    return path


def checkpoint_dir(args, method):
    """Where a method's run keeps its checkpoints (after each layer, and each epoch of a whole-network
    phase), so an interrupted run resumes where it stopped: one folder per method, settings and library
    defaults (a changed setting starts afresh instead of meeting another run's checkpoint)."""
    import hashlib

    key = json.dumps({"method": method, "settings": settings(args), "defaults": library_defaults()},
                     sort_keys=True, default=str)
    return os.path.join(ROOT, "runs", "checkpoints", f"{method}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def presign_statistics(model, dataset, blocks):
    """How the full-precision inputs of the layers to binarize sit against sign's gradient window.

    Larq's `ste_sign` passes gradient only where |x| <= 1, and plain sign(x) needs both signs to carry
    information; these figures show how much of each layer's input a plain STE recipe would waste.
    """
    import numpy as np

    from bitat_tf import capture

    rows = {}
    for name in (n for block in blocks for n in block):
        x = capture.capture_inputs(model, model.get_layer(name), dataset, max_batches=2, memory_mb=256,
                                   seed=0).raw.reshape(-1, model.get_layer(name).input_shape[-1])
        rows[name] = {"outside_ste_window": float(np.mean(np.abs(x) > 1)), "positive": float(np.mean(x > 0)),
                      "std": float(x.std())}
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in ("outside_ste_window", "positive", "std")}
    return {"mean_over_layers": mean, "per_layer": rows}


# ---- driver ---------------------------------------------------------------------------------------------
def library_defaults():
    """The package's config defaults, as JSON. The same flags run something else when a default changes, so
    a stored method result is reused only when it ran with these."""
    import bitat_tf

    defaults = {"BinarizeConfig": bitat_tf.BinarizeConfig().get_config(),
                "paper": bitat_tf.BinarizeConfig.paper().get_config(),
                "EndToEndConfig": bitat_tf.EndToEndConfig().get_config()}
    return json.loads(json.dumps(defaults, default=str))


def reusable(stored, args, name):
    """Whether a stored record answers this invocation: same settings and, for a method (the full-precision
    figures depend on the recipe alone), the same library defaults."""
    same_defaults = name == "fp" or stored.get("defaults") == library_defaults()
    return stored.get("settings") == settings(args) and same_defaults


def _run_worker(args, name, path, argv):
    """Run one method in a child process; its JSON lands at `path` (kept when `reusable`)."""
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if reusable(stored, args, name):
            print(f"== {name}: reusing {os.path.relpath(path, ROOT)}", flush=True)
            return stored
    print(f"== {name}: running", flush=True)
    start = time.time()
    code = subprocess.call([sys.executable, os.path.abspath(__file__), *argv, "--worker", name])
    if code != 0 or not os.path.exists(path):
        print(f"== {name}: FAILED (exit {code}); the other methods go on", flush=True)
        return None
    with open(path) as f:
        stored = json.load(f)
    print(f"== {name}: done in {time.time() - start:.0f}s", flush=True)
    return stored


def _full_precision(args, argv):
    """The full-precision figures: they depend only on the recipe, so one evaluation serves every
    invocation that shares it (budget and learning-rate runs each have their own output folder)."""
    shared = os.path.join(args.cache_dir, f"{recipe(args)}.fp.json")
    path = os.path.join(args.out, "fp.json")
    if not os.path.exists(path) and os.path.exists(shared):
        with open(shared) as f:
            stored = json.load(f)
        print(f"== fp: reusing {os.path.relpath(shared, ROOT)}", flush=True)
        stored["settings"] = settings(args)
        with open(path, "w") as f:
            json.dump(stored, f, indent=2, default=str)
        return stored
    stored = _run_worker(args, "fp", path, argv)
    if stored is not None:
        os.makedirs(args.cache_dir, exist_ok=True)
        with open(shared, "w") as f:
            json.dump(stored, f, indent=2, default=str)
    return stored


def _stored_results(args):
    """Figures of the methods an earlier invocation ran into the same folder with the same settings, so the
    folder's summary covers every method on disk, not only this invocation's."""
    stored = {}
    for name in METHODS:
        path = os.path.join(args.out, f"{name}.json")
        if name not in args.methods and os.path.exists(path):
            with open(path) as f:
                record = json.load(f)
            if record.get("settings") == settings(args):
                stored[name] = record["figures"]
    return stored


def summarize(args, fp, results, seconds):
    from bitat_tf import runinfo

    reference = results.get("reactnet") or {}
    summary = {
        "mode": args.mode, "settings": settings(args), "recipe": recipe(args), "wall_seconds": seconds,
        "full_precision": fp, "methods": results, **runinfo.provenance(),
    }
    for name, r in results.items():
        r["time_vs_reactnet"] = (r["binarize_seconds"] / reference["binarize_seconds"]) if reference else None
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table(summary) + "\n")
    plot(summary, os.path.join(args.out, "accuracy_vs_time.png"))
    return summary


def table(summary):
    """Markdown table of one benchmark summary (also used for the README)."""
    fp = summary["full_precision"]
    rows = ["| method | test top-1 | val top-1 | binarize time | vs ReActNet | peak RSS | s+V params "
            "(aggregated / unaggregated) |", "|---|---|---|---|---|---|---|",
            f"| full precision (start point) | {_pct(fp['fp_test_accuracy'])} | {_pct(fp['fp_val_accuracy'])} | "
            f"- | - | - | - |"]
    for name, r in summary["methods"].items():
        params = (f"{r['transform_params']:,} / {r['unaggregated_params']:,} "
                  f"({100 * r['transform_params'] / r['unaggregated_params']:.2f}%)"
                  if r.get("unaggregated_params") else "-")
        ratio = f"{r['time_vs_reactnet']:.2f}x" if r.get("time_vs_reactnet") else "-"
        rows.append(f"| {r['label']} | {_pct(r['test_accuracy'])} | {_pct(r['val_accuracy'])} | "
                    f"{r['binarize_seconds']:.0f} s | {ratio} | {r['peak_rss_mb']:.0f} MB | {params} |")
    return "\n".join(rows)


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in summary["methods"].items():
        ax.scatter(r["binarize_seconds"] / 60, 100 * r["test_accuracy"], s=40)
        ax.annotate(name, (r["binarize_seconds"] / 60, 100 * r["test_accuracy"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=9)
    ax.axhline(100 * summary["full_precision"]["fp_test_accuracy"], color="gray", linestyle="--",
               label="full precision")
    ax.set_xlabel("binarization wall time (minutes, 2 CPU cores)")
    ax.set_ylabel("CIFAR-10 test top-1 (%)")
    ax.set_title(f"{summary['recipe']}, {summary['mode']} run, same step budget")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_record(path, record):
    """A worker's result record as JSON, written whole or not at all (a killed run leaves no half file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.worker:
        figures = worker(args)
        record = {"method": args.worker, "settings": settings(args), "defaults": library_defaults(),
                  "figures": figures}
        write_record(os.path.join(args.out, f"{args.worker}.json"), record)
        if args.worker != "fp":  # the result is on disk: its checkpoints are spent
            shutil.rmtree(checkpoint_dir(args, args.worker), ignore_errors=True)
        return 0
    start = time.time()
    fp = _full_precision(args, argv)
    if fp is None:
        return 1
    results = {}
    for i, name in enumerate(args.methods, start=1):
        print(f"== [{i}/{len(args.methods)}] {LABELS[name]}; elapsed {time.time() - start:.0f}s", flush=True)
        stored = _run_worker(args, name, os.path.join(args.out, f"{name}.json"), argv)
        if stored is not None:
            results[name] = stored["figures"]
    merged = {**_stored_results(args), **results}
    merged = {name: merged[name] for name in METHODS if name in merged}
    summary = summarize(args, fp["figures"], merged, time.time() - start)
    print(table(summary))
    print(f"written {os.path.relpath(args.out, ROOT)}/summary.json, table.md, accuracy_vs_time.png")
    return 0 if len(results) == len(args.methods) else 1


if __name__ == "__main__":
    sys.exit(main())
