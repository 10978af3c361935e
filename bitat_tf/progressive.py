"""Algorithm 1: progressive, layer-by-layer binarization. The only module that sequences stages.

For each block, bottom to top, for each binarized layer of the block:
  capture the layer's inputs from the current model (earlier layers already binary and frozen),
  set its input threshold from them and switch its binarization on,
  build P (k-means), s and V (PCA of P X) and grow the block's transform with them,
  train the layer (latent weights, alpha, beta, its BatchNorm) and s, V on task loss + BiTAT terms,
  freeze it, then fine-tune the full-precision layers above it on the task loss.
"""

import dataclasses
import math
import time

import numpy as np

from bitat_tf import capture, graph, report as report_lib, transforms
from bitat_tf._compat import is_keras3_model, keras, tf
from bitat_tf.checkpoint import Checkpointer
from bitat_tf.config import BinarizeConfig
from bitat_tf.errors import ConfigError, DatasetError, TrainingError, UnsupportedModelError
from bitat_tf.inputs import check_checkpoint_dir, check_dataset, check_verbose, resolve_loss
from bitat_tf.training import BitatTrainer, make_optimizer


@dataclasses.dataclass
class BinarizeResult:
    """What `binarize` returns: the binary Larq model, the report, and the Keras histories per stage."""

    model: keras.Model
    report: report_lib.Report
    history: dict


def binarize(model, dataset, *, validation_data=None, config=None, checkpoint_dir=None, verbose=1):
    """Binarize a trained Keras model with BiTAT: 1-bit weights and 1-bit activations, layer by layer.

    # Arguments
        model: a built tf_keras Functional or Sequential model (a Keras 3 model of common layers is
            converted first). It is never modified.
        dataset: a `tf.data.Dataset` of `(x, y)` batches (class indices or one-hot), preferably shuffled.
        validation_data: a dataset of the same kind; accuracy after every layer is measured on it (on a
            few training batches when absent).
        config: a `BinarizeConfig` (defaults otherwise).
        checkpoint_dir: where the state after each finished layer is kept; a rerun with the same
            arguments resumes at the first unfinished layer.
        verbose: 0 silent, 1 a line per layer and per epoch, 2 Keras progress bars too.

    # Returns
        A `BinarizeResult` with `.model` (Larq quantized layers carrying `ScaledSign` weights and
        `ThresholdSign` inputs), `.report` and `.history`.

    # References
        - BiTAT: Neural Network Binarization with Task-dependent Aggregated Transformation
          (Park et al., ECCV 2022 Workshops), Algorithm 1.
    """
    from bitat_tf.baselines import EndToEndConfig, EndToEndRun

    config = BinarizeConfig() if config is None else config
    if not isinstance(config, (BinarizeConfig, EndToEndConfig)):
        raise ConfigError(f"config must be a bitat_tf.BinarizeConfig (or an EndToEndConfig for the baselines), "
                          f"got {type(config).__name__}.")
    verbose = check_verbose(verbose)
    if checkpoint_dir is not None:
        checkpoint_dir = check_checkpoint_dir(checkpoint_dir)
    model = _as_tf_keras(model)
    plan = graph.make_plan(model, config)
    steps_per_epoch, sparse = check_dataset(dataset, model)
    if validation_data is not None:
        check_dataset(validation_data, model, what="validation_data")
    if isinstance(config, EndToEndConfig):
        if checkpoint_dir is not None:
            raise ConfigError("checkpoint_dir applies to BiTAT's layer-by-layer runs; the end-to-end baselines "
                              "have no per-layer state to resume. Drop checkpoint_dir for them.")
        return EndToEndRun(model, plan, dataset, validation_data, config, steps_per_epoch, sparse,
                           verbose).execute()
    if steps_per_epoch is None and (config.steps_per_layer is None or config.finetune_steps is None or (
            config.final_finetune_steps is None and config.final_finetune_epochs > 0)):
        raise ConfigError("the dataset repeats forever, so epoch budgets are undefined: set "
                          "steps_per_layer, finetune_steps (and final_finetune_steps for a last phase) in "
                          "BinarizeConfig.")
    run = _Run(model, plan, dataset, validation_data, config, steps_per_epoch, sparse, verbose)
    return run.execute(Checkpointer(checkpoint_dir, model, config, plan) if checkpoint_dir else None)


