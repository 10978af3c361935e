"""Per-layer cost of binarization, for comparing engine versions on one machine in one sitting.

    python benchmarks/engine_speed.py --label after                          # this tree
    PYTHONPATH=/path/to/old/checkout python benchmarks/engine_speed.py --label before

The case is issue 13's: `tf_keras.applications.MobileNet(alpha=0.25, input_shape=(32, 32, 3),
weights=None)` (13 binarized pointwise convolutions), 256 random images in batches of 32, default config
with one quantisation step and no fine-tune per layer, so nearly all of the time is per-stage overhead.
Results are merged into `results/engine_speed.json` under the label, with the CPU and the commit; compare
labels only when they were measured in the same sitting (the file records when).

    python benchmarks/engine_speed.py --case steps --label steps            # gradients gated (default)
    python benchmarks/engine_speed.py --case steps --label steps_ungated --no-gating
    python benchmarks/engine_speed.py --case stages --label stages         # where a stage's overhead goes
    python benchmarks/engine_speed.py --case ste --label ste_xla --xla     # an STE step alone, under XLA
    python benchmarks/engine_speed.py --case floor --label floor           # a step's backward cut at layer k

The `steps` case measures what a step costs on the standard model (ReActNet-A twin, width 0.25, 128
CIFAR-shaped images a batch, in memory so that no input pipeline is timed): BiTAT's quantize and
fine-tune-above steps over a whole progressive pass (31 stages, 8 + 8 steps each) and an end-to-end STE
step, each the median of its phases' medians after warm-up, and their ratios. `--no-gating` computes every
gradient (the engine without `bitat_tf.gating`), for a before/after in one sitting; `--xla` compiles the
train and test steps with XLA (`jit_compile=True`).

The `floor` case measures what a progressive step could cost at best on the standard model: a plain
train step of the binarized model (all layers binary, plain Larq quantizers, no switches, no BiTAT terms,
no teacher) whose tape differentiates only the layers from the k-th weight layer up, so that TensorFlow
builds no backward pass below it (one trace per k; what a run-time switch cannot give), for k from the
stem to the classifier, against the same step with every layer (k = 0, an end-to-end STE step) and a
forward pass alone. The same with the k-th layer's weights alone is a quantize step's floor, and the
full-precision model's forward pass (inference) is what distillation adds to every step of the pass.

The `stages` case splits a progressive run's time outside its optimizer steps into its parts on the same
model and data (standard-mode capture and recalibration batches, 8 validation batches, 8 + 8 steps a
layer): the first phase's extra time (tracing and graph optimisation of the train step), input captures,
k-means and PCA, BatchNorm recalibration, evaluation, and what is left.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True)
    p.add_argument("--out", default=os.path.join(ROOT, "results", "engine_speed.json"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--case", choices=("mobilenet", "steps", "stages", "ste", "floor"), default="mobilenet")
    p.add_argument("--no-gating", action="store_true", help="compute every gradient (before/after of gating)")
    p.add_argument("--xla", action="store_true", help="compile the train and test steps with XLA (jit_compile)")
    p.add_argument("--recipe", choices=("paper", "default", "taskpass"), default="paper",
                   help="steps and stages cases: BiTAT as published, the default recipe (BinarizeConfig(): a "
                        "pass, then an end-to-end phase of the pass's length with distillation), or taskpass "
                        "(the default with pass_distillation=False)")
    args = p.parse_args(argv)
    if args.xla:
        from bitat_tf import training

        compile_ = training.BitatTrainer.compile
        training.BitatTrainer.compile = lambda self, *a, **k: compile_(self, *a, **{**k, "jit_compile": True})
    if args.no_gating:
        from bitat_tf import gating

        gating.Gates.set = lambda self, trains: [g.need_dx.assign(True) or g.need_dw.assign(True)
                                                 for g in self.gates.values()]
    if args.case == "steps":
        return _store(args, step_costs(recipe=args.recipe))
    if args.case == "stages":
        return _store(args, stage_costs(recipe=args.recipe))
    if args.case == "ste":
        return _store(args, ste_step())
    if args.case == "floor":
        return _store(args, backward_floor())

    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    import bitat_tf

    from bitat_tf import runinfo  # of the tree measured: its commit

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(alpha=0.25, input_shape=(32, 32, 3), weights=None, classes=10)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices((rng.random((256, 32, 32, 3), np.float32),
                                               rng.integers(0, 10, 256))).batch(32)
    # Algorithm 1 as published (the default of older checkouts such as dc39e44, which have no `paper`)
    config = getattr(bitat_tf.BinarizeConfig, "paper", bitat_tf.BinarizeConfig)(steps_per_layer=1, finetune_steps=0)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = bitat_tf.binarize(model, data, config=config, verbose=0)
        seconds.append(time.perf_counter() - start)
    layers = sum(1 for r in result.report.layers if r.binarized)
    entry = {"case": "MobileNet alpha 0.25, 32x32, 256 random images, batch 32, 1 step a layer, no fine-tune",
             "binarized_layers": layers, "seconds": seconds, "seconds_per_layer": min(seconds) / layers,
             "timing": getattr(result.report, "timing", None), "bitat_tf_file": bitat_tf.__file__,
             "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": _cpu(), **runinfo.provenance()}
    print(f"{args.label}: {layers} layers, {min(seconds):.1f} s ({min(seconds) / layers:.2f} s a layer)")
    return _store(args, entry)


def _standard_case():
    """The standard model (ReActNet-A twin, width 0.25) and 8 batches of 128 random CIFAR-shaped images held
    in memory, so that no input pipeline is timed; seeded, the same in every case."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from bitat_tf import zoo

    keras.utils.set_random_seed(0)
    model = zoo.reactnet_a(width=0.25)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices((rng.random((1024, 32, 32, 3), np.float32),
                                               rng.integers(0, 10, 1024))).batch(128).cache()
    return model, data


