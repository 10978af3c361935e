"""Per-layer cost of binarization, for comparing engine versions on one machine in one sitting.

    python benchmarks/engine_speed.py --label after                          # this tree
    PYTHONPATH=/path/to/old/checkout python benchmarks/engine_speed.py --label before

The case is issue 13's: `tf_keras.applications.MobileNet(alpha=0.25, input_shape=(32, 32, 3),
weights=None)` (13 binarized pointwise convolutions), 256 random images in batches of 32, default config
with one quantisation step and no fine-tune per layer, so nearly all of the time is per-stage overhead.
Results are merged into `results/engine_speed.json` under the label, with the CPU and the commit; compare
labels only when they were measured in the same sitting (the file records when).
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
    args = p.parse_args(argv)

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
    config = bitat_tf.BinarizeConfig(steps_per_layer=1, finetune_steps=0)
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
    stored = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            stored = json.load(f)
    stored[args.label] = entry
    with open(args.out, "w") as f:
        json.dump(stored, f, indent=2, default=str)
    print(f"{args.label}: {layers} layers, {min(seconds):.1f} s ({min(seconds) / layers:.2f} s a layer)")
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
