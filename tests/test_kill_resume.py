"""`kill -9` in the middle of a layer, restart with the same arguments: same binary weights as no kill."""

import os
import signal
import subprocess
import sys

import numpy as np

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "resume_run.py")


def _run(*args):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_sigkill_mid_layer_then_resume_matches_uninterrupted(tmp_path):
    ckpt = tmp_path / "ckpt"
    victim = subprocess.Popen([sys.executable, SCRIPT, "paper", str(tmp_path / "never.npz"), str(ckpt)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in victim.stdout:  # wait until the second layer's training has begun, then kill -9
        if "block1_b quantize" in line or line.startswith("[2/3] block1_b"):
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert (ckpt / "LATEST").read_text() == "stage-001"

    resumed_log = _run("paper", tmp_path / "resumed.npz", ckpt)
    assert "resumed from" in resumed_log and "1 of 3 layers done" in resumed_log
    _run("paper", tmp_path / "fresh.npz")
    resumed, fresh = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "fresh.npz")
    for name in ("block1_a", "block1_b", "block2_a"):
        np.testing.assert_allclose(resumed[name], fresh[name], rtol=1e-5, atol=1e-6, err_msg=name)
