"""`BinarizeConfig`: every knob of a BiTAT run, validated when it is made."""

import math
from collections.abc import Mapping, Sequence

from bitat_tf.errors import ConfigError

# The paper's ablation (Figure 7, left), each a setting of the same code: (transform on, cross-layer
# blocks, how input dimensions are reduced).
VARIANTS = {
    "bitat": (True, True, "kmeans"),
    "sequential": (False, False, "none"),
    "intra": (True, False, "none"),
    "cross": (True, True, "none"),
    "filterwise": (True, True, "filterwise"),
    "svd": (True, True, "svd"),
}
THRESHOLD_INITS = ("mean", "median", "zero")
FINAL_PHASES = ("finetune", "end_to_end")
STAGES = ("layer", "block")
PASS_NORMALIZATIONS = ("recalibrated", "batch")
# Algorithm 1 as published: the pass alone, task loss only, the budgets and step sizes we started from.
PAPER = dict(epochs_per_layer=1.0, finetune_epochs=0.5, final_finetune_epochs=0.0, final_pass_multiple=1.0,
             final_phase="finetune", final_learning_rate=None, distill_weight=0.0, learning_rate=1e-3,
             finetune_learning_rate=5e-4, evaluate_every="block", pass_normalization="recalibrated")
EVALUATE_EVERY = ("layer", "block", "end")


def _check(ok, name, value, must, owner="BinarizeConfig"):
    if not ok:
        raise ConfigError(f"{owner}: {name} must be {must}, got {value!r}.")