def _recipe(recipe, **settings):
    """The BiTAT config of a case: as published, or the default recipe (taskpass: its pass without the
    teacher) with the same pass."""
    import bitat_tf

    if recipe == "paper":
        return bitat_tf.BinarizeConfig.paper(**settings)
    if recipe == "taskpass":
        settings["pass_distillation"] = False
    return bitat_tf.BinarizeConfig(final_finetune_steps=8 * settings["steps_per_layer"], **settings)


def step_costs(steps=8, recipe="paper"):
    """Seconds a step of BiTAT's quantize and fine-tune-above phases and of end-to-end STE, one process."""
    import statistics

    import bitat_tf
    from bitat_tf import runinfo

    model, data = _standard_case()
    runs = {"bitat": _recipe(recipe, steps_per_layer=steps, finetune_steps=steps),
            "ste": bitat_tf.EndToEndConfig(method="ste", steps=8 * steps)}
    medians, entry = {}, {"case": f"ReActNet-A twin width 0.25, batch 128 (random, in memory); BiTAT {steps} "
                                  f"quantize + {steps} fine-tune-above steps a layer; STE {8 * steps} steps", "recipe": recipe}
    for name, config in runs.items():
        start = time.perf_counter()
        report = bitat_tf.binarize(model, data.repeat(), config=config, verbose=0).report
        entry[name] = {"seconds": time.perf_counter() - start, "timing": report.timing}
        for kind, row in report.timing["phases"].items():
            medians[kind if name == "bitat" else "end-to-end STE"] = row["seconds_per_step"]
    step = {k: medians[k] for k in ("quantize", "fine-tune above")}
    e2e = medians["end-to-end STE"]
    entry["seconds_per_step"] = medians
    entry["progressive_vs_end_to_end"] = {k: v / e2e for k, v in step.items()}
    entry["progressive_mean_vs_end_to_end"] = statistics.mean(step.values()) / e2e
    entry.update(measured_at=time.strftime("%Y-%m-%d %H:%M:%S"), cpu=_cpu(), **runinfo.provenance())
    print(json.dumps({k: entry[k] for k in ("seconds_per_step", "progressive_vs_end_to_end")}, indent=1))
    return entry


