"""Binarize the digits CNN plainly, or as one worker of a two-worker MultiWorkerMirroredStrategy.

    python multiworker_run.py prepare DIR METHOD...
        train the full-precision CNN (DIR/model.h5) and binarize it in this one process for each METHOD
        (DIR/plain-METHOD.npz: the binary kernels and the accuracy)
    python multiworker_run.py worker DIR METHOD... --out OUT [--checkpoint-dir C] [--hold-in-stage N]
        as the worker TF_CONFIG names, binarize DIR/model.h5 under MultiWorkerMirroredStrategy for each
        METHOD (checkpoints in C/METHOD; OUT/worker-I-METHOD.npz, and a RESULT line); the chief then
        exports the last model, alone. --hold-in-stage N: print HOLDING and wait to be killed once the N-th
        stage (from 1) has quantized its layer and before it fine-tunes the layers above (the kill then
        lands between two stage checkpoints, always at the same place)

METHOD is default, paper, reactnet or ste, with budgets small enough for seconds a run. Both kinds of run
see the same data in the same global batches of 64 (the strategy splits each into one half per worker).
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import numpy as np
import tensorflow as tf

LAYERS = ("block1_a", "block1_b", "block2_a")


def parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("prepare", "worker"))
    parser.add_argument("dir")
    parser.add_argument("methods", nargs="+", choices=("default", "paper", "reactnet", "ste"))
    parser.add_argument("--out")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--hold-in-stage", type=int)
    return parser.parse_args()


def config(method):
    import bitat_tf

    if method == "default":
        return bitat_tf.BinarizeConfig(steps_per_layer=12, finetune_steps=4, activation_warmup_steps=6,
                                       final_finetune_steps=12, max_groups=4, bn_recalibration_batches=4, seed=1)
    if method == "paper":
        return bitat_tf.BinarizeConfig.paper(steps_per_layer=12, finetune_steps=4, max_groups=4,
                                             bn_recalibration_batches=4, learning_rate=3e-3, seed=1)
    return bitat_tf.EndToEndConfig(method=method, steps=36, bn_recalibration_batches=4, seed=1)


def data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None][:768]
    y = digits.target.astype("int32")[:768]
    return x, y


def kernels(model):
    from bitat_tf._compat import larq

    with larq.context.quantized_scope(True):
        return {name: model.get_layer(name).kernel.numpy() for name in LAYERS}


def binarize(model, method, dataset, checkpoint_dir=None):
    import bitat_tf

    # verbose=2: a line at the end of every phase's epoch and every stage, which the test reads
    return bitat_tf.binarize(model, dataset, config=config(method), checkpoint_dir=checkpoint_dir, verbose=2)


def prepare(args):
    from conftest import make_cnn

    from bitat_tf._compat import keras

    x, y = data()
    keras.utils.set_random_seed(0)
    model = make_cnn(keras)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    model.save(os.path.join(args.dir, "model.h5"))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    for method in args.methods:
        result = binarize(model, method, dataset)
        np.savez(os.path.join(args.dir, f"plain-{method}.npz"), accuracy=result.report.binary_accuracy,
                 **kernels(result.model))


def hold_in_stage(stage):
    """Make the `stage`-th stage (from 1) print HOLDING and sleep after its quantize phase."""
    from bitat_tf.progressive import ProgressiveRun

    finetune_above, calls = ProgressiveRun.finetune_above, []

    def held(self, names):
        calls.append(names)
        if len(calls) == stage:
            print("HOLDING", flush=True)
            time.sleep(3600)
        return finetune_above(self, names)

    ProgressiveRun.finetune_above = held


def worker(args):
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # before any other op: it sets up the cluster
    from bitat_tf._compat import keras

    task = json.loads(os.environ["TF_CONFIG"])["task"]
    if args.hold_in_stage:
        hold_in_stage(args.hold_in_stage)
    model = keras.models.load_model(os.path.join(args.dir, "model.h5"))
    x, y = data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    for method in args.methods:
        checkpoint_dir = args.checkpoint_dir and os.path.join(args.checkpoint_dir, method)
        with strategy.scope():
            result = binarize(model, method, dataset, checkpoint_dir)
        np.savez(os.path.join(args.out, f"worker-{task['index']}-{method}.npz"),
                 accuracy=result.report.binary_accuracy, replicas=strategy.num_replicas_in_sync,
                 **kernels(result.model))
        print("RESULT " + json.dumps({"method": method, "history": sorted(result.history),
                                      "seconds": {r.name: r.seconds for r in result.report.layers}}),
              flush=True)
    if strategy.extended.should_checkpoint:  # the chief alone exports, as docs/distributed.md shows
        import bitat_tf

        print(f"EXPORTED {len(bitat_tf.export_lce(result.model))} bytes", flush=True)


if __name__ == "__main__":
    arguments = parse()
    (prepare if arguments.mode == "prepare" else worker)(arguments)
