"""Peak memory (RSS) of `binarize` against dataset size and layer width; writes results/memory.json.

Each point runs in a fresh process so that its peak is its own. Capture keeps at most
`capture_memory_mb` of feature maps and `capture_rows` patch rows whatever the dataset size, so the peak
should grow with the width of the layers (weights, activations of one batch) and stay flat in the number
of examples.

    python benchmarks/memory.py                  # sizes 1k/4k/16k examples x widths 16/64
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_point(examples, width):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    import bitat_tf
    from bitat_tf._compat import tf
    from bitat_tf.zoo import small_cnn

    rng = np.random.default_rng(0)
    x = rng.random((examples, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, examples).astype("int32")
    batch = 128
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    model = small_cnn(input_shape=(32, 32, 3), width=width)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Capture reads the whole dataset once (the engine's stream repeats, so a larger count re-reads it).
    config = bitat_tf.BinarizeConfig.paper(steps_per_layer=5, finetune_steps=2,
                                           capture_batches=-(-examples // batch), capture_memory_mb=64,
                                           bn_recalibration_batches=2)
    bitat_tf.binarize(model, ds, config=config, verbose=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data_mb = x.nbytes / 2**20
    return {"examples": examples, "width": width, "dataset_mb": round(data_mb, 1),
            "peak_rss_mb": round(peak / 1024, 1), "rss_before_binarize_mb": round(before / 1024, 1),
            "capture_memory_mb": config.capture_memory_mb}


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    p.add_argument("--out", default=os.path.join(ROOT, "results", "memory.json"))
    p.add_argument("--point", nargs=2, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.point:
        print("POINT " + json.dumps(one_point(*args.point)), flush=True)
        return 0
    points = []
    for width in args.widths:
        for examples in args.examples:
            proc = subprocess.run([sys.executable, __file__, "--point", str(examples), str(width)],
                                  capture_output=True, text=True, check=True)
            point = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("POINT "))[6:])
            print(point, flush=True)
            points.append(point)
    record = {"benchmark": "peak RSS of binarize (fresh process per point; in-memory synthetic 32x32x3 data, "
                           "so the dataset itself is part of the RSS)",
              "command": "python benchmarks/memory.py", "machine": {"platform": platform.platform(),
                                                                    "cpus": os.cpu_count()},
              "points": points}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