def _as_tf_keras(model):
    if not is_keras3_model(model):
        return model
    try:
        from bitat_tf.keras3 import to_tf_keras
    except ImportError as err:  # pragma: no cover - the module ships with the package
        raise UnsupportedModelError(f"{type(model).__name__} is a Keras 3 model; rebuild it with tf_keras.") from err
    return to_tf_keras(model)


class _Run:
    """The state of one binarization run."""

    def __init__(self, model, plan, dataset, validation_data, config, steps_per_epoch, sparse, verbose,
                 quantizers=None):
        self.plan, self.config, self.verbose = plan, config, verbose
        self.dataset = dataset
        self.steps_per_epoch = steps_per_epoch
        self.eval_data = validation_data if validation_data is not None else dataset.take(8)
        self.split = "validation" if validation_data is not None else "train (first 8 batches)"
        self.loss = resolve_loss(model, config, sparse)
        self.from_logits = getattr(self.loss, "get_config", lambda: {})().get("from_logits", True)
        self.teacher = frozen_copy(model) if config.distill_weight > 0 else None
        self.working = graph.to_larq(model, plan, quantizers=quantizers)
        self.blocks = {}  # block index -> transforms.BlockState
        self.rows = {p.name: report_lib.LayerReport(p.name, p.type, p.binarize, p.reason) for p in plan.layers}
        self.history = {}
        self.elapsed = 0.0

    # ---- budgets -------------------------------------------------------------------------------------
    def _steps(self, steps, epochs):
        return int(steps) if steps is not None else int(round(epochs * self.steps_per_epoch))

    def _fit(self, trainer, learning_rate, steps, label):
        """Train for `steps` optimizer steps, as whole or partial epochs so progress shows per epoch."""
        if steps <= 0:
            return {}
        epochs = max(1, math.ceil(steps / self.steps_per_epoch)) if self.steps_per_epoch else 1
        per_epoch = math.ceil(steps / epochs)
        trainer.compile(optimizer=make_optimizer(learning_rate, per_epoch * epochs), loss=self.loss,
                        metrics=["accuracy"])
        callbacks = [_Progress(label, epochs, self.verbose), keras.callbacks.TerminateOnNaN()]
        hist = trainer.fit(self.dataset.repeat(), steps_per_epoch=per_epoch, epochs=epochs,
                           verbose=1 if self.verbose >= 2 else 0, callbacks=callbacks)
        if any(hist.history.get("nonfinite_inputs", [])):
            raise DatasetError(f"the dataset fed NaN or infinite inputs during {label}; clean or filter it "
                               "(e.g. dataset.filter on tf.math.is_finite). The checkpoint keeps the last "
                               "finished layer.")
        losses = hist.history.get("total_loss", hist.history.get("loss", []))
        if not losses or not all(np.isfinite(losses)) or len(losses) < epochs:
            raise TrainingError(f"training diverged during {label} (loss {losses}); lower the learning rate "
                                "or the BiTAT term weights. The checkpoint keeps the last finished layer.")
        return hist.history

    def trainer(self, **kwargs):
        """A `BitatTrainer` of the working model with the run's distillation settings."""
        return BitatTrainer(self.working, teacher=self.teacher, distill_weight=self.config.distill_weight,
                            from_logits=self.from_logits, **kwargs)

    def recalibrate_batchnorm(self, index):
        recalibrate_batchnorm(self.working, self.dataset, self.config.bn_recalibration_batches, after=index)

    def evaluate(self, model=None):
        trainer = BitatTrainer(self.working if model is None else model)
        trainer.compile(loss=self.loss, metrics=["accuracy"])
        return float(trainer.evaluate(self.eval_data, verbose=0, return_dict=True)["accuracy"])

    # ---- trainability --------------------------------------------------------------------------------
    def _train_only(self, layers):
        for layer in self.working.layers:
            layer.trainable = layer in layers

    def _layers_above(self, index):
        done = {n for n, r in self.rows.items() if r.seconds is not None}
        return [l for i, l in enumerate(self.working.layers) if i > index and l.name not in done]

    # ---- one layer -----------------------------------------------------------------------------------
    def quantize_layer(self, name, block_index):
        """Capture, initialise, switch on and train one layer (Algorithm 1, lines 7-12)."""
        config, layer = self.config, self.working.get_layer(name)
        captured = capture.capture_inputs(self.working, layer, self.dataset, max_batches=config.capture_batches,
                                          memory_mb=config.capture_memory_mb, seed=config.seed)
        if not config.activation_warmup_steps:  # after a warm-up the threshold keeps its trained value
            capture.init_threshold(layer, captured, config.threshold_init)
        graph.weight_quantizer(layer).init_from(graph.kernel_of(layer))
        graph.set_binary(layer, True)
        w = capture.kernel_matrix(layer, graph.kernel_of(layer))
        row = self.rows[name]
        row.block, row.d_in, row.d_out = block_index, int(w.shape[0]), int(w.shape[1])
        penalty = None
        if config.use_transform:
            x = capture.patch_matrix(layer, capture.binarized_inputs(layer, captured.raw),
                                     max_rows=config.capture_rows, seed=config.seed)
            channels = captured.raw.shape[-1]
            p = transforms.reduction_matrix(x, config.max_groups, method=config.reduction, seed=config.seed,
                                            kmeans_rows=config.kmeans_rows, channels=channels)
            s, u = transforms.pca(x @ p.T)
            state = self.blocks.setdefault(block_index, transforms.BlockState())
            state.expand(name, p, s, u, row.d_out)
            row.groups, row.transform_params = int(p.shape[0]), state.size
            row.unaggregated_params = state.unaggregated_size()
            penalty = transforms.StagePenalty(state, name=f"bitat_penalty_{name}")
        bn = graph.following_batchnorm(layer)
        self._train_only([layer] + ([bn] if bn is not None else []))
        trainer = self.trainer(penalty=penalty, layer=layer, weights={
            "quant": config.quant_weight, "l1": config.l1_weight, "reg": config.reg_weight})
        steps = self._steps(config.steps_per_layer, config.epochs_per_layer)
        hist = self._fit(trainer, config.learning_rate, steps, f"{name} quantize")
        if penalty is not None:
            penalty.write_back(state)
            alpha = graph.weight_quantizer(layer).alpha
            w = capture.kernel_matrix(layer, graph.kernel_of(layer))
            state.freeze(name, tf.matmul(penalty.p, transforms.quantization_error(w, alpha)).numpy())
        row.final_terms = {k: float(v[-1]) for k, v in hist.items()}
        return hist

    def finetune_above(self, name):
        index = next(i for i, l in enumerate(self.working.layers) if l.name == name)
        above = self._layers_above(index)
        steps = self._steps(self.config.finetune_steps, self.config.finetune_epochs)
        if not above or steps == 0:
            return {}
        self._train_only(above)
        return self._fit(self.trainer(), self.config.finetune_learning_rate, steps, f"{name} fine-tune above")

    # ---- the whole run -------------------------------------------------------------------------------
    def execute(self, checkpointer):
        start, order = time.time(), [(b, n) for b, block in enumerate(self.plan.blocks) for n in block]
        fp_accuracy = self.evaluate()
        self._say(f"bitat_tf: {len(order)} of {len(self.plan.layers)} weight layers to binarize in "
                  f"{len(self.plan.blocks)} blocks; full-precision accuracy ({self.split}) {fp_accuracy:.4f}")
        done = checkpointer.restore(self) if checkpointer else 0
        if self.config.activation_warmup_steps:
            self.activation_warmup(order, resumed=done > 0)
        for i, (block_index, name) in enumerate(order[done:], start=done):
            t0 = time.time()
            tf.keras.utils.set_random_seed(self.config.seed + i)  # each stage reproducible on resume
            self._say(f"[{i + 1}/{len(order)}] {name} (block {block_index + 1}/{len(self.plan.blocks)})")
            self.history[name] = {"quantize": self.quantize_layer(name, block_index)}
            self.working.get_layer(name).trainable = False
            self.history[name]["finetune"] = self.finetune_above(name)
            self.recalibrate_batchnorm(self.plan[name].index)
            row = self.rows[name]
            row.val_accuracy, row.seconds = self.evaluate(), time.time() - t0
            self.elapsed += row.seconds
            left = self.elapsed / (i + 1 - done) * (len(order) - i - 1)
            self._say(f"[{i + 1}/{len(order)}] {name} done in {row.seconds:.0f}s: accuracy {row.val_accuracy:.4f}"
                      f"; elapsed {_clock(time.time() - start)}, left ~{_clock(left)}")
            if checkpointer:
                checkpointer.save(self, i + 1)
        self.final_phase()
        for layer in self.working.layers:
            layer.trainable = True
        report = report_lib.Report(
            layers=list(self.rows.values()), config=self.config.get_config(), fp_accuracy=fp_accuracy,
            binary_accuracy=self.evaluate(), accuracy_split=self.split, seconds=time.time() - start,
            larq_summary=report_lib.larq_summary(self.working))
        self._say(f"bitat_tf: accuracy full precision {fp_accuracy:.4f} -> binary {report.binary_accuracy:.4f}"
                  f" ({self.split}); {_clock(report.seconds)}")
        return BinarizeResult(self.working, report, self.history)

    def activation_warmup(self, order, *, resumed):
        """Binarize every chosen layer's input (weights real) and train the whole network briefly.

        A resumed run has the trained thresholds in its checkpoint: it only switches the inputs on again.
        """
        done = {n for n, r in self.rows.items() if r.seconds is not None}
        for _, name in order:
            layer = self.working.get_layer(name)
            if name in done:
                continue
            if not resumed:
                captured = capture.capture_inputs(self.working, layer, self.dataset,
                                                  max_batches=self.config.capture_batches,
                                                  memory_mb=self.config.capture_memory_mb, seed=self.config.seed)
                capture.init_threshold(layer, captured, self.config.threshold_init)
            graph.set_binary(layer, True, weights=False)
        if resumed:
            return
        tf.keras.utils.set_random_seed(self.config.seed)
        self._train_only(self.working.layers)
        self.history["activation_warmup"] = self._fit(self.trainer(), self.config.learning_rate,
                                                      self.config.activation_warmup_steps, "activation warm-up")
        self.recalibrate_batchnorm(-1)
        self._say(f"bitat_tf: activations binary, weights real: accuracy {self.evaluate():.4f}")

    def final_phase(self):
        """After the pass: fine-tune all but the frozen binary kernels, or (end_to_end) everything."""
        config = self.config
        steps = self._steps(config.final_finetune_steps, config.final_finetune_epochs)
        if steps <= 0:
            return
        end_to_end = config.final_phase == "end_to_end"
        self._train_only(self.working.layers)
        frozen = () if end_to_end else [graph.kernel_of(self.working.get_layer(n)) for n in self.plan.binarized]
        label = "final end-to-end" if end_to_end else "final fine-tune"
        learning_rate = config.final_learning_rate or config.finetune_learning_rate
        self.history[label.replace(" ", "_").replace("-", "_")] = self._fit(
            self.trainer(frozen=frozen), learning_rate, steps, label)
        self.recalibrate_batchnorm(-1)

    def _say(self, text):
        if self.verbose:
            print(text, flush=True)


