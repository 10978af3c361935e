"""bitat_tf: binarize a trained Keras model with BiTAT and ship it through TFLite and Larq Compute Engine.

```python
import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"   # Larq needs Keras 2; set before TensorFlow loads
import bitat_tf
result = bitat_tf.binarize(model, train_ds, validation_data=val_ds)
print(result.report.to_markdown())
```

The public names load on first use, so that `bitat-tf` (the command line) can choose Keras 2 before
TensorFlow is imported; the first use checks the Keras version and says what to do if it is wrong.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "BinarizeConfig": "bitat_tf.config",
    "EndToEndConfig": "bitat_tf.baselines",
    "BinarizeResult": "bitat_tf.engine",
    "binarize": "bitat_tf.api",
    "BitatError": "bitat_tf.errors",
    "ConfigError": "bitat_tf.errors",
    "DatasetError": "bitat_tf.errors",
    "TrainingError": "bitat_tf.errors",
    "UnsupportedModelError": "bitat_tf.errors",
    "ScaledSign": "bitat_tf.quantizers",
    "ThresholdSign": "bitat_tf.quantizers",
    "custom_objects": "bitat_tf.quantizers",
    "load_model": "bitat_tf.loading",
    "ExportError": "bitat_tf.export",
    "FloatFallbackError": "bitat_tf.export",
    "ExportWarning": "bitat_tf.export",
    "export_lce": "bitat_tf.export",
    "export_tflite": "bitat_tf.export",
    "verify_export": "bitat_tf.export",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'bitat_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
