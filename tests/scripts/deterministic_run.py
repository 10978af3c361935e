"""Binarize a saved model with deterministic=True, the default recipe then ReActNet's; save what must repeat.

    python deterministic_run.py MODEL OUT_PREFIX

Writes OUT_PREFIX_<recipe>.npz (every weight of the binary model, and each binarized layer's kernel signs
and scales alpha) and OUT_PREFIX_<recipe>.json (the report without its timings, and whether op
determinism was still on after the run). The training data is reshuffled every epoch (seeded) and
prefetched, and both recipes read it for several epochs through the train step's and the captures'
streams.
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
from sklearn.datasets import load_digits
from tensorflow.python.framework import config as tf_config

import bitat_tf
from bitat_tf import graph
from bitat_tf._compat import keras, larq, tf

RECIPES = {
    "default": lambda: bitat_tf.BinarizeConfig(steps_per_layer=8, finetune_steps=4, final_finetune_steps=40,
                                               max_groups=4, capture_rows=512, kmeans_rows=256, seed=3,
                                               deterministic=True),
    "reactnet": lambda: bitat_tf.EndToEndConfig(method="reactnet", steps=40, seed=3, deterministic=True),
}


def data():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    train = tf.data.Dataset.from_tensor_slices((x[:512], y[:512])).shuffle(512, seed=1).batch(64)
    val = tf.data.Dataset.from_tensor_slices((x[1400:], y[1400:])).batch(128)
    return train.prefetch(tf.data.AUTOTUNE), val


def main(model_path, prefix):
    model = keras.models.load_model(model_path)
    for recipe, config in RECIPES.items():
        train, val = data()
        result = bitat_tf.binarize(model, train, validation_data=val, config=config(), verbose=0)
        weights = {f"weight:{v.name}": v.numpy() for v in result.model.weights}
        for row in result.report.layers:
            if row.binarized:
                layer = result.model.get_layer(row.name)
                with larq.context.quantized_scope(True):
                    kernel = layer.kernel.numpy()  # alpha_c * sign(w)
                weights[f"sign:{row.name}"] = np.where(kernel >= 0, 1, -1).astype(np.int8)
                weights[f"alpha:{row.name}"] = graph.weight_quantizer(layer).alpha.numpy()
        np.savez(f"{prefix}_{recipe}.npz", **weights)
        report = result.report.to_dict()
        report.pop("seconds")
        report.pop("timing")
        for row in report["layers"]:
            row.pop("seconds")
        report["op_determinism_after_run"] = tf_config.is_op_determinism_enabled()
        report["phases"] = sorted(result.history)
        with open(f"{prefix}_{recipe}.json", "w") as f:
            json.dump(report, f, default=str, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