def ste_step(steps=24):
    """Seconds an end-to-end STE step on the standard model, alone: short enough to run under `--xla`."""
    import bitat_tf
    from bitat_tf import runinfo

    model, data = _standard_case()
    start = time.perf_counter()
    report = bitat_tf.binarize(model, data.repeat(), config=bitat_tf.EndToEndConfig(method="ste", steps=steps),
                               verbose=0).report
    (phase,) = report.timing["phases"].values()
    entry = {"case": f"ReActNet-A twin width 0.25, batch 128 (random, in memory); STE {steps} steps",
             "wall_seconds": time.perf_counter() - start, "timing": report.timing,
             "ste_seconds_per_step": phase["seconds_per_step"],
             "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": _cpu(), **runinfo.provenance()}
    print(f"STE step {1000 * phase['seconds_per_step']:.0f} ms; first phase beyond its steps "
          f"{report.timing['first_phase_extra_seconds']:.1f} s")
    return entry


def backward_floor(steps=15, points=9):
    """Median seconds of a train step whose tape differentiates only the weight layers from the k-th up."""
    import statistics

    import tensorflow as tf
    import tf_keras as keras

    import bitat_tf
    from bitat_tf import runinfo

    model, data = _standard_case()
    binary = bitat_tf.binarize(model, data.repeat(), config=bitat_tf.EndToEndConfig(method="ste", steps=1),
                               verbose=0).model
    x, y = next(iter(data))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    layers = [layer for layer in binary.layers if layer.trainable_weights]
    optimizer = keras.optimizers.legacy.Adam(1e-6)

    def median_seconds(step):
        step(x, y)
        step(x, y)  # first calls: trace, graph optimisation
        durations = []
        for _ in range(steps):
            start = time.perf_counter()
            step(x, y).numpy()
            durations.append(time.perf_counter() - start)
        return statistics.median(durations)

    def train_step_from(k, only=False):
        variables = [v for layer in (layers[k:k + 1] if only else layers[k:]) for v in layer.trainable_weights]

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                value = loss(y, binary(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(value, variables), variables))
            return value

        return step

    starts = sorted({round(i * (len(layers) - 1) / (points - 1)) for i in range(points)})
    rows = [{"from_layer": k, "name": layers[k].name, "seconds_per_step": median_seconds(train_step_from(k)),
             "layer_only_seconds_per_step": median_seconds(train_step_from(k, only=True))} for k in starts]
    forward = median_seconds(tf.function(lambda x, y: tf.reduce_sum(binary(x, training=True))))
    # BiTAT's default recipe distils from the full-precision model in every step of its pass: that
    # model's forward pass (inference mode, so its BatchNorms fold into the convolutions) is part of
    # every progressive step and of no STE step.
    teacher = median_seconds(tf.function(lambda x, y: tf.reduce_sum(model(x, training=False))))
    full = rows[0]["seconds_per_step"]
    for row in rows:
        row["vs_all_layers"] = row["seconds_per_step"] / full
        row["layer_only_vs_all_layers"] = row["layer_only_seconds_per_step"] / full
    mean = statistics.mean(r["vs_all_layers"] for r in rows)
    mean_only = statistics.mean(r["layer_only_vs_all_layers"] for r in rows)
    entry = {"case": f"ReActNet-A twin width 0.25, batch 128 (random, in memory), binary (plain Larq), tape from "
                     f"the k-th of {len(layers)} weight layers up (a fine-tune-above step's floor) and of the k-th "
                     f"alone (a quantize step's); median of {steps} steps", "rows": rows,
             "forward_seconds": forward, "teacher_forward_seconds": teacher, "mean_vs_all_layers": mean,
             "layer_only_mean_vs_all_layers": mean_only, "teacher_forward_vs_all_layers": teacher / full,
             "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": _cpu(), **runinfo.provenance()}
    for row in rows:
        print(f"from {row['name']:>20s} ({row['from_layer']:2d}): {1000 * row['seconds_per_step']:.0f} ms "
              f"({row['vs_all_layers']:.2f}x), that layer alone {1000 * row['layer_only_seconds_per_step']:.0f} ms "
              f"({row['layer_only_vs_all_layers']:.2f}x)")
    print(f"forward alone {1000 * forward:.0f} ms, the teacher's {1000 * teacher:.0f} ms ({teacher / full:.2f}x); "
          f"mean over k {mean:.2f}x of all layers, {mean_only:.2f}x for the k-th alone")
    return entry


