"""Binarize the digits CNN, optionally with a checkpoint dir; save the binary kernels to an .npz.

    python resume_run.py OUT.npz [CHECKPOINT_DIR]
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

import numpy as np  # noqa: E402

import bitat_tf  # noqa: E402
from bitat_tf._compat import keras, larq, tf  # noqa: E402
from conftest import make_cnn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None][:512]
y = digits.target.astype("int32")[:512]
keras.utils.set_random_seed(0)
model = make_cnn(keras)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
config = bitat_tf.BinarizeConfig.paper(steps_per_layer=40, finetune_steps=10, max_groups=4, bn_recalibration_batches=2,
                                 seed=5)
# verbose=2: a line as each stage starts, which the test reads to know when to kill the run
result = bitat_tf.binarize(model, ds, config=config, checkpoint_dir=sys.argv[2] if len(sys.argv) > 2 else None,
                           verbose=2)
kernels = {}
for name in ("block1_a", "block1_b", "block2_a"):
    with larq.context.quantized_scope(True):
        kernels[name] = result.model.get_layer(name).kernel.numpy()
np.savez(sys.argv[1], **kernels)
