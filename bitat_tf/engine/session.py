"""The compiled session: a run's switches attached, its trainer compiled and its forward pass traced once.

Everything a stage changes is a variable the traced functions read at run time (`controls`), so the train
step, evaluation and recalibration are each traced once per run, however many stages it has. On exit the
working model holds plain Python state again: it saves and exports as if none of it had happened.
"""

import contextlib
import threading
import warnings

from bitat_tf._compat import keras, tf
from bitat_tf.engine import forward
from bitat_tf.engine.controls import Controls
from bitat_tf.quantizers import custom_objects
from bitat_tf.training import BitatTrainer, StageCosine, assigner
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2  # after _compat
from tensorflow.python.eager import context


class CompiledSession:
    """Mixin of `Engine`: `session()` sets up what the other parts use (`_trainer`, `_forward`, `_norms`...)."""

    @contextlib.contextmanager
    def session(self, penalty=None, *, steps_train_every_norm=False, segmented=False):
        """Attach the run's switches and compile its trainer; on exit, plain Python state again.

        `segmented`: the train step's backward pass runs in segments, each skipped while nothing at or
        below it trains (`segments`), for runs whose phases freeze a prefix of the model.

        `steps_train_every_norm`: the run's every train step normalises every BatchNorm with its batch's
        statistics (the baselines, BiTAT with `pass_normalization="batch"`). The train step then reads no
        BatchNorm switch, so it holds no `tf.cond` per BatchNorm (their branch functions, forward,
        backward and rebuilt, were ~4,400 of the standard step's graph nodes); captures and recalibration
        still read the switches. `fit` refuses a phase that would need one.
        """
        controls = Controls(self.working, steps_train_every_norm=steps_train_every_norm,
                            segment_below=[self.working.get_layer(n) for n in self.plan.binarized] if segmented
                            else ())
        self._steps_train_every_norm = steps_train_every_norm
        restore_graph_options = _graph_options()
        try:
            for layer in self.working.layers:
                layer.trainable = True  # one fixed list of variables; stages choose with masks
            self._norms, self._gates, self._segments = controls.norms, controls.gates, controls.segments
            self._compile(penalty)
            # One compiled forward for captures (inference mode) and recalibration (training mode): the
            # model's output and the inputs of the layers to binarize.
            self._forward = forward.forward_with_inputs(self.working, self.plan.binarized, self.dataset.element_spec)
            self._pass_bytes_per_image = forward.pass_bytes_per_image(self.working, self.plan.binarized)
            self._assign_norm_training = assigner([bn.bitat_training for bn in self._norms], tf.bool)
            self._assign_momenta = assigner([bn.momentum for bn in self._norms], tf.float32)
            self._momenta = tf.constant([bn.bitat_momentum for bn in self._norms], tf.float32)
            yield
        finally:
            restore_graph_options()
            controls.detach()
            self._trainer = self._forward = None
            self._release_streams()
        if multi_worker():  # not after a failure: the other workers may be gone
            self.working = local_copy(self.working)

    def _compile(self, penalty):
        """The run's `BitatTrainer` with Adam over a `StageCosine` schedule, its variables made up front."""
        self._trainer = BitatTrainer(self.working, penalty=penalty, teacher=self.teacher,
                                     distill_weight=self.config.distill_weight,
                                     distill_target=self.config.distill_target, task=self.task,
                                     segments=self._segments)
        self._schedule = StageCosine()
        self._trainer.compile(optimizer=_adam(self._schedule), loss=self.loss, metrics=[self.task.metric()])
        # Create Adam's slots now: a variable created inside the first trace makes TensorFlow trace the step
        # a second time.
        self._trainer.optimizer._create_all_weights(self._trainer.trainable_variables)
        _build_compiled_metrics(self._trainer, self.dataset.element_spec)  # the same, for Keras' metrics
        self._accuracy = self.task.accuracy  # Keras' for these labels and outputs (sparse, categorical, binary)
        optimizer_variables = self._trainer.optimizer.variables
        optimizer_variables = optimizer_variables() if callable(optimizer_variables) else optimizer_variables
        self._optimizer_variables = list(optimizer_variables)
        self._zero_optimizer = tf.function(lambda: [v.assign(tf.zeros_like(v)) for v in optimizer_variables])


def multi_worker():
    """Whether the run is one of several workers of a `MultiWorkerMirroredStrategy` (or another strategy
    whose collectives span processes)."""
    extended = tf.distribute.get_strategy().extended
    return bool(getattr(extended, "_in_multi_worker_mode", lambda: False)())


