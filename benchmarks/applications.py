"""Keras Applications a user would bring, bare and inside a transfer-learning Sequential, and the standard
benchmark model: does each binarize with each recipe and export fully binary, and what ships?

    python benchmarks/applications.py                       # all models, all recipes: results/applications.json
    python benchmarks/applications.py --models MobileNet --recipes default --bare-only

Random weights (the standard model: its committed full-precision weights) and random 32x32 data (nothing
downloads), a tiny budget: one quantisation step a layer for the pass, 20 steps for a whole-network phase
(enough for it to move every scale alpha, which once reached 0 and made LCE keep a layer float). This checks
the pipeline and the export on real architectures, not accuracy. For each model and recipe: weight layers,
binarized layers, LceBconv2d in the LCE flatbuffer, LCE and float TFLite sizes, or the error a user gets
(the export raises a FloatFallbackError when a binarized layer would ship as a float convolution).
"""

import argparse
import json
import os
import sys
import time
import traceback

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STANDARD = "ReActNetA_standard"  # the standard benchmark's ReActNet-A twin, trained
MODELS = {  # name -> input size (the smallest each accepts comfortably)
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "EfficientNetB0": 32, "ResNet50": 32,
    "DenseNet121": 32, STANDARD: 32,
}
RECIPES = ("paper", "default", "reactnet", "ste")


def config(recipe):
    """Each recipe at a tiny budget: what converts does not depend on how long it trained."""
    import bitat_tf

    pass_steps = dict(steps_per_layer=1, finetune_steps=0, bn_recalibration_batches=1, capture_batches=1)
    if recipe == "paper":
        return bitat_tf.BinarizeConfig.paper(**pass_steps)
    if recipe == "default":
        return bitat_tf.BinarizeConfig(**pass_steps, final_finetune_steps=20)
    return bitat_tf.EndToEndConfig(method=recipe, steps=20, bn_recalibration_batches=1, capture_batches=1)


def build(name, size, transfer, classes=10):
    import tf_keras as keras

    if name == STANDARD:  # the standard benchmark's model with its committed full-precision weights
        from bitat_tf import zoo

        model = zoo.reactnet_a(width=0.25)
        model.load_weights(os.path.join(ROOT, "benchmarks", "checkpoints", "reactnet_a_w0.25_n49000_e10_s0.h5"))
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # it outputs logits
        return model

    cls = getattr(keras.applications, name)
    keras.utils.set_random_seed(0)
    if not transfer:
        return cls(input_shape=(size, size, 3), weights=None, classes=classes)
    base = cls(input_shape=(size, size, 3), weights=None, include_top=False)
    return keras.Sequential([keras.Input((size, size, 3)), base, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(classes, name="head")], name=f"transfer_{name.lower()}")


def measure(name, size, transfer, recipe="paper"):
    import numpy as np
    import tensorflow as tf

    import bitat_tf
    from bitat_tf import export

    model = build(name, size, transfer)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices((rng.random((64, size, size, 3), np.float32),
                                               rng.integers(0, 10, 64))).batch(32)
    row = {"model": name, "transfer": transfer, "recipe": recipe, "input": size}
    start = time.time()
    try:
        result = bitat_tf.binarize(model, data, config=config(recipe), verbose=0)
        report = result.report
        row.update(weight_layers=len(report.layers), binarized=sum(r.binarized for r in report.layers))
        lce = export.export_lce(result.model)
        fp = export.export_tflite(model)
        ops = export.op_census(lce)
        row.update(lce_bconv2d=ops.get("LceBconv2d", 0), lce_bytes=len(lce), tflite_fp_bytes=len(fp),
                   kept=sorted({r.reason for r in report.layers if not r.binarized}), error=None)
    except Exception as err:  # recorded: the point is what a user would see
        row.update(error=f"{type(err).__name__}: {str(err).splitlines()[0][:400]}",
                   trace=traceback.format_exc().splitlines()[-3:])
    row["seconds"] = time.time() - start
    return row


def table(rows):
    lines = ["| model | as | recipe | weight layers | binarized | LceBconv2d | LCE / FP TFLite size | error |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        size = (f"{r['lce_bytes']:,} / {r['tflite_fp_bytes']:,} B ({r['tflite_fp_bytes'] / r['lce_bytes']:.1f}x)"
                if r.get("lce_bytes") else "-")
        lines.append(f"| {r['model']} | {'transfer Sequential' if r['transfer'] else 'bare'} | {_recipe(r)} | "
                     f"{r.get('weight_layers', '-')} | {r.get('binarized', '-')} | {r.get('lce_bconv2d', '-')} | "
                     f"{size} | {r['error'] or '-'} |")
    return "\n".join(lines)


def _recipe(row):
    return row.get("recipe", "paper")  # rows measured before recipes were a column ran the paper's pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--bare-only", action="store_true", help="skip the transfer-learning Sequential of each model")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "applications.json"))
    args = p.parse_args(argv)
    from bitat_tf import runinfo

    rows, merged = [], []
    for name in args.models.split(","):
        for recipe in args.recipes.split(","):
            for transfer in (False,) if args.bare_only or name == STANDARD else (False, True):
                row = measure(name, MODELS[name], transfer, recipe)
                print(f"{name} {'transfer' if transfer else 'bare'} {recipe}: {row.get('binarized')} binarized, "
                      f"{row.get('lce_bconv2d')} LceBconv2d, {row['seconds']:.0f}s, error {row['error']}", flush=True)
                rows.append(row)
                merged = write(args.out, rows, runinfo.provenance())  # after every row: a long run keeps its rows
    print(table(merged))
    return 0


def write(path, rows, provenance):
    """Write the measured `rows` into `path`, beside the rows of the cases not measured this time; returns
    every row, in table order. Atomic, so a run stopped mid-write leaves the previous file."""
    key = lambda r: (r["model"], r["transfer"], _recipe(r))  # noqa: E731
    kept, measured = [], {key(r) for r in rows}
    if os.path.exists(path):
        with open(path) as f:
            kept = [r for r in json.load(f)["rows"] if key(r) not in measured]
    rows = sorted(kept + rows, key=lambda r: (list(MODELS).index(r["model"]), r["transfer"],
                                              RECIPES.index(_recipe(r))))
    with open(path + ".tmp", "w") as f:
        json.dump({"rows": rows, "table": table(rows), "command": "python benchmarks/applications.py",
                   **provenance}, f, indent=2, default=str)
    os.replace(path + ".tmp", path)
    return rows


if __name__ == "__main__":
    sys.exit(main())
