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

from bitat_tf import capture, graph, report as report_lib, transforms
from bitat_tf._compat import tf
from bitat_tf.checkpoint import Checkpointer, PhaseCheckpointer
from bitat_tf.engine import BinarizeResult, Engine, clock, seed_host, timing_summary
from bitat_tf.engine.budgets import PassBudget


class ProgressiveRun(Engine):
    """One BiTAT run: Algorithm 1 on top of the engine, with the per-block transforms and report rows."""

    def __init__(self, model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose):
        PassBudget.check(config, steps_per_epoch)  # before the engine copies the model
        super().__init__(model, plan, dataset, validation_data, config, steps_per_epoch, task, verbose)
        self.blocks = {}  # block index -> transforms.BlockState
        self.rows = {p.name: report_lib.LayerReport(p.name, p.type, p.binarize, p.reason) for p in plan.layers}
        self.elapsed = 0.0
        self.order = [(b, n) for b, block in enumerate(plan.blocks) for n in block]
        # (block index, [layer names]) per stage: one layer each, or a whole block (`stage="block"`)
        self.stages = ([(b, [n]) for b, n in self.order] if config.stage == "layer"
                       else [(b, list(block)) for b, block in enumerate(plan.blocks)])
        self.budget = PassBudget(config, steps_per_epoch, self.stages, plan, top=len(self.working.layers) - 1)
        self.penalty = self._make_penalty() if config.use_transform else None

    def _make_penalty(self):
        layers = [self.working.get_layer(n) for _, n in self.order]
        k_max, r_max = transforms.run_penalty_sizes(layers, self.plan.blocks, max_groups=self.config.max_groups,
                                                    reduction=self.config.reduction)
        return transforms.RunPenalty(layers, k_max=k_max, r_max=r_max, name="bitat_penalty")

    def _layers_above(self, index):
        return self.working.layers[index + 1:]  # bottom to top: nothing above is frozen yet

    # ---- one stage ----------------------------------------------------------------------------------
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
        if config.pass_trains == "network":  # progressive STE: the layers below train on through their signs
            layers = self.working.layers
        label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]}"
        hist = self.fit(config.learning_rate, self.budget.quantize(names), f"{label} quantize", layers=layers,
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
        layers = self.working.layers if self.config.pass_trains == "network" else self._layers_above(index)
        return self.fit(self.config.finetune_learning_rate, self.budget.finetune(names), f"{label} fine-tune above",
                        layers=layers, recalibrate_after=index, defer_recalibration=True,
                        distill=self.config.pass_distillation)

    # ---- the whole run -------------------------------------------------------------------------------
    def execute(self, checkpoint_dir=None):
        """Run Algorithm 1 (and the recipe's warm-up and last phase); with a `checkpoint_dir`, save after every
        stage and every epoch of the whole-network phases, and resume from what it holds."""
        start = time.time()
        checkpointer = Checkpointer(checkpoint_dir, self.original, self.config, self.plan) if checkpoint_dir else None
        if checkpointer:  # inside the warm-up and the last phase too, at the end of every epoch
            self.phase_checkpoints = PhaseCheckpointer(checkpoint_dir, checkpointer.fingerprint)
        self.progress.total = self.budget.run()
        tf.keras.utils.set_random_seed(self.config.seed)  # once: reseeding TensorFlow clears its kernel cache
        with self.session(self.penalty, steps_train_every_norm=self.config.pass_normalization == "batch",
                          segmented=True):
            fp_accuracy = self.evaluate()
            self.say(f"bitat_tf: {len(self.order)} of {len(self.plan.layers)} weight layers to binarize in "
                     f"{len(self.plan.blocks)} blocks; full-precision accuracy ({self.split}) {fp_accuracy:.4f}")
            done = checkpointer.restore(self) if checkpointer else 0
            if self.config.activation_warmup_steps:
                self.activation_warmup(resumed=done > 0)
            self.batch_statistics = self.config.pass_normalization == "batch"
            self.progressive_pass(done, checkpointer, start)
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

    def progressive_pass(self, done, checkpointer, start):
        """Every stage, bottom to top, from the first the checkpoint does not hold (`done` layers)."""
        starts = list(itertools.accumulate([0] + [len(names) for _, names in self.stages]))
        first = starts.index(done)  # a checkpoint holds whole stages
        self.progress.passed(sum(self.budget.stage(names) for _, names in self.stages[:first]))
        for i in range(first, len(self.stages)):
            self.run_stage(i, starts[i], done, start)
            if checkpointer:
                checkpointer.save(self, starts[i + 1])

    def run_stage(self, i, n_done, resumed_at, start):
        """Stage i (after `n_done` layers): quantize, fine-tune above, measure where asked; its summary line."""
        block_index, names = self.stages[i]
        t0, timed, order = time.time(), len(self.timing), self.order
        seed_host(self.config.seed + n_done)  # each stage's sampling reproducible on resume
        label = names[0] if len(names) == 1 else f"{names[0]}..{names[-1]} ({len(names)} layers)"
        position = f"[{n_done + len(names)}/{len(order)}]"
        self.progress.detail(f"{position} {label} (block {block_index + 1}/{len(self.plan.blocks)})")
        with self.progress.stage(position, self.budget.stage(names), label):
            quantized = self.quantize_stage(names, block_index)
            finetuned = self.finetune_above(names)
            for name in names:
                self.history[name] = {"quantize": quantized, "finetune": finetuned}
            accuracy = self.evaluate() if self._measures_after(i) else None
            seconds = time.time() - t0
        for name in names:
            self.rows[name].val_accuracy, self.rows[name].seconds = accuracy, seconds / len(names)
        self.elapsed += seconds
        left = self.elapsed / (n_done + len(names) - resumed_at) * (len(order) - n_done - len(names))
        stage = self.timing[timed:]
        overhead = seconds - sum(t.training_seconds for t in stage)
        steps = ", ".join(f"{t.steps} x {1000 * t.seconds_per_step:.0f} ms" for t in stage)
        measured = "" if accuracy is None else f": accuracy {accuracy:.4f}"
        self.say(f"{position} {label} done in {seconds:.0f}s ({steps}; overhead {overhead:.1f}s){measured}; "
                 f"elapsed {clock(time.time() - start)}, left ~{clock(left)}")

    def _measures_after(self, i):
        """Whether accuracy is measured after stage i (`evaluate_every`). The end of the pass is measured
        whenever a last phase follows (the warm start's accuracy, one evaluation); without one, the run's
        final evaluation is that figure."""
        every, stages = self.config.evaluate_every, self.stages
        last = i + 1 == len(stages)
        if every == "layer" or (last and self.budget.final() > 0):
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
            self.progress.passed(self.config.activation_warmup_steps)
            return
        seed_host(self.config.seed)
        config = self.config
        self.history["activation_warmup"] = self.fit(config.warmup_learning_rate or config.learning_rate,
                                                     config.activation_warmup_steps, "activation warm-up",
                                                     layers=self.working.layers, recalibrate_after=-1,
                                                     checkpointed=True)
        self.say(f"bitat_tf: activations binary, weights real: accuracy {self.evaluate():.4f}")

    def final_phase(self):
        """After the pass: fine-tune all but the frozen binary kernels, or (end_to_end) everything."""
        config, steps = self.config, self.budget.final()
        if steps <= 0:
            return
        end_to_end = config.final_phase == "end_to_end"
        frozen = () if end_to_end else [graph.kernel_of(self.working.get_layer(n)) for n in self.plan.binarized]
        label = "final end-to-end" if end_to_end else "final fine-tune"
        learning_rate = config.final_learning_rate or config.finetune_learning_rate
        self.history[label.replace(" ", "_").replace("-", "_")] = self.fit(
            learning_rate, steps, label, layers=self.working.layers, exclude=frozen, recalibrate_after=-1,
            checkpointed=True)
