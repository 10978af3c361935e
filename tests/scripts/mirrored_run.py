"""Binarize one model plainly, under a one-replica and under a two-replica MirroredStrategy; print JSON.

    python mirrored_run.py [seed]

Run in its own process: logical devices must be configured before TensorFlow initialises them. For each
strategy run and binarized layer it reports, against the plain run: the share of kernel signs that agree
and the mean over output channels of the relative difference of the scales alpha_c.
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

import bitat_tf  # noqa: E402
from bitat_tf._compat import keras, larq  # noqa: E402
from conftest import make_cnn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

LAYERS = ("block1_a", "block1_b", "block2_a")
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None][:768]
y = digits.target.astype("int32")[:768]
keras.utils.set_random_seed(seed)
model = make_cnn(keras, seed=seed)
model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, batch_size=64, epochs=6, verbose=0)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
config = bitat_tf.BinarizeConfig.paper(steps_per_layer=12, finetune_steps=4, max_groups=4, bn_recalibration_batches=4,
                                 learning_rate=3e-3, seed=seed + 1)


def kernels(result):
    with larq.context.quantized_scope(True):
        return {name: result.model.get_layer(name).kernel.numpy() for name in LAYERS}


def compare(a, b):
    alpha_a, alpha_b = np.abs(a).max((0, 1, 2)), np.abs(b).max((0, 1, 2))
    return {"sign_agreement": float(np.mean(np.sign(a) == np.sign(b))),
            "alpha_mean_rel_diff": float(np.mean(np.abs(alpha_a - alpha_b) / alpha_a))}


plain = bitat_tf.binarize(model, ds, config=config, verbose=0)
out = {"seed": seed, "accuracy": {"plain": plain.report.binary_accuracy}, "layers": {}}
for label, devices in (("one_replica", ["/cpu:0"]), ("two_replicas", ["/cpu:0", "/cpu:1"])):
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        run = bitat_tf.binarize(model, ds, config=config, verbose=0)
    out[f"{label}_replicas_in_sync"] = strategy.num_replicas_in_sync
    out["accuracy"][label] = run.report.binary_accuracy
    out["layers"][label] = {n: compare(kernels(plain)[n], k) for n, k in kernels(run).items()}
print("RESULT " + json.dumps(out))
