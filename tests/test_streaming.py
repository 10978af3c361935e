"""Streaming data: no dataset is read through to count it (issue 30).

Budgets in steps need no length; budgets in epochs take `dataset.cardinality()`, else the user's
`steps_per_epoch=`, else a `DatasetError` before anything trains. The data here are Python generators that
count what they yield, so a test sees how far each pass over them read; a guard aborts the run with every
thread's stack if a test hangs (an endless generator read to its end never returns).
"""

import faulthandler
import itertools
import os
import re
import sys
import threading

import numpy as np
import pytest

import bitat_tf
from bitat_tf import BinarizeConfig, EndToEndConfig, fp_training
from bitat_tf._compat import keras, tf
from bitat_tf.errors import ConfigError, DatasetError
from conftest import make_cnn

HANG_SECONDS = 300  # far above any test here (seconds each): only a hang reaches it
BATCH = 16
X = np.random.default_rng(0).random((BATCH, 8, 8, 1)).astype("float32")
Y = (np.arange(BATCH) % 10).astype("int32")
SPEC = (tf.TensorSpec((None, 8, 8, 1), tf.float32), tf.TensorSpec((None,), tf.int32))
# One binarized layer (block1_a): a quantize phase and a fine-tune above, no last phase (the paper's).
ONE_LAYER = dict(keep_full_precision=["block1_b", "block2_a"], bn_recalibration_batches=1, capture_batches=1)
STEPS = BinarizeConfig.paper(steps_per_layer=3, finetune_steps=2, **ONE_LAYER)
EPOCHS = BinarizeConfig.paper(epochs_per_layer=1.5, finetune_epochs=0.5, **ONE_LAYER)


@pytest.fixture(autouse=True)
def hang_guard(request):
    """Abort the run, naming the test and showing every thread's stack, if a test hangs: a dataset read
    through to its end never returns when it has none, and nothing else would stop the test."""
    def abort():
        capture = request.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=True)  # fd 2 back to the terminal or log
        print(f"\n{request.node.nodeid} hung for {HANG_SECONDS} s; the threads' stacks:", file=sys.__stderr__,
              flush=True)
        faulthandler.dump_traceback(file=sys.__stderr__)
        os._exit(1)

    timer = threading.Timer(HANG_SECONDS, abort)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture(scope="module")
def model():
    return make_cnn(keras)


class Stream:
    """A `from_generator` dataset of (x, y) batches: endless, or raising once a pass reads past `limit`
    batches. `drawn` counts the batches yielded by all passes, `longest` the most one pass yielded."""

    def __init__(self, limit=None):
        self.limit, self.drawn, self.longest = limit, 0, 0
        self.dataset = tf.data.Dataset.from_generator(self._batches, output_signature=SPEC)

    def _batches(self):
        for i in itertools.count():
            if self.limit is not None and i >= self.limit:
                raise RuntimeError(f"a pass read past batch {self.limit}: the dataset was read through")
            self.drawn += 1
            self.longest = max(self.longest, i + 1)
            yield X, Y


def _phase_steps(result):
    return result.report.timing["phase_steps"]


