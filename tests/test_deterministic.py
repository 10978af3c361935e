"""deterministic=True: two processes with one seed end with the same binary model and the same report.

The runs are subprocesses (`scripts/deterministic_run.py`): op determinism is process-wide and stays on
after a deterministic run, so no test here turns it on in the test process.
"""

import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorflow.python.framework import config as tf_config

import bitat_tf
from bitat_tf._compat import tf
from bitat_tf.engine import determinism
from bitat_tf.engine.streams import DataStreams
from bitat_tf.errors import ConfigError, DatasetError

SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "deterministic_run.py")


def test_two_processes_with_one_seed_end_with_bit_identical_binary_models_and_reports(tmp_path, trained_cnn):
    """The default recipe (its last phase end to end) and ReActNet's two steps, each reading its reshuffled,
    prefetched data for several epochs through both of the run's streams."""
    model = tmp_path / "model.keras"
    trained_cnn.save(model)
    runs = [subprocess.Popen([sys.executable, SCRIPT, str(model), str(tmp_path / f"run{i}")], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
    for run in runs:  # side by side: two processes competing for the cores, as two users' runs would
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-3000:]
    for recipe, phases in (("default", "final_end_to_end"), ("reactnet", "weights")):
        first, second = (np.load(tmp_path / f"run{i}_{recipe}.npz") for i in (0, 1))
        assert sorted(first.files) == sorted(second.files)
        assert sorted(k for k in first.files if k.startswith("sign:")) == [
            "sign:block1_a", "sign:block1_b", "sign:block2_a"]
        different = [k for k in first.files if first[k].tobytes() != second[k].tobytes()]
        assert not different, f"{recipe}: {different} differ between the two processes"
        report, again = (json.loads((tmp_path / f"run{i}_{recipe}.json").read_text()) for i in (0, 1))
        assert report == again, recipe
        assert report["op_determinism_after_run"] is True and report["config"]["deterministic"] is True
        assert phases in report["phases"] and 0 < report["binary_accuracy"] <= 1, report["phases"]


class _Streams(DataStreams):
    def __init__(self, dataset):
        self.dataset, self.batches_drawn, self._streams = dataset, {"train": 0, "plain": 0}, {}


def test_a_deterministic_stream_starts_its_next_epoch_only_when_asked_for_a_batch_of_it():
    """Two streams of one reshuffled dataset draw each new epoch's order from one seed generator, so a
    stream that started its next epoch ahead, in a background thread, took another stream's order."""
    reads = []

    def note(i):
        reads.append(int(i))
        return i

    data = tf.data.Dataset.range(4).map(lambda i: tf.py_function(note, [i], tf.int64)).prefetch(tf.data.AUTOTUNE)

    def first_epoch_then_wait(dataset, seconds):
        reads.clear()
        stream = _Streams(dataset).stream("plain")
        assert [int(next(stream)) for _ in range(4)] == [0, 1, 2, 3]
        for _ in range(int(seconds * 10)):
            time.sleep(0.1)
            if len(reads) > 4:
                break
        return list(reads)

    assert len(first_epoch_then_wait(data, 10)) > 4  # tf.data's prefetch above repeat() reads the next epoch
    assert first_epoch_then_wait(data.with_options(determinism.stream_options()), 0.5) == [0, 1, 2, 3]


@contextlib.contextmanager
def _no_global_seed():
    from tensorflow.python.eager import context

    saved = context.global_seed()
    tf.random.set_seed(None)
    try:
        yield
    finally:
        tf.random.set_seed(saved)


def test_data_that_draws_without_a_seed_is_named():
    with _no_global_seed():
        data = tf.data.Dataset.range(8)
        shuffled = data.shuffle(8)
        noisy = data.map(lambda i: tf.cast(i, tf.float32) + tf.random.uniform([]))
        flipped = tf.data.Dataset.zip((data, tf.data.Dataset.random())).map(lambda i, r: i)
    assert determinism.unseeded(shuffled.batch(2).prefetch(1)) == ["Dataset.shuffle without a seed"]
    assert determinism.unseeded(noisy) == ["RandomUniform without a seed in the function of a Map step"]
    assert determinism.unseeded(flipped) == ["Dataset.random without a seed"]
    seeded = data.shuffle(8, seed=1).map(lambda i: tf.random.stateless_uniform([], [1, i]) + tf.random.uniform(
        [], seed=2))
    assert determinism.unseeded(seeded) == []


def test_a_deterministic_run_refuses_unseeded_data_before_it_turns_anything_on(trained_cnn, digits):
    x, y, _, _ = digits
    with _no_global_seed():
        data = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).shuffle(64).batch(32)
    with pytest.raises(DatasetError, match=r"deterministic=True, but dataset draws .*Dataset.shuffle without a "
                                           r"seed.*shuffle\(n, seed=0\)"):
        bitat_tf.binarize(trained_cnn, data, config=bitat_tf.BinarizeConfig(deterministic=True, steps_per_layer=1),
                          verbose=0)
    assert not tf_config.is_op_determinism_enabled()


@pytest.mark.parametrize("make", [bitat_tf.BinarizeConfig, bitat_tf.EndToEndConfig])
def test_the_setting_is_checked_and_round_trips(make):
    config = make(deterministic=True, seed=4)
    assert config.get_config()["deterministic"] is True and make().deterministic is False
    assert make.from_config(config.get_config()).get_config() == config.get_config()
    with pytest.raises(ConfigError, match=f"{make.__name__}: deterministic must be True or False, got 'yes'"):
        make(deterministic="yes")

