"""binarize runs inside a tf.distribute scope and matches the single-device run within tolerance."""

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "mirrored_run.py")


def test_mirrored_strategy_over_two_cpus_matches_single_device():
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=600)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["replicas"] == 2
    # Gradients are all-reduced in another order and BatchNorm sees per-replica half batches, so the runs
    # are not bit-identical; they must agree on almost every sign, on the scales and on accuracy.
    for name, layer in result["layers"].items():
        assert layer["sign_agreement"] >= 0.95, (name, layer)  # measured 0.969-0.996
        assert layer["alpha_rel_diff"] <= 0.25, (name, layer)  # measured 0.02-0.15
    single, mirrored = result["accuracy"]
    assert abs(single - mirrored) <= 0.1, result  # measured 0.648 vs 0.686
