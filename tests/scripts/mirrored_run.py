"""Binarize the same model on one device and under MirroredStrategy over two logical CPUs; print JSON.

Run in its own process: logical devices must be configured before TensorFlow initialises them.
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

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None][:768]
y = digits.target.astype("int32")[:768]
keras.utils.set_random_seed(0)
model = make_cnn(keras)
model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, batch_size=64, epochs=6, verbose=0)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
config = bitat_tf.BinarizeConfig(steps_per_layer=12, finetune_steps=4, max_groups=4, bn_recalibration_batches=4,
                                 learning_rate=3e-3, seed=1)
single = bitat_tf.binarize(model, ds, config=config, verbose=0)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    mirrored = bitat_tf.binarize(model, ds, config=config, verbose=0)
out = {"replicas": strategy.num_replicas_in_sync, "accuracy": [single.report.binary_accuracy,
                                                               mirrored.report.binary_accuracy], "layers": {}}
for name in ("block1_a", "block1_b", "block2_a"):
    with larq.context.quantized_scope(True):
        a, b = (r.model.get_layer(name).kernel.numpy() for r in (single, mirrored))
    out["layers"][name] = {"sign_agreement": float(np.mean(np.sign(a) == np.sign(b))),
                           "alpha_rel_diff": float(np.max(np.abs(np.abs(a).max((0, 1, 2)) - np.abs(b).max((0, 1, 2)))
                                                          / np.abs(a).max((0, 1, 2))))}
print("RESULT " + json.dumps(out))
