"""What deterministic mode (`deterministic=True`) costs in speed: the same run with and without, alternated.

    python benchmarks/determinism.py                       # both cases, 3 repeats each way
    python benchmarks/determinism.py --case small --repeats 5

Each run is a fresh process (op determinism is process-wide and stays on once a run turns it on), with
and without `deterministic=True` in turn (the order flips every repeat, so a slow spell of the machine
falls on both modes). A run binarizes with the default recipe (its last phase end to end) at a short
budget:
- `tiny`: the small CNN of the CLI's demo on sklearn's digits (no download), trained briefly first;
- `small`: the standard model (ReActNet-A twin, width 0.25) from its initial weights on the benchmark's
  CIFAR-10 pipeline (`data.cifar10_splits`: reshuffled, augmented, 128 a batch; `BITAT_DATASETS`), 2,048
  training images, 4 + 2 steps a layer and an end-to-end phase of 256 steps (the data's epoch is 16 steps,
  so both of the run's streams start many epochs).
`results/determinism.json` keeps every run (wall time of `binarize`, each phase kind's median step, the
first phase's extra time, the accuracies, a hash of the binary kernels), per case and mode the medians,
the ratios deterministic / default, whether the deterministic runs all ended with one binary model, and
the machine (`runinfo.provenance()`: CPU model and flags decide TensorFlow's kernels) and whether oneDNN's
kernels ran (TensorFlow turns them on by default on CPUs with AVX-512 VNNI or BF16; `TF_ENABLE_ONEDNN_OPTS`).
Compare seconds only within one sitting on a quiet machine (docs/benchmarks.md).
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("tiny", "small")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", choices=CASES + ("both",), default="both")
    p.add_argument("--repeats", type=int, default=3, help="runs in each mode per case")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "determinism.json"))
    p.add_argument("--data-dir", help="the datasets folder (default: $BITAT_DATASETS or ../shared/datasets)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one run, in its own process
    p.add_argument("--deterministic", type=int, choices=(0, 1), help=argparse.SUPPRESS)
    p.add_argument("--start-weights", help=argparse.SUPPRESS)  # every run of a case starts from these
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.case, bool(args.deterministic), args.data_dir, args.start_weights)))
        return 0
    import tempfile

    from bitat_tf import runinfo

    cases = CASES if args.case == "both" else (args.case,)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    record = {"started": started, "repeats": args.repeats, "cases": {}, **runinfo.provenance()}
    weights = tempfile.mkdtemp(prefix="bitat_determinism_")
    for case in cases:
        runs, start = [], os.path.join(weights, f"{case}.h5")
        for repeat in range(args.repeats):
            for deterministic in ((False, True) if repeat % 2 == 0 else (True, False)):
                runs.append({"repeat": repeat, **_run(case, deterministic, args.data_dir, start)})
                print(f"{case} repeat {repeat} deterministic={deterministic}: {runs[-1]['wall_seconds']:.1f} s",
                      flush=True)
        record["cases"][case] = {"runs": runs, **summary(runs)}
        _write(args.out, record)
    print(json.dumps({case: {k: v for k, v in row.items() if k != "runs"} for case, row in record["cases"].items()},
                     indent=2))
    return 0


def _run(case, deterministic, data_dir, start_weights):
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--case", case, "--deterministic",
               str(int(deterministic)), "--start-weights", start_weights] + (["--data-dir", data_dir] if data_dir
                                                                             else [])
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{case} (deterministic={deterministic}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(case, deterministic, data_dir, start_weights):
    """One run: binarize the case's model with the default recipe at a short budget; what it took. The
    first run of a case saves the full-precision weights it starts from, the others load them."""
    import bitat_tf
    from bitat_tf import graph
    from bitat_tf._compat import larq

    model, train, validation, config = (_tiny if case == "tiny" else _small)(data_dir, start_weights)
    config = bitat_tf.BinarizeConfig(**config, seed=0, deterministic=deterministic)
    start = time.perf_counter()
    result = bitat_tf.binarize(model, train, validation_data=validation, config=config, verbose=0)
    wall = time.perf_counter() - start
    digest = hashlib.sha256()
    for name in [row.name for row in result.report.layers if row.binarized]:
        layer = result.model.get_layer(name)
        with larq.context.quantized_scope(True):
            digest.update(layer.kernel.numpy().tobytes())  # alpha_c * sign(w)
        digest.update(graph.weight_quantizer(layer).alpha.numpy().tobytes())
    report, timing = result.report, result.report.timing
    from tensorflow.python.util import _pywrap_util_port  # after TensorFlow has loaded

    return {"deterministic": deterministic, "wall_seconds": wall, "onednn": _pywrap_util_port.IsMklEnabled(),
            "seconds_per_step": {kind: phase["seconds_per_step"] for kind, phase in timing["phases"].items()},
            "steps": {kind: phase["steps"] for kind, phase in timing["phases"].items()},
            "first_phase_extra_seconds": timing["first_phase_extra_seconds"],
            "outside_steps_seconds": timing["outside_steps_seconds"],
            "fp_accuracy": report.fp_accuracy, "binary_accuracy": report.binary_accuracy,
            "binary_kernels_sha256": digest.hexdigest()}


def _tiny(data_dir, start_weights):
    from bitat_tf import data, fp_training, zoo
    from bitat_tf._compat import keras

    keras.utils.set_random_seed(0)
    train, test = data.load_digits(batch_size=64, seed=0)
    model = zoo.small_cnn(input_shape=(8, 8, 1), num_classes=10)
    model, _ = fp_training.train_full_precision(model, train, epochs=5, learning_rate=3e-3, verbose=0,
                                                cache_path=start_weights)
    budget = {"steps_per_layer": 16, "finetune_steps": 8, "final_finetune_steps": 256, "max_groups": 16}
    return model, train, test, budget


def _small(data_dir, start_weights):
    from bitat_tf import data, zoo
    from bitat_tf._compat import keras

    keras.utils.set_random_seed(0)
    model = zoo.reactnet_a(width=0.25)
    if os.path.exists(start_weights):
        model.load_weights(start_weights)
    else:
        model.save_weights(start_weights)
    train, validation, _ = data.cifar10_splits(train_limit=2048, data_dir=data_dir, batch_size=128, seed=0)
    budget = {"steps_per_layer": 4, "finetune_steps": 2, "final_finetune_steps": 256,
              "bn_recalibration_batches": 8, "capture_batches": 4}
    return model, train, validation, budget


def summary(runs):
    """Per mode the medians, their ratios (deterministic / default), and whether each mode's runs agree."""
    modes = {}
    for deterministic in (False, True):
        mine = [r for r in runs if r["deterministic"] == deterministic]
        kinds = sorted({kind for r in mine for kind in r["seconds_per_step"]})
        modes["deterministic" if deterministic else "default"] = {
            "wall_seconds": statistics.median(r["wall_seconds"] for r in mine),
            "seconds_per_step": {k: statistics.median(r["seconds_per_step"][k] for r in mine) for k in kinds},
            "first_phase_extra_seconds": statistics.median(r["first_phase_extra_seconds"] for r in mine),
            "distinct_binary_models": len({r["binary_kernels_sha256"] for r in mine}),
        }
    plain, det = modes["default"], modes["deterministic"]
    ratios = {"wall_seconds": det["wall_seconds"] / plain["wall_seconds"],
              **{f"seconds_per_step[{k}]": det["seconds_per_step"][k] / plain["seconds_per_step"][k]
                 for k in det["seconds_per_step"] if plain["seconds_per_step"].get(k)}}
    return {"medians": modes, "deterministic_over_default": ratios}


def _write(path, record):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=2, default=str)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
