"""What a run prints while it trains: at any `verbose` but 0, a line as each stage starts and ends and at the
end of every epoch of every phase."""

import contextlib


class Progress:
    """The run's lines; `total` is the run's optimizer steps, `position` those taken or passed over."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.total = 0
        self.position = 0
        self.last_logs = {}

    def say(self, text):
        """A line of the run's story: what it binarizes, each stage's summary, results."""
        if self.verbose:
            print(text, flush=True)

    def detail(self, text):
        """A line as a stage starts."""
        self.say(text)

    def passed(self, steps):
        """Steps of the run a resumed run does not take again."""
        self.position += steps

    @contextlib.contextmanager
    def stage(self, prefix, steps):
        """The phases of one stage (`prefix`: its place in the run)."""
        yield

    @contextlib.contextmanager
    def phase(self, label, steps, done=0):
        """A phase of `steps` optimizer steps, `done` of them taken before a resume."""
        self.passed(done)
        yield self

    def step(self, logs):
        """After every optimizer step."""
        self.position += 1

    def epoch(self, label, step, steps, chunk, logs, seconds):
        """The end of an epoch of a phase (or of a phase shorter than one): its line."""
        self.last_logs = logs
        if self.verbose:
            terms = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
            epochs = -(-steps // chunk)
            print(f"    {label} epoch {-(-step // chunk)}/{epochs}: {terms} ({seconds:.0f}s)", flush=True)


__all__ = ["Progress"]
