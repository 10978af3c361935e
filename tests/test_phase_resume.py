"""`kill -9` inside a phase that trains the whole network, restart: it resumes at its last epoch checkpoint.

BiTAT's stage checkpoints hold whole layers; the last phase of the default recipe and the baselines' phases
are one long phase each, checkpointed at the end of every epoch (`checkpoint.PhaseCheckpointer`).
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "resume_run.py")
CASES = {  # recipe -> (the phase to interrupt, its steps)
    "default": ("final end-to-end", 64),
    "reactnet": ("step 2/2 binary weights", 64),
}


def _run(*args):
    proc = subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_sigkill_inside_a_phase_resumes_at_its_last_epoch(tmp_path, recipe):
    phase, steps = CASES[recipe]
    ckpt = tmp_path / "ckpt"
    victim = subprocess.Popen([sys.executable, SCRIPT, recipe, str(tmp_path / "never.npz"), str(ckpt)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in victim.stdout:  # the phase's third epoch has been reported: two checkpoints written
        if f"{phase} epoch 3/" in line:
            break
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    meta = json.loads((ckpt / "phase" / "meta.json").read_text())
    assert meta["current"]["label"] == phase and meta["current"]["step"] in (16, 24)
    resumed_at = meta["current"]["step"]

    log = _run(recipe, tmp_path / "resumed.npz", ckpt)
    assert f"resumed {phase} at step {resumed_at}" in log
    assert f"{phase} epoch 1/" not in log  # the phase did not start over
    _run(recipe, tmp_path / "fresh.npz")
    resumed, fresh = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "fresh.npz")
    resumed_steps, fresh_steps = json.loads(str(resumed["steps"])), json.loads(str(fresh["steps"]))
    assert fresh_steps[phase] == steps
    assert resumed_steps[phase] == steps - resumed_at  # this process took the rest, no more
    # The phases finished before the kill kept their timings in the checkpoint: the same step counts.
    assert {k: v for k, v in resumed_steps.items() if k != phase} == \
        {k: v for k, v in fresh_steps.items() if k != phase}
    for name in ("block1_a", "block1_b", "block2_a"):
        np.testing.assert_allclose(resumed[name], fresh[name], rtol=1e-5, atol=1e-6, err_msg=name)