class BinarizeConfig:
    """Configuration of `bitat_tf.binarize`; keyword-only, validated in `__init__`.

    The defaults are the recipe our measurements found best among those built on BiTAT's progressive
    pass (README, "Results"): the pass with distillation in every stage on an eighth of the budget, then
    seven times as many steps of end-to-end training with distillation, the pass serving as a warm start
    (beyond the paper; with the pass on half the budget the standard benchmark lost 3 points).
    `BinarizeConfig.paper(**overrides)` is Algorithm 1 as published: the pass alone, task loss only.

    # Arguments
        variant: "bitat" (full method: PCA transforms, cross-layer blocks, k-means aggregation),
            "sequential" (progressive training without transform), "intra" (per-layer transforms),
            "cross" (cross-layer, no aggregation), "filterwise" (one group per input channel's filter)
            or "svd" (top-k principal directions instead of groups).
        max_groups: k, the largest number of input-dimension groups per layer (Algorithm 1).
        quant_weight: lambda, weight of the transformed quantisation error. The term is
            `||diag(s) V^T P E||_F^2 / d_out`: at initialisation, the mean over output channels of the squared
            output error per input position that binarizing the kernel causes.
        l1_weight: gamma, weight of `mean(|alpha * sign(W)|)` (= mean of alpha) of the current layer.
        reg_weight: weight of `||V V^T - I||_F^2 + (sigma - sum(log s))^2`.
        epochs_per_layer / finetune_epochs: budget of each layer's quantisation step and of the fine-tune
            of the layers above it, in epochs of `dataset` (fractions allowed).
        steps_per_layer / finetune_steps: the same budgets in optimizer steps; when given they replace the
            epoch budgets.
        final_finetune_epochs / final_finetune_steps: the budget of a last phase after the progressive pass
            (0 = none; steps, when given, replace epochs). `final_finetune_epochs="pass"` (the default) gives it
            `final_pass_multiple` times the steps the pass's quantize and fine-tune phases took together.
        final_pass_multiple: the last phase's length in passes when final_finetune_epochs="pass" (default 7:
            the pass is an eighth of the run; 1 in `paper()`).
        final_phase: what that phase trains. "finetune": every parameter that is not a frozen binary kernel
            (BatchNorms, PReLUs, thresholds beta and scales alpha of the binary layers, the full-precision
            layers); the signs of the binary kernels stay bit-identical. "end_to_end" (beyond the paper):
            the binary layers' latent weights train too, so the progressive pass is a warm start for
            end-to-end training.
        final_learning_rate: Adam step size of the last phase (default: finetune_learning_rate).
        activation_warmup_steps: 0 (the paper) binarizes each layer's input with its weights; n > 0 first
            binarizes the inputs of every chosen layer (thresholds from the data), trains the whole network
            for n steps with real weights (ReActNet's first step as a warm-up), then binarizes the weights
            layer by layer; the thresholds then keep their trained values.
        warmup_learning_rate: Adam step size of that warm-up (default: learning_rate). It trains the whole
            network, like the last phase, so a run shaped like ReActNet's two steps gives it the last phase's.
        distill_weight: w in `(1 - w) * task + w * KL(teacher || student)` in every stage (quantize,
            fine-tune above, last phase), the teacher being a frozen copy of the full-precision model
            (ReActNet's distribution loss; beyond the paper). 0 = task loss only.
        pass_distillation: whether the pass's stages (quantize, fine-tune above) distil too when
            distill_weight > 0; False trains them on the task loss, without the teacher's forward pass (the
            activation warm-up and the last phase distil either way).
        stage: "layer" (the paper: one layer quantized, frozen, and the layers above fine-tuned at a time)
            or "block" (every layer of a block quantized together for the block's summed budget, then all
            frozen and the layers above fine-tuned: fewer stages, more steps each). "block" needs a variant
            without the transform penalty ("sequential", or quant_weight=0), which is defined per layer.
        evaluate_every: when accuracy is measured during the pass: after every "layer" (stage), at the end
            of every "block" (`paper()`: the curve at block resolution for a third of the cost on
            ReActNet-A), or only at the "end" (the default: once after the pass when a last phase follows,
            and after the run). Each measurement is a pass over the validation data (~0.4 s on the
            standard benchmark's 1,000 images, 13 times a run at block resolution).
        learning_rate / finetune_learning_rate: Adam step sizes (cosine decay within each step). The
            defaults (2.4e-2, 4e-3, and 8e-3 for the last phase) are x8 the learning-rate trials' base, the
            default recipe's best on validation (quick trials x1-x8; standard mode, three seeds: 64.9%
            validation against 63.1% at x4).
        blocks: the block partition: "auto" (from layer names and the graph), an int (fixed-size groups of
            consecutive binarizable layers), or a list of lists of layer names.
        binarize_first / binarize_last: binarize the first layer that sees the raw input / the classifier.
        binarize_depthwise: binarize DepthwiseConv2D layers (LCE has no binary depthwise kernel).
        binarize_dense: binarize Dense layers other than the classifier.
        keep_full_precision / force_binarize: layer names or layer class names that override the policy.
        threshold_init: how the input threshold beta starts: "mean", "median" or "zero" (plain sign).
        capture_rows: rows of the patch matrix X sampled per layer.
        capture_batches: at most this many dataset batches are read to capture X; fewer when fewer
            images give `capture_rows` rows (at least one batch).
        capture_memory_mb: bound on the feature maps held while capturing, and on those of one forward
            pass of capture or BatchNorm recalibration (which reads as many batches at once as it allows).
        kmeans_rows: rows of X used by k-means (clustering cost is linear in it).
        bn_recalibration_batches: batches over which BatchNorm statistics are re-estimated (0 = never):
            before an evaluation and at the end of the run for the whole network, and (pass_normalization=
            "recalibrated") above each freshly binarized layer. The last steps of a phase average them
            (batches the steps compute anyway); forward passes make up any the phase was too short for.
        pass_normalization: what the pass's BatchNorms normalise with where they do not train:
            "batch" (the default: every BatchNorm uses the statistics of its batch in every step and
            capture of the pass, frozen ones included, as in end-to-end training; moving statistics are
            estimated only where something reads them, before an evaluation and at the end) or
            "recalibrated" (`paper()`, as measured before: their moving statistics, re-estimated above each
            freshly binarized layer as `bn_recalibration_batches` says, after every stage). On the
            standard benchmark (1x, three seeds each, one sitting) "batch" spent 29-32 s outside the
            optimizer steps against 40-42 s, at 64.3% +- 0.3 test against 63.9% +- 1.1.
        seed: seeds sampling, k-means and TensorFlow.
        loss: a Keras loss; by default the model's compiled loss, or a crossentropy chosen from the
            labels and whether the model ends in a softmax.
    """

    def __init__(
        self,
        *,
        variant="bitat",
        max_groups=32,
        quant_weight=1.0,
        l1_weight=0.0,
        reg_weight=1.0,
        epochs_per_layer=0.125,
        finetune_epochs=0.0625,
        steps_per_layer=None,
        finetune_steps=None,
        final_finetune_epochs="pass",
        final_finetune_steps=None,
        final_pass_multiple=7.0,
        final_phase="end_to_end",
        final_learning_rate=8e-3,
        distill_weight=1.0,
        pass_distillation=True,
        activation_warmup_steps=0,
        warmup_learning_rate=None,
        stage="layer",
        pass_normalization="batch",
        evaluate_every="end",
        learning_rate=2.4e-2,
        finetune_learning_rate=4e-3,
        blocks="auto",
        binarize_first=False,
        binarize_last=False,
        binarize_depthwise=False,
        binarize_dense=True,
        keep_full_precision=(),
        force_binarize=(),
        threshold_init="mean",
        capture_rows=4096,
        capture_batches=8,
        capture_memory_mb=512,
        kmeans_rows=2048,
        bn_recalibration_batches=16,
        seed=0,
        loss=None,
    ):
        _check(variant in VARIANTS, "variant", variant, f"one of {sorted(VARIANTS)}")
        _check(_is_int(max_groups) and max_groups >= 1, "max_groups", max_groups, "an integer >= 1")
        for name, value in (("quant_weight", quant_weight), ("l1_weight", l1_weight),
                            ("reg_weight", reg_weight)):
            _check(_is_real(value) and value >= 0, name, value, "a finite number >= 0")
        for name, value in (("epochs_per_layer", epochs_per_layer), ("finetune_epochs", finetune_epochs)):
            _check(_is_real(value) and value >= 0, name, value, "a finite number of epochs >= 0")
        _check(_is_real(final_pass_multiple) and final_pass_multiple >= 0, "final_pass_multiple",
               final_pass_multiple, "a finite number >= 0 (the last phase's length in passes)")
        _check(final_finetune_epochs == "pass" or (_is_real(final_finetune_epochs) and final_finetune_epochs >= 0),
               "final_finetune_epochs", final_finetune_epochs, 'a finite number of epochs >= 0 or "pass"')
        for name, value in (("steps_per_layer", steps_per_layer), ("finetune_steps", finetune_steps),
                            ("final_finetune_steps", final_finetune_steps),
                            ("activation_warmup_steps", activation_warmup_steps)):
            _check(value is None or (_is_int(value) and value >= 0), name, value,
                   "None or an integer >= 0")
        if (steps_per_layer if steps_per_layer is not None else epochs_per_layer) == 0:
            raise ConfigError("BinarizeConfig: the quantisation budget is zero (epochs_per_layer=0 and no "
                              "steps_per_layer): each layer needs at least one step of training.")
        for name, value in (("learning_rate", learning_rate),
                            ("finetune_learning_rate", finetune_learning_rate)):
            _check(_is_real(value) and 0 < value < 1, name, value, "a number in (0, 1)")
        for name, value in (("final_learning_rate", final_learning_rate),
                            ("warmup_learning_rate", warmup_learning_rate)):
            _check(value is None or (_is_real(value) and 0 < value < 1), name, value, "None or a number in (0, 1)")
        _check(final_phase in FINAL_PHASES, "final_phase", final_phase, f"one of {FINAL_PHASES}")
        _check(_is_real(distill_weight) and 0 <= distill_weight <= 1, "distill_weight", distill_weight,
               "a number in [0, 1]")
        _check(isinstance(pass_distillation, bool), "pass_distillation", pass_distillation,
               "True or False")
        _check(stage in STAGES, "stage", stage, f"one of {STAGES}")
        _check(pass_normalization in PASS_NORMALIZATIONS, "pass_normalization", pass_normalization,
               f"one of {PASS_NORMALIZATIONS}")
        _check(evaluate_every in EVALUATE_EVERY, "evaluate_every", evaluate_every, f"one of {EVALUATE_EVERY}")
        if stage == "block" and VARIANTS[variant][0] and quant_weight > 0:
            raise ConfigError(f"BinarizeConfig: stage='block' trains several layers at once, and variant={variant!r} "
                              "has a transform penalty defined for one layer at a time; use "
                              "variant='sequential' (or quant_weight=0) with block stages, or stage='layer'.")
        _check(_valid_blocks(blocks), "blocks", blocks,
               '"auto", an integer >= 1, or a list of lists of layer names')
        for name, value in (("capture_rows", capture_rows), ("capture_batches", capture_batches),
                            ("capture_memory_mb", capture_memory_mb), ("kmeans_rows", kmeans_rows)):
            _check(_is_int(value) and value >= 1, name, value, "an integer >= 1")
        keep, force = check_shared("BinarizeConfig", threshold_init=threshold_init,
                                   bn_recalibration_batches=bn_recalibration_batches, seed=seed,
                                   keep_full_precision=keep_full_precision, force_binarize=force_binarize)
        self.variant = variant
        self.max_groups = int(max_groups)
        self.quant_weight = float(quant_weight)
        self.l1_weight = float(l1_weight)
        self.reg_weight = float(reg_weight)
        self.epochs_per_layer = float(epochs_per_layer)
        self.finetune_epochs = float(finetune_epochs)
        self.steps_per_layer = steps_per_layer
        self.finetune_steps = finetune_steps
        self.final_finetune_epochs = "pass" if final_finetune_epochs == "pass" else float(final_finetune_epochs)
        self.final_finetune_steps = final_finetune_steps
        self.final_pass_multiple = float(final_pass_multiple)
        self.final_phase = final_phase
        self.final_learning_rate = None if final_learning_rate is None else float(final_learning_rate)
        self.distill_weight = float(distill_weight)
        self.pass_distillation = bool(pass_distillation)
        self.activation_warmup_steps = int(activation_warmup_steps or 0)
        self.warmup_learning_rate = None if warmup_learning_rate is None else float(warmup_learning_rate)
        self.stage = stage
        self.pass_normalization = pass_normalization
        self.evaluate_every = evaluate_every
        self.learning_rate = float(learning_rate)
        self.finetune_learning_rate = float(finetune_learning_rate)
        self.blocks = blocks if isinstance(blocks, (str, int)) else [list(b) for b in blocks]
        self.binarize_first = bool(binarize_first)
        self.binarize_last = bool(binarize_last)
        self.binarize_depthwise = bool(binarize_depthwise)
        self.binarize_dense = bool(binarize_dense)
        self.keep_full_precision = keep
        self.force_binarize = force
        self.threshold_init = threshold_init
        self.capture_rows = int(capture_rows)
        self.capture_batches = int(capture_batches)
        self.capture_memory_mb = int(capture_memory_mb)
        self.kmeans_rows = int(kmeans_rows)
        self.bn_recalibration_batches = int(bn_recalibration_batches)
        self.seed = int(seed)
        self.loss = loss

    @classmethod
    def paper(cls, **overrides):
        """Algorithm 1 as published: the progressive pass alone on the task loss (no distillation, no last
        phase), 1 epoch a layer and half an epoch of fine-tuning above it; `overrides` as in `__init__`."""
        return cls(**{**PAPER, **overrides})

    # The variant decides these three; they are read-only views so a config cannot contradict itself.
    @property
    def use_transform(self):
        return VARIANTS[self.variant][0] and self.quant_weight > 0

    @property
    def cross_layer(self):
        return VARIANTS[self.variant][1]

    @property
    def reduction(self):
        return VARIANTS[self.variant][2]

    def get_config(self):
        """A JSON-serializable dict; `BinarizeConfig(**config)` rebuilds an equal config."""
        return config_dict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, BinarizeConfig) and self.get_config() == other.get_config()

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"BinarizeConfig({fields})"


def check_shared(owner, *, threshold_init, bn_recalibration_batches, seed, keep_full_precision, force_binarize):
    """Validate the settings every config class has (threshold start, BN recalibration, seed, the layer
    policy's overrides); return the overrides as tuples of names."""
    _check(threshold_init in THRESHOLD_INITS, "threshold_init", threshold_init, f"one of {THRESHOLD_INITS}", owner)
    _check(_is_int(bn_recalibration_batches) and bn_recalibration_batches >= 0, "bn_recalibration_batches",
           bn_recalibration_batches, "an integer >= 0", owner)
    _check(_is_int(seed) and seed >= 0, "seed", seed, "an integer >= 0", owner)
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


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _valid_blocks(blocks):
    if blocks == "auto":
        return True
    if _is_int(blocks):
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
