"""What ships: size, latency and agreement of every file a user could put on the phone, side by side.

    python benchmarks/deployment.py                 # CIFAR quick model and MobileNet; results/deployment.json

For each model: the full-precision TFLite file, the post-training int8 TFLite file (TensorFlow's
converter with a representative dataset of training images), and the binarized model's LCE files with
float edges, with LCE's fixed default int8 range, and with int8 ranges calibrated on training images
(`export_lce(int8_calibration=...)`, "head" and "all"). All run on LCE's interpreter (it runs plain TFLite
files too) at 1 thread and at every core, one image a call, median of repeats after warm-up. Top-1
accuracy is on test images; agreement is with the Keras model the file came from.

Models:
- "cifar_quick": the benchmark's quick-mode ReActNet-A twin (full precision from `runs/cache`, trained by
  `benchmarks/run.py --mode quick` if missing) and its ReActNet-style binarization (the best trial's
  learning rate), cached in `runs/cache` too.
- "mobilenet": `tf_keras.applications.MobileNet(alpha=0.25)` on 32x32 inputs with random weights,
  binarized with one step a layer: its accuracy means nothing, its size and latency do.

On x86 the binary ops run LCE's reference kernels, not the optimized Arm ones: the latencies compare files
on this CPU, they do not predict a phone.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LABELS = {
    "fp_tflite": "full-precision TFLite (float32)",
    "int8_tflite": "int8 TFLite (post-training, calibrated)",
    "lce": "LCE binary, float edges",
    "lce_int8_default": "LCE binary, int8 edges at LCE's fixed range (-3, 3)",
    "lce_int8_head": "LCE binary, int8 head calibrated",
    "lce_int8_all": "LCE binary, every full-precision layer int8, calibrated",
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="cifar_quick,mobilenet")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--data-dir")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "deployment.json"))
    args = p.parse_args(argv)
    from bitat_tf import runinfo

    rows = []
    for name in args.models.split(","):
        fp_model, binary, calibration, test = MODELS[name](args)
        rows.extend(measure(name, fp_model, binary, calibration, test, args))
    summary = {"rows": rows, "labels": LABELS, "threads": sorted({1, os.cpu_count() or 1}),
               "command": "python benchmarks/deployment.py " + " ".join(sys.argv[1:]), **runinfo.provenance()}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print(table(summary))
    return 0


def cifar_quick(args):
    import run as bench

    import bitat_tf
    from bitat_tf import data, fp_training, zoo
    from bitat_tf._compat import keras

    mode = bench.MODES["quick"]
    train, val, test = data.cifar10_splits(train_limit=mode["train_limit"], data_dir=args.data_dir)
    recipe = f"reactnet_a_w0.25_n{mode['train_limit']}_e{mode['fp_epochs']}_s0"
    cache = os.path.join(ROOT, "runs", "cache")
    fp_model, _ = fp_training.train_full_precision(zoo.reactnet_a(width=0.25), train, epochs=mode["fp_epochs"],
                                                   cache_path=os.path.join(cache, f"{recipe}.h5"), verbose=2)
    path = os.path.join(cache, f"{recipe}_reactnet_binary.h5")
    if os.path.exists(path):
        binary = keras.models.load_model(path, custom_objects=bitat_tf.custom_objects())
    else:
        scale = _best_scale("reactnet")
        steps = sum(len(b) for b in zoo.reactnet_a_blocks(fp_model)) * (mode["steps_per_layer"] + mode["finetune_steps"])
        config = bitat_tf.EndToEndConfig(method="reactnet", steps=steps, learning_rate=1e-3 * scale,
                                         capture_batches=mode["capture_batches"],
                                         bn_recalibration_batches=mode["bn_recalibration_batches"])
        binary = bitat_tf.binarize(fp_model, train, validation_data=val, config=config, verbose=1).model
        binary.save(path)
    return fp_model, binary, val, test.unbatch().take(args.test_images).batch(100)


def mobilenet(args):
    import numpy as np

    import bitat_tf
    from bitat_tf._compat import keras, tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNet(alpha=0.25, input_shape=(32, 32, 3), weights=None, classes=10)
    rng = np.random.default_rng(0)
    images = tf.data.Dataset.from_tensor_slices((rng.random((256, 32, 32, 3), np.float32),
                                                 rng.integers(0, 10, 256))).batch(32)
    binary = bitat_tf.binarize(model, images, config=bitat_tf.BinarizeConfig.paper(steps_per_layer=1, finetune_steps=0),
                               verbose=0).model
    return model, binary, images, images


MODELS = {"cifar_quick": cifar_quick, "mobilenet": mobilenet}


def _best_scale(method):
    path = os.path.join(ROOT, "results", "trials_quick", "trials.json")
    if not os.path.exists(path):
        return 1.0
    with open(path) as f:
        return float(json.load(f)["methods"].get(method, {}).get("best_scale") or 1.0)


def int8_tflite(model, calibration):
    """TensorFlow's full-integer post-training quantization (float input and output)."""
    from bitat_tf._compat import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for x, *_ in calibration.take(16):
            for i in range(0, len(x), 8):
                yield [x[i:i + 8]]

    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def measure(name, fp_model, binary, calibration, test, args):
    import numpy as np
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    from bitat_tf import export

    files = {
        "fp_tflite": (export.export_tflite(fp_model), fp_model),
        "int8_tflite": (int8_tflite(fp_model, calibration), fp_model),
        "lce": (export.export_lce(binary), binary),
        "lce_int8_default": (export.export_lce(binary, experimental_default_int8_range=(-3.0, 3.0)), binary),
        "lce_int8_head": (export.export_lce(binary, int8_calibration=calibration), binary),
        "lce_int8_all": (export.export_lce(binary, int8_calibration=calibration, int8_layers="all"), binary),
    }
    image = next(iter(test))[0][:1].numpy()
    rows = []
    for kind, (flatbuffer, source) in files.items():
        interpreter = Interpreter(flatbuffer, num_threads=os.cpu_count() or 1)
        correct = agree = count = 0
        for x, y in test:
            out = np.asarray(interpreter.predict(x.numpy())).argmax(-1)
            correct += int(np.sum(out == y.numpy()))
            agree += int(np.sum(out == source(x, training=False).numpy().argmax(-1)))
            count += len(out)
        ops = export.op_census(flatbuffer)
        latency = {str(t): export.lce_latency_ms(flatbuffer, image, repeats=args.repeats, num_threads=t)
                   for t in sorted({1, os.cpu_count() or 1})}
        int8_ops = sum(1 for op, types in export.operators(flatbuffer) if types and types[0] == "INT8")
        rows.append({"model": name, "file": kind, "bytes": len(flatbuffer), "ms_per_image": latency,
                     "top1": correct / count, "agreement_with_keras": agree / count, "examples": count,
                     "lce_bconv2d": ops.get("LceBconv2d", 0), "int8_ops": int8_ops, "ops": dict(ops)})
        print(f"{name} {kind}: {len(flatbuffer)} bytes, {latency} ms, top-1 {correct / count:.4f}, "
              f"agreement {agree / count:.4f}", flush=True)
    return rows


def table(summary):
    threads = [str(t) for t in summary["threads"]]
    head = ("| model | file | size | " + " | ".join(f"ms/image, {t} thread{'s' if t != '1' else ''}" for t in threads)
            + " | top-1 | agreement with Keras | LceBconv2d | int8 ops |")
    rows = [head, "|" + "---|" * (8 + len(threads) - 1)]
    for r in summary["rows"]:
        rows.append(f"| {r['model']} | {summary['labels'][r['file']]} | {r['bytes'] / 1024:.0f} KiB | "
                    + " | ".join(f"{r['ms_per_image'][t]:.2f}" for t in threads)
                    + f" | {100 * r['top1']:.1f}% | {100 * r['agreement_with_keras']:.1f}% | {r['lce_bconv2d']} | "
                    f"{r['int8_ops']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
