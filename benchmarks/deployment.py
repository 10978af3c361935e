"""What ships: size, latency and agreement of every file a user could put on the phone, side by side.

    python benchmarks/deployment.py                 # CIFAR quick model and MobileNet; results/deployment.json
    python benchmarks/deployment.py --case sizes --sizes 96,224 --threads 1,2 --repeats 30
                                                    # real input sizes; results/deployment_sizes.json, .md, .png

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

Case "sizes": MobileNet (alpha 1.0) and ReActNet-A (`zoo.reactnet_a_imagenet`, stride-2 stem) at s x s
inputs, random weights, binarized with one step a layer; for each, the float TFLite file, the int8 TFLite
file and our LCE file, beside larq-zoo's QuickNet and Bi-RealNet converted by LCE directly (`larq-zoo`
installed with --no-deps); batch 1 at each thread count, XNNPack on, median, quartiles and extremes of the
repeats, sizes, the op census of every file and ours against the references per binary convolution.

On x86 the binary ops run LCE's reference kernels, not the optimized Arm ones: the latencies compare files
on this CPU, they do not predict a phone.
"""

import argparse
import json
import os
import sys

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
    p.add_argument("--case", choices=("ships", "sizes"), default="ships",
                   help="ships: the CIFAR quick model and MobileNet at 32x32 (results/deployment.json); sizes: "
                        "MobileNet and ReActNet-A at real input sizes beside larq-zoo references")
    p.add_argument("--models", default="cifar_quick,mobilenet")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--test-images", type=int, default=2000)
    p.add_argument("--data-dir")
    p.add_argument("--out", help="the JSON file (default results/deployment.json, or deployment_sizes.json with "
                                  "--case sizes, whose table and chart go beside it as .md and .png)")
    add_sizes_arguments(p)
    args = p.parse_args(argv)
    if args.case == "sizes":
        return run_sizes(args, args.out or os.path.join(ROOT, "results", "deployment_sizes.json"))
    args.out = args.out or os.path.join(ROOT, "results", "deployment.json")
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

# ---- case "sizes": real input sizes, beside larq-zoo references ---------------------------------------------

SIZE_FILES = {
    "fp_tflite": "float TFLite",
    "int8_tflite": "int8 TFLite (post-training, calibrated)",
    "lce": "our LCE file",
    "reference": "larq-zoo, LCE directly",
}


def add_sizes_arguments(p):
    p.add_argument("--sizes", default="96,224", help="input sides s (s x s x 3), comma-separated")
    p.add_argument("--threads", default="1,2", help="interpreter threads, comma-separated")
    p.add_argument("--families", default="mobilenet,reactnet")
    p.add_argument("--references", default="quicknet,birealnet",
                   help="larq-zoo models converted by LCE directly (quicknet, quicknet_small, birealnet); '' for none")
    p.add_argument("--mobilenet-alpha", type=float, default=1.0)
    p.add_argument("--reactnet-width", type=float, default=1.0)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--train-images", type=int, default=16, help="random images the tiny binarization and the int8 "
                                                                  "calibration read")
    p.add_argument("--warmup", type=int, default=5)


