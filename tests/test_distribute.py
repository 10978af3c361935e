"""binarize runs inside a tf.distribute scope and matches the single-device run.

The bounds rest on what each comparison measures, not on one CPU's kernels:
- one replica under MirroredStrategy does the plain run's arithmetic (nothing to all-reduce, whole
  batches for BatchNorm): it must agree to rounding. Measured bit-identical on 5 seeds.
- two replicas reduce gradients in another order and BatchNorm sees half batches, so the runs drift apart
  a little. Judged on means, not worst channels: the share of kernel signs that agree, the mean relative
  difference of the scales alpha_c, and accuracy. Over seeds 0-4, with oneDNN's kernels on and off (two
  kernel paths, as two CPUs would have), the worst figures were sign agreement 0.965, mean alpha difference
  0.046 and accuracy gap 0.037; the bounds leave 2.6-3.2x those deviations.
A single channel's scale can differ by 40% on some CPUs (seen on an AVX2-only EPYC), which is why no bound
rests on a maximum.
"""

import json
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "mirrored_run.py")


def test_mirrored_strategy_matches_single_device():
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=900)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["one_replica_replicas_in_sync"] == 1 and result["two_replicas_replicas_in_sync"] == 2
    for name, layer in result["layers"]["one_replica"].items():
        assert layer["sign_agreement"] >= 0.999, (name, layer)
        assert layer["alpha_mean_rel_diff"] <= 1e-3, (name, layer)
    assert abs(result["accuracy"]["one_replica"] - result["accuracy"]["plain"]) <= 0.01, result
    for name, layer in result["layers"]["two_replicas"].items():
        assert layer["sign_agreement"] >= 0.90, (name, layer)
        assert layer["alpha_mean_rel_diff"] <= 0.12, (name, layer)
    assert abs(result["accuracy"]["two_replicas"] - result["accuracy"]["plain"]) <= 0.12, result
