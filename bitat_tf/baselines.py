"""The baselines BiTAT is measured against, as configurations of `bitat_tf.binarize`.

- "reactnet": ReActNet's two-step training. Step 1 binarizes the activations of every chosen layer and
  trains the whole network with real weights; step 2 binarizes the weights too and trains again. The loss
  is the KL divergence to the full-precision model's outputs (ReActNet's distribution loss).
- "ste": plain end-to-end straight-through training: every chosen layer binary at once, task loss.

Both start from the same model, layer policy and data as BiTAT, and by default use the same quantizers
(per-channel scaled sign weights, sign inputs with a data-initialised threshold and ApproxSign gradient),
so that what differs is the training schedule. `quantizers="larq_ste"` instead puts Larq's `ste_sign` on
inputs and kernels, with no scale and no threshold: the textbook recipe, kept to show why it fails.

    config = bitat_tf.EndToEndConfig(method="reactnet", epochs=8, learning_rate=1e-3)
    result = bitat_tf.binarize(model, train_ds, validation_data=val_ds, config=config)
"""

import time

from bitat_tf import capture, graph, report as report_lib
from bitat_tf._compat import larq, tf
from bitat_tf.checkpoint import PhaseCheckpointer, fingerprint
from bitat_tf.config_checks import DISTILL_TARGETS, check, check_shared, config_dict, is_int, is_real
from bitat_tf.engine import BinarizeResult, Engine, clock, timing_summary
from bitat_tf.engine.budgets import end_to_end_phases
from bitat_tf.errors import ConfigError

METHODS = ("reactnet", "ste")
QUANTIZERS = ("bitat", "larq_ste")
DEFAULT_LEARNING_RATES = {"reactnet": 4e-3, "ste": 8e-3}  # best on validation, results/trials_quick


class EndToEndConfig:
    """Configuration of an end-to-end baseline run by `bitat_tf.binarize`; keyword-only, validated.

    # Arguments
        method: "reactnet" (two steps: binary activations, then binary weights too; distillation) or
            "ste" (all layers binary at once).
        epochs / steps: the whole training budget, in epochs of the dataset or in optimizer steps (steps,
            when given, replace epochs). "reactnet" gives each of its two steps half.
        learning_rate: Adam step size, cosine decay to zero within each step; default 4e-3 for "reactnet"
            and 8e-3 for "ste", each method's best on validation in our learning-rate trials (docs/results.md).
        distill_weight: weight of the KL divergence to the full-precision model in
            `(1 - w) * task + w * KL`; default 1.0 for "reactnet" (its recipe), 0.0 for "ste".
        distill_target: what that term teaches, "teacher" or "corrected", as in `BinarizeConfig`.
        quantizers: "bitat" (the quantizers BiTAT uses) or "larq_ste" (Larq's `ste_sign` everywhere, "ste"
            only).
        threshold_init: input threshold start for "bitat" quantizers: "mean", "median" or "zero".
        binarize_first, binarize_last, binarize_depthwise, binarize_dense, keep_full_precision,
        force_binarize: the layer policy, as in `BinarizeConfig`.
        capture_batches / capture_memory_mb: data read to initialise the thresholds; the memory bound also
            sets how many batches one forward pass of capture or BatchNorm recalibration reads at once.
        bn_recalibration_batches: batches over which BatchNorm statistics are re-estimated at the end: the
            last training steps average them (forward passes make up any the phase was too short for).
        seed, deterministic, loss: as in `BinarizeConfig` (`deterministic=True`: meant to give the same
            binary model in any process with the same seed and data, with the limits docs/engine.md states;
            turns TensorFlow's op determinism on, process-wide).
    """

    cross_layer = False  # for the layer plan: no blocks
    blocks = "auto"

    def __init__(self, *, method="reactnet", epochs=1.0, steps=None, learning_rate=None, distill_weight=None,
                 distill_target="teacher", quantizers="bitat", threshold_init="mean", binarize_first=False,
                 binarize_last=False, binarize_depthwise=False, binarize_dense=True, keep_full_precision=(),
                 force_binarize=(), capture_batches=4, capture_memory_mb=512, bn_recalibration_batches=16, seed=0,
                 deterministic=False, loss=None):
        name = "EndToEndConfig"
        check(method in METHODS, "method", method, f"one of {METHODS}", name)
        check(is_real(epochs) and epochs >= 0, "epochs", epochs, "a finite number of epochs >= 0", name)
        check(steps is None or (is_int(steps) and steps >= 0), "steps", steps, "None or an integer >= 0", name)
        if (steps if steps is not None else epochs) == 0:
            raise ConfigError(f"{name}: the training budget is zero; set epochs > 0 or steps > 0.")
        if method == "reactnet" and steps == 1:
            raise ConfigError(f"{name}: method='reactnet' trains in two phases of at least one optimizer step each, "
                              "and steps=1 gives one of them none; set steps >= 2.")
        learning_rate = DEFAULT_LEARNING_RATES.get(method) if learning_rate is None else learning_rate
        check(is_real(learning_rate) and 0 < learning_rate < 1, "learning_rate", learning_rate,
               "a number in (0, 1)", name)
        distill_weight = (1.0 if method == "reactnet" else 0.0) if distill_weight is None else distill_weight
        check(is_real(distill_weight) and 0 <= distill_weight <= 1, "distill_weight", distill_weight,
               "a number in [0, 1]", name)
        check(distill_target in DISTILL_TARGETS, "distill_target", distill_target, f"one of {DISTILL_TARGETS}", name)
        check(quantizers in QUANTIZERS, "quantizers", quantizers, f"one of {QUANTIZERS}", name)
        if quantizers == "larq_ste" and method != "ste":
            raise ConfigError(f"{name}: quantizers='larq_ste' has no separate activation and weight switches, "
                              "so it runs with method='ste' only.")
        for key, value in (("capture_batches", capture_batches), ("capture_memory_mb", capture_memory_mb)):
            check(is_int(value) and value >= 1, key, value, "an integer >= 1", name)
        keep, force = check_shared(name, threshold_init=threshold_init,
                                   bn_recalibration_batches=bn_recalibration_batches, seed=seed,
                                   deterministic=deterministic, keep_full_precision=keep_full_precision,
                                   force_binarize=force_binarize)
        self.method, self.epochs, self.steps = method, float(epochs), steps
        self.learning_rate, self.distill_weight = float(learning_rate), float(distill_weight)
        self.distill_target = distill_target
        self.quantizers, self.threshold_init = quantizers, threshold_init
        self.binarize_first, self.binarize_last = bool(binarize_first), bool(binarize_last)
        self.binarize_depthwise, self.binarize_dense = bool(binarize_depthwise), bool(binarize_dense)
        self.keep_full_precision, self.force_binarize = keep, force
        self.capture_batches, self.capture_memory_mb = int(capture_batches), int(capture_memory_mb)
        self.bn_recalibration_batches, self.seed = int(bn_recalibration_batches), int(seed)
        self.deterministic, self.loss = deterministic, loss

    def get_config(self):
        """A JSON-serializable dict; `EndToEndConfig(**config)` rebuilds an equal config."""
        return config_dict(self)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return "EndToEndConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


