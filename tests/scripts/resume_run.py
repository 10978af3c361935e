"""Binarize the digits CNN with a recipe, optionally with a checkpoint dir; write its kernels and steps.

    python resume_run.py RECIPE OUT.npz [CHECKPOINT_DIR]

RECIPE: "paper" (Algorithm 1 as published: the pass alone, whole layers checkpointed), "default" (BiTAT's
pass, then the end-to-end last phase) or "reactnet" (the two-step baseline); the last two checkpoint their
whole-network phases at the end of every epoch. The .npz holds the binary kernels and, under "steps", the
optimizer steps each phase took in this process. The run prints at verbose=2: a line as each stage starts
and at the end of every epoch, which the tests read to know when to kill it.
"""

import json
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

CONFIGS = {
    "paper": lambda: bitat_tf.BinarizeConfig.paper(steps_per_layer=40, finetune_steps=10, max_groups=4,
                                                   bn_recalibration_batches=2, seed=5),
    "default": lambda: bitat_tf.BinarizeConfig(steps_per_layer=4, finetune_steps=2, final_finetune_steps=64,
                                               max_groups=4, bn_recalibration_batches=2, seed=5),
    "reactnet": lambda: bitat_tf.EndToEndConfig(method="reactnet", steps=128, bn_recalibration_batches=2, seed=5),
}

recipe, out = sys.argv[1], sys.argv[2]
digits = load_digits()
x = (digits.images / 16.0).astype("float32")[..., None][:512]
y = digits.target.astype("int32")[:512]
keras.utils.set_random_seed(0)
model = make_cnn(keras)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)  # 8 batches: a phase checkpoint every 8 steps
result = bitat_tf.binarize(model, ds, config=CONFIGS[recipe](),
                           checkpoint_dir=sys.argv[3] if len(sys.argv) > 3 else None, verbose=2)
kernels = {}
for name in ("block1_a", "block1_b", "block2_a"):
    with larq.context.quantized_scope(True):
        kernels[name] = result.model.get_layer(name).kernel.numpy()
steps = {phase: row["steps"] for phase, row in result.report.timing["phases"].items()}
np.savez(out, steps=json.dumps(steps), **kernels)