def frozen_copy(model):
    """A copy of `model` that never trains: the teacher of the distillation term."""
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    teacher.trainable = False
    return teacher


def recalibrate_batchnorm(model, dataset, batches, *, after=-1):
    """Re-estimate the moving statistics of the BatchNorms of `model` above layer index `after`.

    Switching a layer to binary inputs and weights changes the scale of everything above it; a few
    hundred steps at momentum 0.99 leave the moving averages far from the new statistics, and the
    model then fails at inference although it trains well. Cumulative averages over a few batches
    (momentum i / (i + 1) at batch i) fix that at the cost of a few forward passes.
    """
    norms = [l for i, l in enumerate(model.layers) if i > after and isinstance(l, keras.layers.BatchNormalization)]
    if not norms or batches == 0:
        return
    saved = [(l.trainable, l.momentum) for l in norms]
    for layer in norms:
        layer.trainable = True
    for i, (x, *_) in enumerate(dataset.take(batches)):
        for layer in norms:
            layer.momentum = i / (i + 1)
        model(x, training=True)
    for layer, (trainable, momentum) in zip(norms, saved):
        layer.trainable, layer.momentum = trainable, momentum


class _Progress(keras.callbacks.Callback):
    """One line per epoch: which stage, its loss terms and accuracy, and the time it took."""

    def __init__(self, label, epochs, verbose):
        super().__init__()
        self.label, self.epochs, self.verbose = label, epochs, verbose

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if self.verbose:
            terms = " ".join(f"{k}={v:.4g}" for k, v in (logs or {}).items())
            print(f"    {self.label} epoch {epoch + 1}/{self.epochs}: {terms} ({time.time() - self.t0:.0f}s)",
                  flush=True)


def _clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