def test_endless_generator_has_unknown_length():
    assert int(Stream().dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY


@pytest.mark.parametrize("config, steps", [
    (STEPS, {"block1_a quantize": 3, "block1_a fine-tune above": 2}),
    (EndToEndConfig(method="reactnet", steps=4), {"step 1/2 binary activations": 2, "step 2/2 binary weights": 2}),
], ids=["bitat", "reactnet"])
def test_endless_generator_trains_on_step_budgets(model, config, steps, capsys):
    """Without an epoch length verbose=2 prints one line a phase (its only "epoch")."""
    stream = Stream()
    result = bitat_tf.binarize(model, stream.dataset, config=config, verbose=2)
    assert _phase_steps(result) == steps
    assert result.report.binary_accuracy is not None
    assert stream.drawn >= sum(steps.values())  # the steps did read the stream
    lines = re.findall(r"^    (.+) epoch (\d+)/(\d+): ", capsys.readouterr().out, re.M)
    assert lines == [(label, "1", "1") for label in steps]


def test_no_pass_reads_the_dataset_through(model):
    """Step budgets well below the generator's 40 batches: every pass (first-batch check, evaluation's 8
    training batches, captures, the train stream) stops long before; a counting pass would raise."""
    stream = Stream(limit=40)
    result = bitat_tf.binarize(model, stream.dataset, config=STEPS, verbose=0)
    assert _phase_steps(result) == {"block1_a quantize": 3, "block1_a fine-tune above": 2}
    assert 0 < stream.longest < 40


def test_the_guarded_generator_does_raise_when_read_through():
    """The test above could not pass by accident: reading the dataset through fails."""
    with pytest.raises(Exception, match="read past batch 40"):
        Stream(limit=40).dataset.reduce(0, lambda n, _: n + 1)


@pytest.mark.parametrize("config, words", [
    (EPOCHS, (r"BinarizeConfig\(epochs_per_layer=1.5, finetune_epochs=0.5\) is a budget in epochs.*"
              r"steps_per_layer=\.\.\., finetune_steps")),
    (EndToEndConfig(epochs=2), r"EndToEndConfig\(epochs=2\) is a budget in epochs.*EndToEndConfig\(steps=\.\.\.\)"),
    (None, "binarize's default budget"),
], ids=["bitat", "reactnet", "default"])
def test_epoch_budgets_without_a_length_are_refused_before_training(model, config, words):
    stream = Stream()
    with pytest.raises(DatasetError, match=words) as raised:
        bitat_tf.binarize(model, stream.dataset, config=config, verbose=0)
    message = str(raised.value)
    assert "steps_per_epoch=N" in message and "cardinality UNKNOWN" in message
    assert stream.drawn <= 2  # the first batch's check, nothing trained


def test_epochs_given_to_binarize_name_themselves(model):
    with pytest.raises(DatasetError, match=r"binarize\(epochs=3\) is a budget in epochs"):
        bitat_tf.binarize(model, Stream().dataset, epochs=3, verbose=0)


def test_a_repeated_dataset_needs_a_length_for_epochs(model):
    data = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4).repeat()
    with pytest.raises(DatasetError, match="repeats forever.*steps_per_epoch=N"):
        bitat_tf.binarize(model, data, config=EPOCHS, verbose=0)


def test_steps_per_epoch_sizes_epoch_budgets_and_epoch_lines(model, capsys):
    """4 batches an epoch: 1.5 epochs a layer are 6 steps, 0.5 above 2; verbose=2 prints a line an epoch."""
    result = bitat_tf.binarize(model, Stream().dataset, config=EPOCHS, steps_per_epoch=4, verbose=2)
    assert _phase_steps(result) == {"block1_a quantize": 6, "block1_a fine-tune above": 2}
    lines = re.findall(r"^    (.+) epoch (\d+)/(\d+): ", capsys.readouterr().out, re.M)
    assert lines == [("block1_a quantize", "1", "2"), ("block1_a quantize", "2", "2"),
                     ("block1_a fine-tune above", "1", "1")]


def test_filtered_finite_dataset_trains_on_epochs_with_steps_per_epoch(model):
    """A filter hides the length of 24 examples (6 batches of 4); given, epoch budgets work, and the run
    reads on past the data's end (the stream repeats it)."""
    x = np.concatenate([X, X[:8]])
    y = np.concatenate([Y, Y[:8]])
    data = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda *_: True).batch(4)
    assert int(data.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    with pytest.raises(DatasetError, match="cardinality UNKNOWN"):
        bitat_tf.binarize(model, data, config=EPOCHS, verbose=0)
    result = bitat_tf.binarize(model, data, config=EPOCHS, steps_per_epoch=6, verbose=0)
    assert _phase_steps(result) == {"block1_a quantize": 9, "block1_a fine-tune above": 3}


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "4"])
def test_steps_per_epoch_must_be_a_positive_whole_number(model, value):
    with pytest.raises(ConfigError, match="steps_per_epoch must be"):
        bitat_tf.binarize(model, Stream().dataset, config=STEPS, steps_per_epoch=value, verbose=0)


def test_endless_validation_data_is_refused(model):
    endless = tf.data.Dataset.from_tensor_slices((X, Y)).batch(4).repeat()
    with pytest.raises(DatasetError, match="validation_data repeats forever.*take"):
        bitat_tf.binarize(model, Stream().dataset, validation_data=endless, config=STEPS, verbose=0)


def test_full_precision_training_needs_a_length_not_a_count():
    model = make_cnn(keras)
    stream = Stream()
    with pytest.raises(DatasetError, match="steps_per_epoch=N"):
        fp_training.train_full_precision(model, stream.dataset, epochs=1, verbose=0)
    assert stream.drawn == 0
    model, info = fp_training.train_full_precision(model, stream.dataset, epochs=2, steps_per_epoch=3, verbose=0)
    assert model.optimizer.iterations.numpy() == 6 and not info["cached"]
