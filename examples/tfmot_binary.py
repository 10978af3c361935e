"""Binary weights through tensorflow-model-optimization's annotate / apply flow, on sklearn's digits.

    python examples/tfmot_binary.py
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

from bitat_tf import data, tfmot as bt_tfmot, zoo  # noqa: E402
from bitat_tf._compat import keras  # noqa: E402


def main():
    train, test = data.load_digits()
    model = zoo.small_cnn()
    with bt_tfmot.quantize_scope():
        annotated = bt_tfmot.annotate(model, skip=["stem", "classifier"])  # first and last stay float
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme=bt_tfmot.BinaryScheme())
    qat.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                ["accuracy"])
    qat.fit(train, epochs=15, verbose=2)
    print("test accuracy with binary weights:", qat.evaluate(test, verbose=0)[1])
    for layer in qat.layers:
        for weight, quantizer, qvars in getattr(layer, "_weight_vars", []):
            kernel = quantizer(weight, False, qvars).numpy()
            per_channel = [np.unique(np.abs(kernel[..., c])).size for c in range(kernel.shape[-1])]
            print(f"{layer.layer.name}: {kernel.size} weights, distinct |values| per output channel: "
                  f"{sorted(set(per_channel))}  (1 = binary: +alpha_c or -alpha_c)")


if __name__ == "__main__":
    main()
