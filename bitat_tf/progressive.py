"""Algorithm 1: progressive, layer-by-layer binarization. The only module that sequences stages.

For each block, bottom to top, for each binarized layer of the block:
  capture the layer's inputs from the current model (earlier layers already binary and frozen),
  set its input threshold from them and switch its binarization on,
  build P (k-means), s and V (PCA of P X) and grow the block's transform with them,
  train the layer (latent weights, alpha, beta, its BatchNorm) and s, V on task loss + BiTAT terms,
  freeze it, then fine-tune the full-precision layers above it on the task loss.
"""

import itertools
import time

from bitat_tf import capture, graph, nesting, outputs, report as report_lib, transforms
from bitat_tf._compat import is_keras3_model, keras, tf
from bitat_tf.baselines import EndToEndConfig, EndToEndRun
from bitat_tf.checkpoint import Checkpointer, PhaseCheckpointer, fingerprint
from bitat_tf.config import BinarizeConfig
from bitat_tf.engine import BinarizeResult, Engine, clock, seed_host, timing_summary
from bitat_tf.errors import ConfigError, UnsupportedModelError
from bitat_tf.inputs import check_checkpoint_dir, check_dataset, check_verbose, with_data_input_size


def binarize(model, dataset, *, validation_data=None, config=None, checkpoint_dir=None, verbose=1):
    """Binarize a trained Keras model with BiTAT: 1-bit weights and 1-bit activations, layer by layer.

    # Arguments
        model: a built tf_keras Functional or Sequential model (a Keras 3 model of common layers is
            converted first). It is never modified.
        dataset: a `tf.data.Dataset` of `(x, y)` batches, preferably shuffled; labels as the model's loss
            takes them (class indices, one-hot, or 0/1 for a sigmoid), every batch's checked.
        validation_data: a dataset of the same kind; accuracy after every layer is measured on it (on a
            few training batches when absent).
        config: a `BinarizeConfig` (defaults otherwise).
        checkpoint_dir: where the state after each finished layer, and after every epoch of the phases that
            train the whole network (the last phase, the activation warm-up, the baselines' phases), is
            kept; a rerun with the same arguments resumes at the first unfinished layer or epoch.
        verbose: 0 silent, 1 a line per layer and per epoch, 2 Keras progress bars too.

    # Returns
        A `BinarizeResult` with `.model` (Larq quantized layers carrying `ScaledSign` weights and
        `ThresholdSign` inputs; a model whose input size was open takes the dataset's), `.report` (with
        what was read from the model, `report.task`, and each phase's optimizer steps) and `.history`.

    # References
        - BiTAT: Neural Network Binarization with Task-dependent Aggregated Transformation
          (Park et al., ECCV 2022 Workshops), Algorithm 1.
    """
    config = BinarizeConfig() if config is None else config
    if not isinstance(config, (BinarizeConfig, EndToEndConfig)):
        raise ConfigError(f"config must be a bitat_tf.BinarizeConfig (or an EndToEndConfig for the baselines), "
                          f"got {type(config).__name__}.")
    verbose = check_verbose(verbose)
    if checkpoint_dir is not None:
        checkpoint_dir = check_checkpoint_dir(checkpoint_dir)
    compiled_loss = outputs.compiled_loss(model)  # conversion and flattening drop it
    model = _as_tf_keras(model)
    if isinstance(model, keras.Model) and nesting.has_nested_models(model):
        model = nesting.flatten(model)  # outputs checked equal; layers named by their nested path
    model = with_data_input_size(model, dataset)  # an input of open size takes the data's
    plan = graph.make_plan(model, config)
    loss = compiled_loss if config.loss is None else config.loss
    steps_per_epoch, task = check_dataset(dataset, model, loss=loss)
    if validation_data is not None:
        check_dataset(validation_data, model, what="validation_data", task=task)
    if isinstance(config, EndToEndConfig):
        run = EndToEndRun(model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose)
        if checkpoint_dir is not None:  # a checkpoint at the end of every epoch of each phase
            run.phase_checkpoints = PhaseCheckpointer(checkpoint_dir, fingerprint(model, config, plan))
        return run.execute()
    if steps_per_epoch is None and (config.steps_per_layer is None or config.finetune_steps is None or (
            config.final_finetune_steps is None and config.final_finetune_epochs not in ("pass", 0.0))):
        raise ConfigError("the dataset repeats forever, so epoch budgets are undefined: set "
                          "steps_per_layer, finetune_steps (and final_finetune_steps for a last phase) in "
                          "BinarizeConfig.")
    run = _Run(model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose)
    checkpointer = Checkpointer(checkpoint_dir, model, config, plan) if checkpoint_dir else None
    if checkpointer:  # inside the warm-up and the last phase too, at the end of every epoch
        run.phase_checkpoints = PhaseCheckpointer(checkpoint_dir, checkpointer.fingerprint)
    return run.execute(checkpointer)


