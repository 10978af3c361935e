"""Checkpoints after each finished layer, written atomically, refused when they belong to another run."""

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from bitat_tf import graph, transforms
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
        os.makedirs(self.directory, exist_ok=True)

    def save(self, run, stages_done):
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=self.directory)
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
        final = os.path.join(self.directory, f"stage-{stages_done:03d}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        pointer_tmp = os.path.join(self.directory, f".{_POINTER}.tmp")
        with open(pointer_tmp, "w") as f:
            f.write(os.path.basename(final))
        os.replace(pointer_tmp, os.path.join(self.directory, _POINTER))
        for old in os.listdir(self.directory):
            if old.startswith("stage-") and old != os.path.basename(final):
                shutil.rmtree(os.path.join(self.directory, old), ignore_errors=True)

    def restore(self, run):
        """Load the newest checkpoint into `run`; return the number of finished stages (0 if none)."""
        pointer = os.path.join(self.directory, _POINTER)
        if not os.path.exists(pointer):
            return 0
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
        done = meta["stages_done"]
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
