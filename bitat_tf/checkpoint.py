"""Checkpoints after each finished layer and inside long whole-network phases, written atomically, refused
when they belong to another run.

Under a `tf.distribute.MultiWorkerMirroredStrategy` the chief alone writes into `checkpoint_dir`. Every other
worker goes through the same saves (reading a BatchNorm's moving statistics is a collective every worker
joins) into a temporary folder of its own, removed when the save ends. Every worker resumes from the
chief's folder, so it must be one they all read (on two machines: a shared filesystem); the workers check
that they found the same checkpoint before any of them loads it.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from bitat_tf import graph, transforms
from bitat_tf._compat import tf
from bitat_tf.engine.session import multi_worker
from bitat_tf.engine.timing import PhaseTiming
from bitat_tf.errors import ConfigError

_POINTER = "LATEST"


def fingerprint(model, config, plan):
    """A hash of the model's architecture and weights, the config and the plan."""
    digest = hashlib.sha256()
    digest.update(model.to_json().encode())
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    digest.update(json.dumps(config.get_config(), sort_keys=True, default=str).encode())
    digest.update(json.dumps(plan.blocks).encode())
    return digest.hexdigest()


class Checkpointer:
    """Keeps `<dir>/stage-NNN/` (weights, transforms, report rows) and a `LATEST` pointer to the newest.

    A stage directory is complete before the pointer moves to it (`os.replace`), so a run killed at any
    moment leaves either the previous or the new checkpoint, never half of one.
    """

    def __init__(self, directory, model, config, plan):
        self.directory = os.fspath(directory)
        self.fingerprint = fingerprint(model, config, plan)
        self.chief = writes_checkpoints()
        if self.chief:
            os.makedirs(self.directory, exist_ok=True)

    def save(self, run, stages_done):
        with _written_in(self.directory, self.chief) as directory:
            self._save(run, stages_done, directory)
        if run.phase_checkpoints is not None:  # the stage holds all of it now
            run.phase_checkpoints.clear()

    def _save(self, run, stages_done, directory):
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=directory)
        run.working.save_weights(os.path.join(tmp, "weights.h5"))
        arrays = {}
        for index, state in run.blocks.items():
            arrays.update(state.to_arrays(f"b{index}_"))
        np.savez(os.path.join(tmp, "blocks.npz"), **arrays)
        meta = {
            "fingerprint": self.fingerprint,
            "stages_done": stages_done,
            "rows": {name: vars(row) for name, row in run.rows.items()},
            "history": run.history,
            "elapsed": run.elapsed,
            "batches_drawn": run.batches_drawn,
            "pending_recalibration": run.pending_recalibration,
            "blocks": {str(i): {"names": [m.name for m in s.members], "d_outs": [m.d_out for m in s.members]}
                       for i, s in run.blocks.items()},
        }
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, default=_jsonable)
        final = os.path.join(directory, f"stage-{stages_done:03d}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer_tmp = os.path.join(directory, f".{_POINTER}.tmp")
        with open(pointer_tmp, "w") as f:
            f.write(os.path.basename(final))
        os.replace(pointer_tmp, os.path.join(directory, _POINTER))
        for old in os.listdir(directory):
            if old.startswith("stage-") and old != os.path.basename(final):
                shutil.rmtree(os.path.join(directory, old), ignore_errors=True)

    def _read(self):
        """(the newest stage folder, its meta) or (None, None) when there is no checkpoint yet."""
        pointer = os.path.join(self.directory, _POINTER)
        if not os.path.exists(pointer):
            return None, None
        with open(pointer) as f:
            stage_dir = os.path.join(self.directory, f.read().strip())
        try:
            with open(os.path.join(stage_dir, "meta.json")) as f:
                meta = json.load(f)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"checkpoint_dir {self.directory!r} holds no readable checkpoint where its LATEST file points "
                f"({stage_dir!r}: {err}); it was not written by bitat_tf or was damaged. Pass an empty "
                "folder, or delete this one to start over.") from err
        if meta["fingerprint"] != self.fingerprint:
            raise ConfigError(
                f"checkpoint_dir {self.directory!r} holds a checkpoint of a different model or config; "
                "pass an empty directory, or the same model and config to resume.")
        return stage_dir, meta

    def restore(self, run):
        """Load the newest checkpoint into `run`; return the number of finished stages (0 if none)."""
        stage_dir, meta = self._read()
        done = 0 if meta is None else meta["stages_done"]
        agree(self.directory, self.fingerprint, done, f"{done} finished layers")
        if meta is None:
            return 0
        order = [n for block in run.plan.blocks for n in block]
        for name in order[:done]:
            layer = run.working.get_layer(name)
            graph.set_binary(layer, True)
        run.working.load_weights(os.path.join(stage_dir, "weights.h5"))
        with np.load(os.path.join(stage_dir, "blocks.npz")) as arrays:
            arrays = dict(arrays)
        for index, info in meta["blocks"].items():
            run.blocks[int(index)] = transforms.BlockState.from_arrays(
                arrays, f"b{index}_", info["names"], info["d_outs"])
        for name, fields in meta["rows"].items():
            vars(run.rows[name]).update(fields)
        run.history.update(meta["history"])
        run.elapsed = meta["elapsed"]
        run.batches_drawn.update(meta.get("batches_drawn", {}))
        pending = meta.get("pending_recalibration")
        run.pending_recalibration = tuple(pending) if pending is not None else None
        run.say(f"bitat_tf: resumed from {stage_dir} with {done} of {len(order)} layers done")
        return done


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


