"""What the settings of the configuration classes must be.

`BinarizeConfig` and `EndToEndConfig` validate their keyword arguments in `__init__` with these checks;
a message names the class, the setting, what it must be and the value received.
"""

import math
from collections.abc import Mapping, Sequence

from bitat_tf.errors import ConfigError
from bitat_tf.recipes import VARIANTS

THRESHOLD_INITS = ("mean", "median", "zero")
FINAL_PHASES = ("finetune", "end_to_end")
STAGES = ("layer", "block")
PASS_TRAINS = ("stage", "network")
PASS_NORMALIZATIONS = ("recalibrated", "batch")
EVALUATE_EVERY = ("layer", "block", "end")
DISTILL_TARGETS = ("teacher", "corrected")  # the teacher's output everywhere, or where it is right


def check(ok, name, value, must, owner="BinarizeConfig"):
    """Raise a `ConfigError` saying that `name` must be `must` unless `ok`."""
    if not ok:
        raise ConfigError(f"{owner}: {name} must be {must}, got {value!r}.")


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def binarize_settings(settings):
    """Check `BinarizeConfig`'s arguments (a dict by name) and return them normalised, in the same order:
    numbers as floats or ints, switches as bools, blocks as lists, the layer policy's names as tuples."""
    _check_budgets(settings)
    _check_training(settings)
    s = settings
    _check_stage(s["stage"], s["variant"], s["quant_weight"], s["blocks"])
    for name in ("capture_rows", "capture_batches", "capture_memory_mb", "kmeans_rows"):
        check(is_int(s[name]) and s[name] >= 1, name, s[name], "an integer >= 1")
    keep, force = check_shared("BinarizeConfig", **{k: s[k] for k in _SHARED})
    normalised = {name: _NORMALISE.get(name, _same)(value) for name, value in settings.items()}
    normalised.update(keep_full_precision=keep, force_binarize=force)
    return normalised


def _check_budgets(s):
    """The method's variant and weights and the budgets of its phases."""
    check(s["variant"] in VARIANTS, "variant", s["variant"], f"one of {sorted(VARIANTS)}")
    check(is_int(s["max_groups"]) and s["max_groups"] >= 1, "max_groups", s["max_groups"], "an integer >= 1")
    for name in ("quant_weight", "l1_weight", "reg_weight"):
        check(is_real(s[name]) and s[name] >= 0, name, s[name], "a finite number >= 0")
    for name in ("epochs_per_layer", "finetune_epochs"):
        check(is_real(s[name]) and s[name] >= 0, name, s[name], "a finite number of epochs >= 0")
    multiple, final = s["final_pass_multiple"], s["final_finetune_epochs"]
    check(is_real(multiple) and multiple >= 0, "final_pass_multiple", multiple,
          "a finite number >= 0 (the last phase's length in passes)")
    check(final == "pass" or (is_real(final) and final >= 0), "final_finetune_epochs", final,
          'a finite number of epochs >= 0 or "pass"')
    for name in ("steps_per_layer", "finetune_steps", "final_finetune_steps", "activation_warmup_steps"):
        check(s[name] is None or (is_int(s[name]) and s[name] >= 0), name, s[name], "None or an integer >= 0")
    if (s["steps_per_layer"] if s["steps_per_layer"] is not None else s["epochs_per_layer"]) == 0:
        raise ConfigError("BinarizeConfig: the quantisation budget is zero (epochs_per_layer=0 and no "
                          "steps_per_layer): each layer needs at least one step of training.")


def _check_training(s):
    """Step sizes, the last phase, distillation, normalisation and evaluation."""
    for name in ("learning_rate", "finetune_learning_rate"):
        check(is_real(s[name]) and 0 < s[name] < 1, name, s[name], "a number in (0, 1)")
    for name in ("final_learning_rate", "warmup_learning_rate"):
        check(s[name] is None or (is_real(s[name]) and 0 < s[name] < 1), name, s[name], "None or a number in (0, 1)")
    check(s["final_phase"] in FINAL_PHASES, "final_phase", s["final_phase"], f"one of {FINAL_PHASES}")
    check(is_real(s["distill_weight"]) and 0 <= s["distill_weight"] <= 1, "distill_weight", s["distill_weight"],
          "a number in [0, 1]")
    check(s["distill_target"] in DISTILL_TARGETS, "distill_target", s["distill_target"], f"one of {DISTILL_TARGETS}")
    check(isinstance(s["pass_distillation"], bool), "pass_distillation", s["pass_distillation"], "True or False")
    check(s["stage"] in STAGES, "stage", s["stage"], f"one of {STAGES}")
    check(s["pass_trains"] in PASS_TRAINS, "pass_trains", s["pass_trains"], f"one of {PASS_TRAINS}")
    check(s["pass_normalization"] in PASS_NORMALIZATIONS, "pass_normalization", s["pass_normalization"],
          f"one of {PASS_NORMALIZATIONS}")
    check(s["evaluate_every"] in EVALUATE_EVERY, "evaluate_every", s["evaluate_every"], f"one of {EVALUATE_EVERY}")


