"""Every import order a Larq, LCE or tfmot user may have works; Keras 3 without the variable gets the message.

Each case is a fresh process: which Keras `tf.keras` resolves to is fixed by the first TensorFlow import.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "import_order.py")
OTHERS = ("larq", "larq_compute_engine", "tensorflow_model_optimization", "tf_keras", "tensorflow")
ORDERS = ([[m, "bitat_tf", "USE"] for m in OTHERS] + [["bitat_tf", "USE", m] for m in OTHERS]
          + [[*OTHERS, "bitat_tf", "USE"], ["bitat_tf", "USE", *OTHERS]])


def _run(order, legacy):
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if legacy:
        env["TF_USE_LEGACY_KERAS"] = "1"
    proc = subprocess.run([sys.executable, SCRIPT, *order], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "-".join(o))
def test_import_order_binarizes_and_exports(order):
    out = _run(order, legacy=True)
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, out
    result = json.loads(line[len("RESULT "):])
    assert result["tf_keras_layers"]
    assert result["ops"].get("LceBconv2d") == 1 and result["ops"].get("LceQuantize") == 1, result


@pytest.mark.parametrize("order", [["bitat_tf", "USE"], ["tensorflow", "bitat_tf", "USE"]],
                         ids=lambda o: "-".join(o))
def test_keras3_without_the_variable_gets_the_message(order):
    out = _run(order, legacy=False)
    line = next((l for l in out.splitlines() if l.startswith("IMPORT_ERROR ")), None)
    assert line is not None, out
    message = json.loads(line[len("IMPORT_ERROR "):])
    assert "TF_USE_LEGACY_KERAS=1" in message and "tf.keras is Keras 3" in message
