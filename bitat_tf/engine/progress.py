"""What a run shows while it trains, as `verbose` says.

- 0: nothing.
- 1 (the default): on a terminal, one progress bar per stage (the layer, k of L, the phase, the step, the
  loss, the stage's ETA and the run's), which gives way to the stage's summary line when the stage ends;
  in a log or a pipe (stdout not a terminal) the summary lines alone, without control characters.
- 2: a line at the end of every epoch of every phase, no bar.

tqdm draws the bars (a dependency of Larq Compute Engine, so installed with bitat_tf). Keras' `Progbar`
shows no label of its own and cannot clear its line for the summary, and it takes every POSIX system for
a terminal, so it would write carriage returns into a log.
"""

import contextlib
import shutil
import sys
import time

from tqdm import tqdm

_REDRAW_SECONDS = 0.2  # how often a bar redraws, reading the loss (which waits for the step's result)


class Progress:
    """The run's lines and progress bars; `total` is the run's optimizer steps (for its ETA)."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.total = 0
        self.position = 0  # steps of the run taken, or passed over when resumed
        self.last_logs = {}  # the last epoch's logs, for a phase's summary line
        self._bar = self._prefix = self._first = None
        self._taken, self._drawn = 0, 0.0

    def say(self, text):
        """A line at verbose 1 and 2 (above the bar, when one is drawn)."""
        if not self.verbose:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def detail(self, text):
        """A line at verbose 2 only."""
        if self.verbose >= 2:
            print(text, flush=True)

    def passed(self, steps):
        """Steps of the run a resumed run does not take again."""
        self.position += steps

    @contextlib.contextmanager
    def stage(self, prefix, steps, title):
        """One bar over the `steps` of the phases inside it, shown as `prefix` and `title` until the first
        phase starts, then as `prefix` and the phase's label."""
        self._prefix = prefix
        self._open(f"{prefix} {title}", steps)
        try:
            yield
        finally:
            self._close()
            self._prefix = None

    @contextlib.contextmanager
    def phase(self, label, steps, done=0):
        """A phase of `steps` optimizer steps, `done` of them taken before a resume. Inside a stage it moves
        the stage's bar on; otherwise it is a stage of its own, whose summary line follows at verbose 1."""
        own = self._prefix is None
        if own:
            self._open(label, steps)
        elif self._bar is not None:
            self._bar.set_description_str(f"{self._prefix} {label}")  # the phase shows as it starts
        self.passed(done)
        if self._bar is not None and done:
            self._bar.update(done)
        start = time.perf_counter()
        try:
            yield self
        finally:
            if own:
                self._close()
        if own and self.verbose == 1:
            self.say(self._summary(label, steps - done, time.perf_counter() - start))

    def step(self, logs):
        """After every optimizer step; `logs` (the train step's tensors) are read only when the bar redraws."""
        self.position += 1
        now = time.perf_counter()
        if self._first is None:
            self._first = now  # the run's rate is timed from the end of its first step (the trace)
        else:
            self._taken += 1
        if self._bar is None:
            return
        if now - self._drawn >= _REDRAW_SECONDS:
            self._drawn = now
            terms = [f"loss {float(logs['loss']):.4g}"] if "loss" in logs else []
            if self._taken and self.total > self.position:
                left = (now - self._first) / self._taken * (self.total - self.position)
                terms.append(f"run ETA {tqdm.format_interval(left)}")
            self._bar.set_postfix_str(", ".join(terms), refresh=False)
        self._bar.update(1)

    def epoch(self, label, step, steps, chunk, logs, seconds):
        """The end of an epoch of a phase (or of a phase shorter than one, or of a whole phase when the
        dataset's epoch has no length: `chunk` is then the phase's steps): its line at verbose 2."""
        self.last_logs = logs
        if self.verbose >= 2:
            terms = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
            epochs = -(-steps // chunk)
            print(f"    {label} epoch {-(-step // chunk)}/{epochs}: {terms} ({seconds:.0f}s)", flush=True)

    def _summary(self, label, steps, seconds):
        logs = self.last_logs
        scores = ", ".join(f"{k} {logs[k]:.4g}" for k in ("loss", "accuracy") if k in logs)
        return f"{label}: {steps} steps in {seconds:.0f}s" + (f"; {scores}" if scores else "")

    def _open(self, label, steps):
        if self.verbose == 1 and _terminal():
            # The size as shutil reads it: a terminal that reports none (a pseudo-terminal without one)
            # gets 80 x 24, where tqdm would take it for 0 rows and draw nothing.
            size = shutil.get_terminal_size()
            self._bar = _Bar(total=steps, desc=label, file=sys.stdout, leave=False, ncols=size.columns,
                             nrows=size.lines, mininterval=_REDRAW_SECONDS, miniters=1, ascii=".=",
                             bar_format="{desc} {n_fmt}/{total_fmt} [{bar}] ETA {remaining}{postfix}")
            self._drawn = 0.0

    def _close(self):
        if self._bar is not None:
            self._bar.close()  # leave=False: the bar clears its line
            self._bar = None


class _Bar(tqdm):
    monitor_interval = 0  # no monitor thread: a bar redraws when the run steps


def _terminal():
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


__all__ = ["Progress"]