class PhaseCheckpointer:
    """Checkpoints inside the phases that train the whole network (BiTAT's activation warm-up and last phase,
    the baselines' phases), at the end of every epoch of the phase: `<dir>/phase/`.

    A stage checkpoint holds whole layers; at 16x the standard budget the default's last phase alone runs
    for an hour, so an interruption there would otherwise lose it all. The phase checkpoint holds the
    working model's weights, the optimizer's state (moments and step, which the cosine schedule reads), the
    step the phase reached, the phases finished since the last stage checkpoint (with their histories and
    timings) and the data streams' positions. A resumed run passes over the finished phases, loads the
    state when it reaches the first unfinished one, and continues that phase at its next step: the same
    number of optimizer steps in every phase as an uninterrupted run. A new stage checkpoint clears it.
    """

    def __init__(self, directory, fingerprint):
        self.directory = os.path.join(os.fspath(directory), "phase")
        self.fingerprint = fingerprint
        self.chief = writes_checkpoints()
        self.meta = self._read()
        self.applied = self.meta is None  # nothing to load into the run
        where = None if self.meta is None else (sorted(self.meta["done"]), self.meta["current"] and
                                                 [self.meta["current"]["label"], self.meta["current"]["step"]])
        agree(os.path.dirname(self.directory), fingerprint, _digest(where),
              "no phase checkpoint" if where is None else f"phase checkpoint {where}")

    def _read(self):
        path = os.path.join(self.directory, "meta.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            meta = json.load(f)
        if meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"checkpoint_dir {os.path.dirname(self.directory)!r} holds a phase checkpoint of a different "
                "model or config; pass an empty directory, or the same model and config to resume.")
        return meta

    def finished(self, label):
        """The history of `label` when the checkpoint lists it as finished, else None."""
        return None if self.meta is None else self.meta["done"].get(label)

    def resume(self, run, label, optimizer_variables):
        """Load the checkpoint into `run` the first time a phase that is not finished starts; return the
        steps `label` already took (0 when the checkpoint ends elsewhere) and its history so far."""
        if self.applied:
            return 0, {}
        self.applied = True
        run.working.load_weights(os.path.join(self.directory, "weights.h5"))
        run.timing.extend(PhaseTiming(**t) for t in self.meta["timing"])
        run.batches_drawn.update(self.meta["batches_drawn"])
        pending = self.meta["pending_recalibration"]
        run.pending_recalibration = tuple(pending) if pending is not None else None
        current = self.meta["current"]
        if current is None or current["label"] != label:
            return 0, {}
        with np.load(os.path.join(self.directory, "optimizer.npz")) as arrays:
            for i, variable in enumerate(optimizer_variables):
                variable.assign(arrays[f"v{i}"])
        run.say(f"bitat_tf: resumed {label} at step {current['step']} from {self.directory}")
        return current["step"], current["history"]

    def save(self, run, label, step, history, optimizer_variables, *, finished=False):
        """Write the state after `step` steps of `label` (its end when `finished`) atomically."""
        done = dict(self.meta["done"]) if self.meta else {}
        if finished:
            done[label] = history
        meta = {"fingerprint": self.fingerprint, "done": done,
                "current": None if finished else {"label": label, "step": step, "history": history},
                "timing": [dataclasses.asdict(t) for t in run.timing], "batches_drawn": run.batches_drawn,
                "pending_recalibration": run.pending_recalibration}
        if self.chief:
            os.makedirs(os.path.dirname(self.directory), exist_ok=True)
        with _written_in(os.path.dirname(self.directory), self.chief) as parent:
            _replace_folder(os.path.join(parent, "phase"), run, meta, optimizer_variables)
        self.meta, self.applied = meta, True

    def clear(self):
        """Drop the phase checkpoint (a stage checkpoint now holds everything it held)."""
        if self.chief:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.meta, self.applied = None, True


