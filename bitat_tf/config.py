"""`BinarizeConfig`: every knob of a BiTAT run, validated when it is made.

What each setting must be is in `config_checks.py`; the paper's variants and its recipe in `recipes.py`.
"""

from bitat_tf import config_checks
from bitat_tf.recipes import PAPER, VARIANTS


class BinarizeConfig:
    """Configuration of `bitat_tf.binarize`; keyword-only, validated in `__init__`.

    The defaults are the recipe our measurements found best among those built on BiTAT's progressive
    pass (docs/results.md): the pass with distillation in every stage on an eighth of the budget, then
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
        distill_target: what that term teaches: "teacher" (the teacher's output distribution on every
            example) or "corrected" (the teacher's where it predicts the label, the task loss where it does
            not, so a teacher's mistakes are not taught; beyond the paper).
        pass_distillation: whether the pass's stages (quantize, fine-tune above) distil too when
            distill_weight > 0; False trains them on the task loss, without the teacher's forward pass (the
            activation warm-up and the last phase distil either way).
        stage: "layer" (the paper: one layer quantized, frozen, and the layers above fine-tuned at a time)
            or "block" (every layer of a block quantized together for the block's summed budget, then all
            frozen and the layers above fine-tuned: fewer stages, more steps each). "block" needs a variant
            without the transform penalty ("sequential", or quant_weight=0), which is defined per layer.
        pass_trains: what a quantize step of the pass trains: "stage" (the paper: the stage's layers and their
            BatchNorms, everything below frozen) or "network" (every layer: the binarized layers below keep
            training their latent weights through the straight-through gradient while the binarization
            moves up a stage at a time; beyond the paper, a progressive STE).
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
        deterministic: make the run repeat bit for bit in another process with the same seed, data and
            machine (binary kernels, scales and the report's figures; timings aside): TensorFlow's op
            determinism, seeds set before the run copies the model, and the training data's epochs started
            in the order the run reads them (`bitat_tf.engine.determinism`). Op determinism is
            process-wide, and TensorFlow has no public switch to turn it off: it stays on after `binarize`
            returns, for everything the process runs after (as `tf.config.experimental.
            enable_op_determinism()` would). Data that draws random numbers without a seed
            (`dataset.shuffle(n)` with no `seed=` and no global seed set before it was built) cannot be
            repeated: `binarize` refuses it with a `DatasetError`. Checked on the cases of
            tests/test_deterministic.py; docs/engine.md names a run it did not repeat.
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
        distill_target="teacher",
        pass_distillation=True,
        activation_warmup_steps=0,
        warmup_learning_rate=None,
        stage="layer",
        pass_trains="stage",
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
        deterministic=False,
        loss=None,
    ):
        settings = dict(locals())  # the arguments by name, in the order of the signature
        del settings["self"]
        vars(self).update(config_checks.binarize_settings(settings))

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
        return config_checks.config_dict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, BinarizeConfig) and self.get_config() == other.get_config()

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"BinarizeConfig({fields})"


__all__ = ["BinarizeConfig"]