def _larq_ste(layer):
    return larq.quantizers.SteSign(), larq.quantizers.SteSign()


class EndToEndRun(Engine):
    """One baseline run on the same engine as BiTAT's driver."""

    def __init__(self, model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose):
        self.phase_steps = end_to_end_phases(config, steps_per_epoch)  # refuses epochs of endless data
        super().__init__(model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose,
                         quantizers=_larq_ste if config.quantizers == "larq_ste" else None)
        self.rows = {p.name: report_lib.LayerReport(p.name, p.type, p.binarize, p.reason) for p in plan.layers}

    def _layers(self):
        return [self.working.get_layer(name) for name in self.plan.binarized]

    def initialise_quantizers(self):
        """Thresholds from each layer's real inputs in the full-precision model (one pass over the capture
        batches for all layers), alpha from its kernel."""
        layers = self._layers()
        for layer, captured in zip(layers, self.capture(layers)):
            capture.init_threshold(layer, captured, self.config.threshold_init)
            graph.weight_quantizer(layer).init_from(graph.kernel_of(layer))

    def train_phase(self, label, steps, *, last=False):
        """Train the whole network; the last phase ends with its BatchNorm statistics re-estimated."""
        return self.fit(self.config.learning_rate, steps, label, layers=self.working.layers,
                        recalibrate_after=-1 if last else None, checkpointed=True)

    def execute(self, checkpoint_dir=None):
        """Train as the method says; with a `checkpoint_dir`, save at the end of every epoch of each phase and
        resume from what it holds."""
        config, start = self.config, time.time()
        if checkpoint_dir is not None:
            self.phase_checkpoints = PhaseCheckpointer(checkpoint_dir, fingerprint(self.original, config, self.plan))
        tf.keras.utils.set_random_seed(config.seed)
        total = self.progress.total = sum(self.phase_steps)
        # Larq's ste_sign makes the working model binary from the start; BiTAT's quantizers start switched
        # off, so the working model is the user's and its (run-long) test step measures it.
        fp_accuracy = self.evaluate_model(self.original) if config.quantizers == "larq_ste" else None
        with self.session(steps_train_every_norm=True):
            fp_accuracy = self.evaluate() if fp_accuracy is None else fp_accuracy
            self.say(f"bitat_tf baseline {config.method!r} ({config.quantizers} quantizers): "
                     f"{len(self.plan.binarized)} of {len(self.plan.layers)} weight layers, {total} steps; "
                     f"full-precision accuracy ({self.split}) {fp_accuracy:.4f}")
            if config.quantizers == "bitat":
                self.initialise_quantizers()
            if config.method == "reactnet":
                for layer in self._layers():
                    graph.set_binary(layer, True, weights=False)
                self.history["activations"] = self.train_phase("step 1/2 binary activations", self.phase_steps[0])
                self.say(f"step 1/2 done: accuracy {self.evaluate():.4f}; elapsed {clock(time.time() - start)}")
                for layer in self._layers():
                    graph.set_binary(layer, True)
                self.history["weights"] = self.train_phase("step 2/2 binary weights", self.phase_steps[1], last=True)
            else:
                if config.quantizers == "bitat":
                    for layer in self._layers():
                        graph.set_binary(layer, True)
                self.history["end_to_end"] = self.train_phase("all layers binary", total, last=True)
            binary_accuracy = self.evaluate()
        seconds = time.time() - start
        report = report_lib.Report(
            layers=list(self.rows.values()), config=config.get_config(), fp_accuracy=fp_accuracy,
            binary_accuracy=binary_accuracy, accuracy_split=self.split, seconds=seconds,
            larq_summary=report_lib.larq_summary(self.working), timing=timing_summary(self.timing, seconds),
            task=self.task.describe())
        self.say(f"bitat_tf baseline {config.method!r}: accuracy full precision {fp_accuracy:.4f} -> binary "
                 f"{report.binary_accuracy:.4f} ({self.split}); {clock(report.seconds)}")
        return BinarizeResult(self.working, report, self.history)


__all__ = ["EndToEndConfig", "METHODS", "QUANTIZERS"]