def run_sizes(args, out):
    from bitat_tf import runinfo

    sizes = [int(v) for v in args.sizes.split(",")]
    threads = [int(v) for v in args.threads.split(",")]
    references = [r for r in args.references.split(",") if r]
    rows, comparisons = [], []
    for size in sizes:
        image = _random_images(size, 1, seed=1)
        reference_files = {name: _reference_file(name, size, args) for name in references}
        for name, flatbuffer in reference_files.items():
            rows.append(_size_row(name, size, "reference", flatbuffer, image, threads, args))
        for family in args.families.split(","):
            files = _family_files(family, size, args)
            rows.extend(_size_row(family, size, kind, flatbuffer, image, threads, args)
                        for kind, flatbuffer in files.items())
            comparisons.extend(_comparison(family, size, files["lce"], name, reference)
                               for name, reference in reference_files.items())
    summary = {"case": "sizes", "rows": rows, "census_vs_reference": comparisons, "labels": SIZE_FILES,
               "threads": threads, "repeats": args.repeats, "warmup": args.warmup, "batch": 1,
               "runtime": "larq_compute_engine Interpreter (LCE's kernels for its ops, TFLite's builtin kernels "
                          "with XNNPack on for the rest)",
               "command": "python benchmarks/deployment.py " + " ".join(sys.argv[1:]), **runinfo.provenance()}
    if references:
        from importlib.metadata import version

        summary["versions"]["larq-zoo"] = version("larq-zoo")
    with open(out, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    stem = os.path.splitext(out)[0]
    with open(stem + ".md", "w") as f:
        f.write(sizes_table(summary) + "\n")
    sizes_chart(summary, stem + ".png")
    print(sizes_table(summary))
    return 0


def _random_images(size, n, seed=0):
    import numpy as np

    return np.random.default_rng(seed).random((n, size, size, 3), np.float32)


def _family_files(family, size, args):
    """Float TFLite, int8 TFLite and our LCE file of one family at s x s, binarized with one step a layer."""
    import numpy as np

    import bitat_tf
    from bitat_tf import export, zoo
    from bitat_tf._compat import keras, tf

    keras.utils.set_random_seed(0)
    shape = (size, size, 3)
    if family == "mobilenet":
        model = keras.applications.MobileNet(alpha=args.mobilenet_alpha, input_shape=shape, weights=None,
                                             classes=args.classes)
    elif family == "reactnet":
        model = zoo.reactnet_a_imagenet(input_shape=shape, width=args.reactnet_width, num_classes=args.classes)
    else:
        raise SystemExit(f"--families: unknown {family!r}; choose among mobilenet, reactnet")
    labels = np.random.default_rng(0).integers(0, args.classes, args.train_images)
    data = tf.data.Dataset.from_tensor_slices((_random_images(size, args.train_images), labels)).batch(8)
    config = bitat_tf.BinarizeConfig(steps_per_layer=1, finetune_steps=0, final_finetune_steps=1, capture_rows=256,
                                     capture_batches=1, bn_recalibration_batches=1)
    binary = bitat_tf.binarize(model, data, config=config, verbose=0).model
    return {"fp_tflite": export.export_tflite(model), "int8_tflite": int8_tflite(model, data),
            "lce": export.export_lce(binary)}


def _reference_file(name, size, args):
    import larq_compute_engine as lce
    import larq_zoo

    builders = {"quicknet": larq_zoo.sota.QuickNet, "quicknet_small": larq_zoo.sota.QuickNetSmall,
                "birealnet": larq_zoo.literature.BiRealNet}
    if name not in builders:
        raise SystemExit(f"--references: unknown {name!r}; choose among {sorted(builders)}")
    return lce.convert_keras_model(builders[name](weights=None, input_shape=(size, size, 3), num_classes=args.classes))


def _size_row(model, size, kind, flatbuffer, image, threads, args):
    import numpy as np

    from bitat_tf import export

    ms = {}
    for t in threads:
        times = export.lce_latencies_ms(flatbuffer, image, repeats=args.repeats, num_threads=t, warmup=args.warmup,
                                        use_xnnpack=True)
        q1, median, q3 = (float(v) for v in np.percentile(times, [25, 50, 75]))
        ms[str(t)] = {"median": median, "q1": q1, "q3": q3, "min": min(times), "max": max(times)}
    census = export.census_per_bconv(flatbuffer)
    row = {"model": model, "size": size, "file": kind, "bytes": len(flatbuffer), "ms_per_image": ms,
           "lce_bconv2d": census.get("LceBconv2d", (0, None))[0], "bitpacked_outputs": census[export.BITPACKED][0],
           "ops": dict(export.op_census(flatbuffer))}
    print(f"{model} {size}x{size} {kind}: {len(flatbuffer)} bytes, "
          + ", ".join(f"{t} thread(s) {v['median']:.2f} ms" for t, v in ms.items()), flush=True)
    return row


def _comparison(family, size, ours, name, reference):
    from bitat_tf import export

    comparison = export.compare_census(ours, reference, names=(family, name))
    return {"family": family, "reference": name, "size": size, **comparison.to_dict(),
            "markdown": comparison.to_markdown()}


def sizes_table(summary):
    threads = [str(t) for t in summary["threads"]]
    head = ("| model | input | file | size | " + " | ".join(
        f"ms/image, {t} thread{'s' if t != '1' else ''}: median [IQR] (min-max)" for t in threads)
        + " | LceBconv2d | bitpacked outputs |")
    lines = [head, "|---" * (6 + len(threads)) + "|"]
    for r in summary["rows"]:
        cells = " | ".join("{median:.2f} [{q1:.2f}-{q3:.2f}] ({min:.2f}-{max:.2f})".format(**r["ms_per_image"][t])
                           for t in threads)
        lines.append(f"| {r['model']} | {r['size']}x{r['size']} | {summary['labels'][r['file']]} | "
                     f"{r['bytes'] / 1024:,.0f} KiB | {cells} | {r['lce_bconv2d']} | {r['bitpacked_outputs']} |")
    for c in summary.get("census_vs_reference", []):
        lines += ["", f"Ops per binary convolution, {c['family']} (our LCE file) against {c['reference']} at "
                      f"{c['size']}x{c['size']}:", "", c["markdown"]]
    return "\n".join(lines)


def sizes_chart(summary, path):
    """Median ms per image (IQR as error bars) by file, one group per input size, one panel per thread count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in summary["rows"]})
    files = list(dict.fromkeys((r["model"], r["file"]) for r in summary["rows"]))
    threads = [str(t) for t in summary["threads"]]
    fig, axes = plt.subplots(1, len(threads), figsize=(6 * len(threads), 4.5), squeeze=False)
    width = 0.8 / max(len(files), 1)
    for ax, t in zip(axes[0], threads):
        for i, (model, kind) in enumerate(files):
            found = {r["size"]: r["ms_per_image"][t] for r in summary["rows"]
                     if (r["model"], r["file"]) == (model, kind)}
            xs = [j + i * width for j, s in enumerate(sizes) if s in found]
            med = [found[s]["median"] for s in sizes if s in found]
            err = [[found[s]["median"] - found[s]["q1"] for s in sizes if s in found],
                   [found[s]["q3"] - found[s]["median"] for s in sizes if s in found]]
            ax.bar(xs, med, width, yerr=err, capsize=2, label=f"{model}: {summary['labels'][kind]}")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(sizes))], [f"{s}x{s}" for s in sizes])
        ax.set_ylabel("ms per image (median, IQR)")
        ax.set_title(f"{t} thread{'s' if t != '1' else ''}, batch 1, {summary['machine'].get('cpu_model') or '?'}",
                     fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