def stage_costs(steps=8, recipe="paper"):
    """Seconds of a progressive run outside its optimizer steps, by part (standard model, in memory)."""
    import collections

    import bitat_tf
    from bitat_tf import engine, runinfo, transforms, zoo

    parts, calls = collections.defaultdict(float), collections.Counter()

    def timed(owner, name, part):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                parts[part] += time.perf_counter() - start
                calls[part] += 1

        setattr(owner, name, wrapper)

    for owner, name, part in ((engine.Engine, "capture", "input capture"),
                              (engine.Engine, "recalibrate", "BatchNorm recalibration"),
                              (engine.Engine, "evaluate", "evaluation"),
                              (transforms, "reduction_matrix", "k-means and PCA"),
                              (transforms, "pca", "k-means and PCA")):
        timed(owner, name, part)
    model, data = _standard_case()
    config = _recipe(recipe, steps_per_layer=steps, finetune_steps=steps, capture_batches=4,
                     bn_recalibration_batches=8, blocks=zoo.reactnet_a_blocks(model))
    start = time.perf_counter()
    report = bitat_tf.binarize(model, data.repeat(), validation_data=data.take(8), config=config, verbose=0).report
    wall = time.perf_counter() - start
    timing = report.timing
    overhead = timing["overhead_seconds"]
    rows = {part: {"seconds": parts[part], "calls": calls[part]} for part in parts}
    rows["first phase beyond its steps (trace, graph optimisation)"] = {"seconds": timing.get("first_phase_extra_seconds")}
    known = sum(r["seconds"] or 0.0 for r in rows.values())
    rows["rest (phase switches, to_larq, set-up)"] = {"seconds": overhead - known}
    entry = {"case": f"ReActNet-A twin width 0.25, batch 128 (random, in memory), 8 validation batches, "
                     f"{steps} + {steps} steps a layer, capture 4 and recalibration 8 batches", "recipe": recipe,
             "wall_seconds": wall, "timing": timing, "overhead_parts": rows, "evaluate_every": config.evaluate_every,
             "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu": _cpu(), **runinfo.provenance()}
    print(json.dumps({k: (v["seconds"] if v["seconds"] is None else round(v["seconds"], 1)) for k, v in rows.items()},
                     indent=1), f"overhead {overhead:.1f} s of {wall:.1f} s")
    return entry


def _store(args, entry):
    stored = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            stored = json.load(f)
    stored[args.label] = {**entry, "gated_gradients": not args.no_gating, "xla": args.xla}
    with open(args.out, "w") as f:
        json.dump(stored, f, indent=2, default=str)
    return 0


def _cpu():
    with open("/proc/cpuinfo") as f:
        lines = f.read().splitlines()
    first = lambda key: next((l.split(":", 1)[1].strip() for l in lines if l.startswith(key)), "")  # noqa: E731
    flags = set(first("flags").split())
    return {"model": first("model name"), "flags": [f for f in ("avx2", "fma", "avx512f", "avx512_vnni")
                                                    if f in flags]}


if __name__ == "__main__":
    sys.exit(main())
