"""What `binarize` prints at each `verbose`: nothing, summary lines (bars on a terminal), a line per epoch.

The command line's demo at its default verbosity is run as a user runs it, on a tiny budget: into a log
(a pipe), and on a pseudo-terminal.
"""

import io
import os
import re
import select
import subprocess
import sys

import pytest

import bitat_tf

# 4 batches an epoch: 6 steps a layer are two epochs, 3 above it one, the last phase's 9 three.
RUN = dict(steps_per_layer=6, finetune_steps=3, final_finetune_steps=9, max_groups=4, capture_rows=256,
           capture_batches=1, bn_recalibration_batches=2)
LAYERS = ("block1_a", "block1_b", "block2_a")


class _Terminal(io.StringIO):
    """A stdout that says it is a terminal."""

    def isatty(self):
        return True


def _run(model, data, verbose):
    return bitat_tf.binarize(model, data.take(4), config=bitat_tf.BinarizeConfig.paper(**RUN), verbose=verbose)


def test_verbose_0_prints_nothing(trained_cnn, digits_ds, capsys):
    _run(trained_cnn, digits_ds[0], 0)
    assert capsys.readouterr().out == ""


def test_verbose_2_prints_a_line_per_epoch(trained_cnn, digits_ds, capsys):
    _run(trained_cnn, digits_ds[0], 2)
    out = capsys.readouterr().out
    epochs = {}
    for label, epoch, of in re.findall(r"^    (.+) epoch (\d+)/(\d+): ", out, re.M):
        epochs.setdefault(label, []).append((int(epoch), int(of)))
    expected = {f"{n} quantize": [(1, 2), (2, 2)] for n in LAYERS}
    expected.update({f"{n} fine-tune above": [(1, 1)] for n in LAYERS})
    expected["final fine-tune"] = [(1, 3), (2, 3), (3, 3)]
    assert epochs == expected
    for k, name in enumerate(LAYERS, start=1):  # each stage's first line and summary line
        assert f"[{k}/3] {name} (block" in out and f"[{k}/3] {name} done in" in out


def test_verbose_1_in_a_log_prints_one_summary_line_per_layer(trained_cnn, digits_ds, capsys):
    _run(trained_cnn, digits_ds[0], 1)  # pytest's captured stdout is not a terminal
    out = capsys.readouterr().out
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    for k, name in enumerate(LAYERS, start=1):
        assert sum(line.startswith(f"[{k}/3] {name}") for line in lines) == 1, out
        assert any(line.startswith(f"[{k}/3] {name} done in") for line in lines), out
    assert not any(" epoch " in line for line in lines), out
    assert sum(line.startswith("final fine-tune: 9 steps in") for line in lines) == 1, out
    assert len(lines) == 1 + len(LAYERS) + 1 + 1, out  # what is binarized, the layers, the last phase, result


def test_verbose_1_on_a_terminal_draws_progress_bars(trained_cnn, digits_ds, monkeypatch):
    from bitat_tf.engine import progress

    monkeypatch.setattr(progress, "_REDRAW_SECONDS", 0.0)  # every step drawn
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    _run(trained_cnn, digits_ds[0], 1)
    out = terminal.getvalue()
    assert "\r" in out  # bars redrawn in place
    for k, name in enumerate(LAYERS, start=1):  # one bar a stage, over both its phases (6 + 3 steps)
        assert re.search(rf"\[{k}/3\] {name} quantize +\d+/9 \[", out), out
        assert f"[{k}/3] {name} done in" in out  # the summary line the bar gives way to
    assert re.search(r"\[1/3\] block1_a fine-tune above +[7-9]/9 \[", out), out
    assert re.search(r"final fine-tune +\d+/9 \[", out) and "loss " in out and "run ETA" in out, out
    summaries = [line.split("\r")[-1] for line in out.split("\n") if " done in " in line]
    assert len(summaries) == len(LAYERS), out


@pytest.mark.parametrize("verbose", [0, 1, 2, True, False])
def test_every_verbosity_is_accepted(verbose):
    from bitat_tf.inputs import check_verbose

    assert check_verbose(verbose) == int(verbose)


# The demo as `bitat-tf demo` runs it, its budgets cut to a few steps a phase (its output has the same lines).
DEMO = [sys.executable, "-m", "bitat_tf", "demo", "--fp-epochs", "1", "--steps-per-layer", "3",
        "--finetune-steps", "2", "--final-finetune-epochs", "0.1", "--max-groups", "4"]
DEMO_LOG_LINES = 15  # issue 31: "at most ~15 lines in a non-TTY log"


def _demo_env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _demo_on_a_terminal(timeout=900):
    """The demo's output (stdout and stderr) written to a pseudo-terminal, as a terminal shows it."""
    leader, follower = os.openpty()
    proc = subprocess.Popen(DEMO, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=_demo_env())
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            assert ready, f"the demo wrote nothing for {timeout} s"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the demo has exited and closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        proc.wait(timeout=60)
    out = b"".join(chunks).decode("utf-8", errors="replace")
    assert proc.returncode == 0, out[-3000:]
    return out


def test_the_demo_in_a_log_prints_a_few_lines_without_control_characters():
    proc = subprocess.run(DEMO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900, env=_demo_env())
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = proc.stdout
    assert "\r" not in log and "\x1b" not in log, repr(log)
    lines = log.strip("\n").splitlines()
    assert len(lines) <= DEMO_LOG_LINES, f"{len(lines)} lines:\n{log}"
    for k, name in enumerate(LAYERS, start=1):
        assert any(line.startswith(f"[{k}/3] {name} done in") for line in lines), log
    assert any(line.startswith("binary (BiTAT)") for line in lines), log


def test_the_demo_on_a_terminal_draws_progress_bars():
    out = _demo_on_a_terminal()
    # A terminal ends lines with "\r\n"; a bar redraws its line with a carriage return alone.
    assert re.search("\r(?!\n)", out), repr(out[-2000:])
    assert re.search(r"\[1/3\] block1_a quantize +\d+/5 \[[.=]*\] ETA", out), repr(out[-2000:])
    assert re.search(r"final end-to-end +\d+/\d+ \[[.=]*\] ETA", out), repr(out[-2000:])  # the default recipe
    for k, name in enumerate(LAYERS, start=1):
        assert f"[{k}/3] {name} done in" in out  # the summary line each bar gives way to
    assert " epoch " not in out and "binary (BiTAT)" in out