def local_copy(model):
    """`model` rebuilt with plain variables holding its values, for the end of a multi-worker run.

    The working model's variables belong to the strategy: reading a BatchNorm's moving statistics is then an
    all-reduce across the workers, so a save or an export on the chief alone would wait for workers that
    have moved on or exited. Every worker reads the values together here; the copy is built on a thread of
    its own, outside the strategy's scope (a scope holds for its thread only). A model that cannot be
    rebuilt from its layers' configs is returned as it is, with a warning.
    """
    values = model.get_weights()
    made = {}

    def build():
        try:
            with keras.utils.custom_object_scope(custom_objects()):
                made["model"] = keras.models.clone_model(model)
            made["model"].set_weights(values)
        except Exception as err:  # noqa: BLE001 - any failure: the model as trained, with a warning
            made["error"] = err

    thread = threading.Thread(target=build, name="bitat_tf-local-model")
    thread.start()
    thread.join()
    if "error" in made:
        warnings.warn(f"bitat_tf: the binary model could not be rebuilt outside the distribution strategy "
                      f"({type(made['error']).__name__}: {made['error']}); it is returned as trained, and saving "
                      "or exporting it reads its BatchNorm statistics with an all-reduce: do it on every worker "
                      "(writing on the chief only).", stacklevel=3)
        return model
    return made["model"]


def _adam(schedule):
    """Adam as Keras' legacy optimizer: one fused `ResourceApplyAdam` kernel a variable where the current
    `keras.optimizers.Adam` builds about ten ops, the same update (bias-corrected step, epsilon 1e-7).
    The standard model trains 186 variables: in one sitting (`engine_speed.py --case stages --recipe
    default`) its quantize, fine-tune-above and end-to-end steps took 157 / 167 / 178 ms against 162 / 176 /
    198 ms, and the train step's first call (trace, graph optimisation) 14.2 s against 15.7 s. Its
    variables are the step counter and the slots only (the hyperparameters are constants), so
    `_zero_optimizer` can reset all of them."""
    return keras.optimizers.legacy.Adam(schedule)


def _build_compiled_metrics(trainer, spec):
    """Create the compiled loss's and metrics' variables before the first trace.

    Keras creates them inside the first trace of whichever step runs first (in a run, the test step of the
    full-precision evaluation), and a variable created in a trace makes TensorFlow trace that function a
    second time (measured on the standard model's train step when it ran first: ~13 s of ~30 s). Built
    here from zeros shaped like the data and the model's outputs.
    """
    specs = tf.nest.flatten(spec)
    y_spec = specs[1] if len(specs) > 1 else None
    y_pred = tf.nest.map_structure(lambda t: tf.zeros([1, *t.shape[1:]], t.dtype), trainer.inner.output)
    trainer.compiled_loss.build(y_pred)
    if y_spec is not None:
        trainer.compiled_metrics.build(y_pred, tf.zeros([1, *y_spec.shape[1:]], y_spec.dtype))


def _graph_options():
    """Grappler settings for the functions the run instantiates; returns what restores the previous ones.

    - Constant folding off (process-wide, `tf.config.optimizer`): on the standard model's train step
      (8,660 nodes, default recipe) it took 1.7 s of the first call (10.9 / 9.8 s without it against 12.2 /
      11.9 s with it, alternating runs in one sitting) and did not make a step faster (median 169.6 / 169.4
      ms against 171.6 / 174.0 ms).
    - One round of the meta-optimizer instead of two (this thread's function-call options; `tf.config`
      has no switch for it): the second round of the train step changed no node (the optimized graphs were
      the same op for op) and took ~1.1 s of its 3.4 s of Grappler; the first call took 10.4 s against
      11.8 s (mean of 4 probes, one sitting).
    Switching all of Grappler off saves more but makes steps ~3.5% slower (docs/engine.md). A function
    instantiated before keeps its graph, and is instantiated again only if called while the options differ.
    """
    ctx = context.context()
    before, call_options = tf.config.optimizer.get_experimental_options(), ctx.function_call_options
    tf.config.optimizer.set_experimental_options({"constant_folding": False})  # resets the call options
    proto = config_pb2.ConfigProto()
    proto.ParseFromString(ctx.function_call_options.config_proto_serialized)
    proto.graph_options.rewrite_options.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    ctx.function_call_options = context.FunctionCallOptions(config_proto=proto)

    def restore():
        tf.config.optimizer.set_experimental_options({"constant_folding": before.get("constant_folding", True)})
        ctx.function_call_options = call_options

    return restore


__all__ = ["CompiledSession", "local_copy", "multi_worker"]
