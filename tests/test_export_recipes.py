"""Every recipe's model exports fully binary: each binarized layer an LceBconv2d, and the file agrees with Keras.

The small CNN is the model of the float-fallback report (3x3 convolutions, BatchNorm, ReLU): with the default
recipe two of its three binary convolutions once became float CONV_2D. Each recipe here trains enough steps
for its last phase to move the scales alpha; the export's own census check would raise a FloatFallbackError
on any binarized layer left float, and the census is counted here too.
"""

import pytest

import bitat_tf

CHEAP = dict(capture_rows=256, capture_batches=1, bn_recalibration_batches=2, max_groups=4)
RECIPES = {
    "default": lambda: bitat_tf.BinarizeConfig(steps_per_layer=4, finetune_steps=2, final_finetune_steps=40,
                                               **CHEAP),
    "paper": lambda: bitat_tf.BinarizeConfig.paper(steps_per_layer=4, finetune_steps=2, **CHEAP),
    "reactnet": lambda: bitat_tf.EndToEndConfig(method="reactnet", steps=40, bn_recalibration_batches=2),
    "ste": lambda: bitat_tf.EndToEndConfig(method="ste", steps=40, bn_recalibration_batches=2),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_exports_every_binarized_layer_as_a_binary_op(recipe, trained_cnn, digits_ds, tmp_path):
    train, _ = digits_ds
    result = bitat_tf.binarize(trained_cnn, train, config=RECIPES[recipe](), verbose=0)
    binarized = [r.name for r in result.report.layers if r.binarized]
    assert len(binarized) == 3
    flatbuffer = bitat_tf.export_lce(result.model, tmp_path / "m.tflite")  # raises on a float fallback
    check = bitat_tf.verify_export(result.model, flatbuffer, digits_ds[1])  # the file computes what Keras does
    assert check.lce_bconv2d == check.binarized_convolutions == 3 and not check.not_converted
    assert check.top1_agreement >= 0.97, check