def _as_tf_keras(model):
    if not is_keras3_model(model):
        return model
    try:
        from bitat_tf.keras3 import to_tf_keras
    except ImportError as err:  # pragma: no cover - the module ships with the package
        raise UnsupportedModelError(f"{type(model).__name__} is a Keras 3 model; rebuild it with tf_keras.") from err
    return to_tf_keras(model)


class _Run(Engine):
    """One BiTAT run: Algorithm 1 on top of the engine, with the per-block transforms and report rows."""

    def __init__(self, model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose):
        super().__init__(model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose)
        self.blocks = {}  # block index -> transforms.BlockState
        self.rows = {p.name: report_lib.LayerReport(p.name, p.type, p.binarize, p.reason) for p in plan.layers}
        self.elapsed = 0.0
        self.order = [(b, n) for b, block in enumerate(plan.blocks) for n in block]
        self.penalty = self._make_penalty() if config.use_transform else None

    def _make_penalty(self):
        layers = [self.working.get_layer(n) for _, n in self.order]
        k_max, r_max = transforms.run_penalty_sizes(layers, self.plan.blocks, max_groups=self.config.max_groups,
                                                    reduction=self.config.reduction)
        return transforms.RunPenalty(layers, k_max=k_max, r_max=r_max, name="bitat_penalty")

    def _layers_above(self, index):
        return self.working.layers[index + 1:]  # bottom to top: nothing above is frozen yet

    # ---- one stage ----------------------------------------------------------------------------------
    def stages(self):
        """(block index, [layer names]) per stage: one layer each, or a whole block (`stage="block"`)."""
        if self.config.stage == "layer":
            return [(b, [n]) for b, n in self.order]
        return [(b, list(block)) for b, block in enumerate(self.plan.blocks)]

    def quantize_stage(self, names, block_index):
        """Capture, initialise, switch on and train the stage's layers (Algorithm 1, lines 7-12)."""
        config, layers, extra, weights, state = self.config, [], (), None, None
        for name in names:  # in order: each layer's input is captured with the ones below it binary
            layer = self.working.get_layer(name)
            captured = self.capture(layer)
            if not config.activation_warmup_steps:  # after a warm-up the threshold keeps its trained value
                capture.init_threshold(layer, captured, config.threshold_init)
            graph.weight_quantizer(layer).init_from(graph.kernel_of(layer))
            graph.set_binary(layer, True)
            w = capture.kernel_matrix(layer, graph.kernel_of(layer))
            row = self.rows[name]
            row.block, row.d_in, row.d_out = block_index, int(w.shape[0]), int(w.shape[1])
            if self.penalty is not None:  # stage="layer" (the config refuses blocks with a penalty)
                x = capture.patch_matrix(layer, capture.binarized_inputs(layer, captured.raw),
                                         max_rows=config.capture_rows, seed=config.seed)
                p = transforms.reduction_matrix(x, config.max_groups, method=config.reduction, seed=config.seed,
                                                kmeans_rows=config.kmeans_rows, channels=captured.raw.shape[-1])
                s, u = transforms.pca(x @ p.T)
                state = self.blocks.setdefault(block_index, transforms.BlockState())
                state.expand(name, p, s, u, row.d_out)
                row.groups, row.transform_params = int(p.shape[0]), state.size
                row.unaggregated_params = state.unaggregated_size()
                self.penalty.load(state, [n for _, n in self.order].index(name))
                extra = (self.penalty.log_s, self.penalty.v)
                weights = {"quant": config.quant_weight, "l1": config.l1_weight, "reg": config.reg_weight}
            bn = graph.following_batchnorm(layer)
            layers += [layer] + ([bn] if bn is not None else [])
        label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        hist = self.fit(config.learning_rate, self._quantize_steps(names), f"{label} quantize", layers=layers,
                        extra=extra, weights=weights, distill=config.pass_distillation)
        if self.penalty is not None:
            self.penalty.write_back(state)
            state.freeze(names[0], self.penalty.current_error())
        for name in names:
            self.rows[name].final_terms = {k: float(v[-1]) for k, v in hist.items()}
        return hist

    def finetune_above(self, names):
        """Fine-tune every layer above the stage's last layer, its budget scaled by the stage's layers, and
        re-estimate the BatchNorm statistics above it (averaged over the phase's last steps; the rest in
        the forward passes that also capture the next stage's first inputs)."""
        index = self.plan[names[-1]].index
        label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        return self.fit(self.config.finetune_learning_rate, self._finetune_steps(names), f"{label} fine-tune above",
                        layers=self._layers_above(index), recalibrate_after=index, defer_recalibration=True,
                        distill=self.config.pass_distillation)

    def _quantize_steps(self, names):
        return len(names) * self.steps(self.config.steps_per_layer, self.config.epochs_per_layer)

    def _finetune_steps(self, names):
        """Zero for the top stage: nothing is above it."""
        if not self._layers_above(self.plan[names[-1]].index):
            return 0
        return len(names) * self.steps(self.config.finetune_steps, self.config.finetune_epochs)

    # ---- the whole run -------------------------------------------------------------------------------
    def execute(self, checkpointer):
        start, order = time.time(), self.order
        tf.keras.utils.set_random_seed(self.config.seed)  # once: reseeding TensorFlow clears its kernel cache
        with self.session(self.penalty, steps_train_every_norm=self.config.pass_normalization == "batch",
                          segmented=True):
            fp_accuracy = self.evaluate()
            self.say(f"bitat_tf: {len(order)} of {len(self.plan.layers)} weight layers to binarize in "
                     f"{len(self.plan.blocks)} blocks; full-precision accuracy ({self.split}) {fp_accuracy:.4f}")
            done = checkpointer.restore(self) if checkpointer else 0
            if self.config.activation_warmup_steps:
                self.activation_warmup(resumed=done > 0)
            stages = self.stages()
            starts = list(itertools.accumulate([0] + [len(names) for _, names in stages]))
            self.batch_statistics = self.config.pass_normalization == "batch"
            for i in range(starts.index(done), len(stages)):  # a checkpoint holds whole stages
                block_index, names = stages[i]
                t0, timed, n_done = time.time(), len(self.timing), starts[i]
                seed_host(self.config.seed + n_done)  # each stage's sampling reproducible on resume
                label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]} ({len(names)} layers)"
                self.say(f"[{n_done + len(names)}/{len(order)}] {label} (block {block_index + 1}/{len(self.plan.blocks)})")
                quantized = self.quantize_stage(names, block_index)
                finetuned = self.finetune_above(names)
                for name in names:
                    self.history[name] = {"quantize": quantized, "finetune": finetuned}
                accuracy = self.evaluate() if self._measures_after(stages, i) else None
                seconds = time.time() - t0
                for name in names:
                    self.rows[name].val_accuracy, self.rows[name].seconds = accuracy, seconds / len(names)
                self.elapsed += seconds
                left = self.elapsed / (n_done + len(names) - done) * (len(order) - n_done - len(names))
                stage = self.timing[timed:]
                overhead = seconds - sum(t.training_seconds for t in stage)
                steps = ", ".join(f"{t.steps} x {1000 * t.seconds_per_step:.0f} ms" for t in stage)
                measured = "" if accuracy is None else f": accuracy {accuracy:.4f}"
                self.say(f"[{n_done + len(names)}/{len(order)}] {label} done in {seconds:.0f}s ({steps}; overhead "
                         f"{overhead:.1f}s){measured}; elapsed {clock(time.time() - start)}, left ~{clock(left)}")
                if checkpointer:
                    checkpointer.save(self, n_done + len(names))
            self.batch_statistics = False
            self.final_phase()
            binary_accuracy = self.evaluate()
        seconds = time.time() - start
        report = report_lib.Report(
            layers=list(self.rows.values()), config=self.config.get_config(), fp_accuracy=fp_accuracy,
            binary_accuracy=binary_accuracy, accuracy_split=self.split, seconds=seconds,
            larq_summary=report_lib.larq_summary(self.working), timing=timing_summary(self.timing, seconds),
            task=self.task.describe())
        self.say(f"bitat_tf: accuracy full precision {fp_accuracy:.4f} -> binary {report.binary_accuracy:.4f}"
                 f" ({self.split}); {clock(report.seconds)}, overhead {report.timing['overhead_seconds']:.0f}s")
        return BinarizeResult(self.working, report, self.history)

    def pass_steps(self):
        """Optimizer steps of the progressive pass: every stage's quantize and fine-tune-above phases."""
        return sum(self._quantize_steps(names) + self._finetune_steps(names) for _, names in self.stages())

    def _measures_after(self, stages, i):
        """Whether accuracy is measured after stage i (`evaluate_every`). The end of the pass is measured
        whenever a last phase follows (the warm start's accuracy, one evaluation); without one, the run's
        final evaluation is that figure."""
        every = self.config.evaluate_every
        last = i + 1 == len(stages)
        if every == "layer" or (last and self._final_steps() > 0):
            return True
        return every == "block" and (last or stages[i + 1][0] != stages[i][0])

    def activation_warmup(self, *, resumed):
        """Binarize every chosen layer's input (weights real) and train the whole network briefly.

        A resumed run has the trained thresholds in its checkpoint: it only switches the inputs on again.
        """
        done = {n for n, r in self.rows.items() if r.seconds is not None}
        for _, name in self.order:
            layer = self.working.get_layer(name)
            if name in done:
                continue
            if not resumed:
                captured = self.capture(layer)
                capture.init_threshold(layer, captured, self.config.threshold_init)
            graph.set_binary(layer, True, weights=False)
        if resumed:
            return
        seed_host(self.config.seed)
        config = self.config
        self.history["activation_warmup"] = self.fit(config.warmup_learning_rate or config.learning_rate,
                                                     config.activation_warmup_steps, "activation warm-up",
                                                     layers=self.working.layers, recalibrate_after=-1,
                                                     checkpointed=True)
        self.say(f"bitat_tf: activations binary, weights real: accuracy {self.evaluate():.4f}")

    def _final_steps(self):
        config = self.config
        if config.final_finetune_steps is None and config.final_finetune_epochs == "pass":
            steps = round(config.final_pass_multiple * self.pass_steps())
            return max(steps, 1) if config.final_pass_multiple > 0 else 0  # a multiple of 0: no last phase
        return self.steps(config.final_finetune_steps, config.final_finetune_epochs)

    def final_phase(self):
        """After the pass: fine-tune all but the frozen binary kernels, or (end_to_end) everything."""
        config, steps = self.config, self._final_steps()
        if steps <= 0:
            return
        end_to_end = config.final_phase == "end_to_end"
        frozen = () if end_to_end else [graph.kernel_of(self.working.get_layer(n)) for n in self.plan.binarized]
        label = "final end-to-end" if end_to_end else "final fine-tune"
        learning_rate = config.final_learning_rate or config.finetune_learning_rate
        self.history[label.replace(" ", "_").replace("-", "_")] = self.fit(
            learning_rate, steps, label, layers=self.working.layers, exclude=frozen, recalibrate_after=-1,
            checkpointed=True)