def _check_stage(stage, variant, quant_weight, blocks):
    if stage == "block" and VARIANTS[variant][0] and quant_weight > 0:
        raise ConfigError(f"BinarizeConfig: stage='block' trains several layers at once, and variant={variant!r} "
                          "has a transform penalty defined for one layer at a time; use "
                          "variant='sequential' (or quant_weight=0) with block stages, or stage='layer'.")
    check(_valid_blocks(blocks), "blocks", blocks, '"auto", an integer >= 1, or a list of lists of layer names')


def check_shared(owner, *, threshold_init, bn_recalibration_batches, seed, deterministic, keep_full_precision,
                 force_binarize):
    """Validate the settings every config class has (threshold start, BN recalibration, seed, determinism,
    the layer policy's overrides); return the overrides as tuples of names."""
    check(threshold_init in THRESHOLD_INITS, "threshold_init", threshold_init, f"one of {THRESHOLD_INITS}", owner)
    check(is_int(bn_recalibration_batches) and bn_recalibration_batches >= 0, "bn_recalibration_batches",
          bn_recalibration_batches, "an integer >= 0", owner)
    check(is_int(seed) and seed >= 0, "seed", seed, "an integer >= 0", owner)
    check(isinstance(deterministic, bool), "deterministic", deterministic, "True or False", owner)
    keep, force = _names(keep_full_precision, "keep_full_precision"), _names(force_binarize, "force_binarize")
    both = sorted(set(keep) & set(force))
    if both:
        raise ConfigError(f"{owner}: {both} appear in both keep_full_precision and force_binarize; name each "
                          "layer or type in one of them only.")
    return keep, force


def config_dict(config):
    """The fields of a config object as a JSON-serializable dict (lists for names, a loss by its name)."""
    out = dict(vars(config))
    out["keep_full_precision"] = list(config.keep_full_precision)
    out["force_binarize"] = list(config.force_binarize)
    if out["loss"] is not None and not isinstance(out["loss"], str):
        out["loss"] = getattr(out["loss"], "name", type(out["loss"]).__name__)
    return out


_SHARED = ("threshold_init", "bn_recalibration_batches", "seed", "deterministic", "keep_full_precision",
           "force_binarize")


def _same(value):
    return value


def _optional_float(value):
    return None if value is None else float(value)


# How `BinarizeConfig` stores each checked argument (the others as given).
_NORMALISE = {
    **dict.fromkeys(("quant_weight", "l1_weight", "reg_weight", "epochs_per_layer", "finetune_epochs",
                     "final_pass_multiple", "distill_weight", "learning_rate", "finetune_learning_rate"), float),
    **dict.fromkeys(("max_groups", "capture_rows", "capture_batches", "capture_memory_mb", "kmeans_rows",
                     "bn_recalibration_batches", "seed"), int),
    **dict.fromkeys(("pass_distillation", "binarize_first", "binarize_last", "binarize_depthwise",
                     "binarize_dense"), bool),
    "final_finetune_epochs": lambda value: "pass" if value == "pass" else float(value),
    "final_learning_rate": _optional_float,
    "warmup_learning_rate": _optional_float,
    "activation_warmup_steps": lambda value: int(value or 0),
    "blocks": lambda blocks: blocks if isinstance(blocks, (str, int)) else [list(b) for b in blocks],
}


def _valid_blocks(blocks):
    if blocks == "auto":
        return True
    if is_int(blocks):
        return blocks >= 1
    if isinstance(blocks, str) or not isinstance(blocks, Sequence):
        return False
    return all(
        isinstance(b, Sequence) and not isinstance(b, str) and len(b) > 0
        and all(isinstance(n, str) for n in b)
        for b in blocks
    )


def _names(value, name):
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"BinarizeConfig: {name} must be a list of layer names or layer class names, "
                          f"got {value!r}.")
    return tuple(value)


__all__ = ["check", "check_shared", "config_dict", "binarize_settings", "is_int", "is_real"]