def _replace_folder(directory, run, meta, optimizer_variables):
    """Write a phase checkpoint into a new folder, then put it in the place of `directory` atomically."""
    tmp = tempfile.mkdtemp(prefix=".tmp-phase-", dir=os.path.dirname(directory))
    run.working.save_weights(os.path.join(tmp, "weights.h5"))
    np.savez(os.path.join(tmp, "optimizer.npz"), **{f"v{i}": v.numpy() for i, v in enumerate(optimizer_variables)})
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f, default=_jsonable)
    old = directory + ".old"
    shutil.rmtree(old, ignore_errors=True)
    if os.path.exists(directory):
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def writes_checkpoints():
    """Whether this process writes into `checkpoint_dir`: a run without a strategy or with one of a single
    worker does, and of the workers of a MultiWorkerMirroredStrategy the chief alone
    (`StrategyExtended.should_checkpoint`). Refuses a run outside any strategy's scope in a process that
    TF_CONFIG makes one of several workers: each would train alone and write the same checkpoints."""
    if not tf.distribute.has_strategy():
        tasks = _cluster_tasks()
        if tasks > 1:
            raise ConfigError(
                f"TF_CONFIG names {tasks} workers, but binarize runs outside a tf.distribute strategy's scope: "
                "each worker would train alone and write into the same checkpoint_dir. Create "
                "strategy = tf.distribute.MultiWorkerMirroredStrategy() at the start of the program and call "
                "binarize inside `with strategy.scope():`, or unset TF_CONFIG for a run of one process.")
        return True
    return bool(tf.distribute.get_strategy().extended.should_checkpoint)


def _cluster_tasks():
    """The chief and workers TF_CONFIG lists (0 without a readable TF_CONFIG)."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster") or {}
        return sum(len(cluster.get(kind) or ()) for kind in ("chief", "worker"))
    except (ValueError, AttributeError, TypeError):
        return 0


@contextlib.contextmanager
def _written_in(directory, chief):
    """Where this process writes a checkpoint meant for `directory`: the folder itself on the chief, else a
    temporary folder removed when the save ends (it goes through the same reads as the chief's save)."""
    if chief:
        yield directory
        return
    scratch = tempfile.mkdtemp(prefix="bitat_tf-worker-")
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def agree(directory, fingerprint, where, found):
    """Under a multi-worker strategy, check that every worker runs the same model and config and found the
    same checkpoint in `directory` (`where`: an integer that says which; `found`: the same in words) before
    any of them loads it: a worker that resumed elsewhere than the others would wait forever in their
    collectives. Every worker joins the check (an all-gather)."""
    if not multi_worker():
        return
    strategy = tf.distribute.get_strategy()
    mine = tf.constant([[int(fingerprint[:15], 16), int(where)]], tf.int64)
    values = strategy.experimental_distribute_values_from_function(lambda context: mine)
    every = strategy.gather(values, axis=0).numpy()
    if (every == every[0]).all():
        return
    if (every[:, 0] != every[0, 0]).any():
        raise ConfigError("the workers binarize different models or configs (their checkpoint fingerprints "
                          "differ); start every worker with the same model, data, config and arguments.")
    raise ConfigError(
        f"the workers found different checkpoints in checkpoint_dir {directory!r} (this worker: {found}): "
        "every worker resumes from the chief's checkpoint_dir, so it must be a folder all of them read, e.g. on "
        "a filesystem both machines mount. Pass such a folder, or an empty one on every worker to start over.")


def _digest(value):
    """A 60-bit integer that stands for a JSON-serializable value (0 for None)."""
    if value is None:
        return 0
    return int(hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:15], 16)

