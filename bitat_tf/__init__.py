"""bitat_tf: binarize a trained Keras model with BiTAT and ship it through TFLite and Larq Compute Engine.

```python
import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"   # Larq needs Keras 2; set before TensorFlow loads
import bitat_tf
result = bitat_tf.binarize(model, train_ds, validation_data=val_ds)
print(result.report.to_markdown())
```
"""

from bitat_tf._compat import keras  # noqa: F401  (fails early, with instructions, on Keras 3)
from bitat_tf.config import BinarizeConfig
from bitat_tf.errors import BitatError, ConfigError, DatasetError, TrainingError, UnsupportedModelError
from bitat_tf.progressive import BinarizeResult, binarize
from bitat_tf.quantizers import ScaledSign, ThresholdSign, custom_objects

__version__ = "0.1.0"

__all__ = [
    "BinarizeConfig", "BinarizeResult", "BitatError", "ConfigError", "DatasetError", "ScaledSign",
    "ThresholdSign", "TrainingError", "UnsupportedModelError", "binarize", "custom_objects", "__version__",
]
