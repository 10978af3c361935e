"""Import modules in the given order, then binarize and export a tiny model; print a RESULT line.

    python import_order.py larq bitat_tf USE tensorflow

`USE` marks where `bitat_tf.binarize` is first touched (the Keras check runs there); without it, after
every import.

Run in a fresh process per order: which Keras `tf.keras` resolves to is decided by the first import.
The caller sets TF_USE_LEGACY_KERAS (or leaves it unset to check the Keras 3 message).
"""

import importlib
import json
import sys

order = sys.argv[1:] if "USE" in sys.argv[1:] else sys.argv[1:] + ["USE"]
for name in order:
    if name != "USE":
        importlib.import_module(name)
        continue
    bitat_tf = importlib.import_module("bitat_tf")
    try:
        binarize = bitat_tf.binarize  # the first use checks the Keras version
    except ImportError as err:
        print("IMPORT_ERROR " + json.dumps(str(err)))
        sys.exit(0)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from bitat_tf.export import export_lce, op_census  # noqa: E402

L = keras.layers
inputs = keras.Input((6, 6, 1))
h = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
h = L.BatchNormalization(name="stem_bn")(h)
h = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(h)
h = L.BatchNormalization(name="conv_bn")(h)
outputs = L.Dense(3, name="classifier")(L.GlobalAveragePooling2D()(h))
model = keras.Model(inputs, outputs)
rng = np.random.default_rng(0)
data = tf.data.Dataset.from_tensor_slices((rng.random((16, 6, 6, 1), np.float32), np.arange(16) % 3)).batch(8)
config = bitat_tf.BinarizeConfig.paper(steps_per_layer=1, finetune_steps=0, max_groups=4, bn_recalibration_batches=1,
                                 capture_batches=1)
result = binarize(model, data, config=config, verbose=0)
print("RESULT " + json.dumps({"ops": dict(op_census(export_lce(result.model))),
                              "tf_keras_layers": isinstance(result.model.get_layer("conv"), keras.layers.Layer)}))
