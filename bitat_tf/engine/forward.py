"""The run's compiled forward pass and what it serves besides recalibration: evaluation and captures.

One function, traced once a run, returns the model's outputs and the inputs of every layer to binarize,
in inference mode (evaluation, captures) or training mode (recalibration), so Keras' test step is never
traced and a capture is one forward pass.
"""

import numpy as np

from bitat_tf import capture
from bitat_tf._compat import keras, tf
from bitat_tf.errors import DatasetError
from bitat_tf.training import BitatTrainer


class ForwardPasses:
    """Mixin of `Engine`: accuracy on the evaluation data, and layers' inputs captured from the stream."""

    def evaluate(self):
        """Accuracy of the working model on the evaluation data (inference mode).

        The run's compiled forward (traced once, shared with captures and recalibration) computes the
        outputs and the task's accuracy function (Keras' for these labels and outputs, `outputs.Task`) scores
        them, averaged over the examples (weighted by sample weights when the data has them); each batch's
        labels are checked first. A Keras test step would be one more trace a run (~1 s of the standard
        run's first evaluation), and `Model.evaluate` would also build a data handler, callbacks and a
        progress bar at every call.
        """
        self.settle()
        structure, total, weight, batches = self.working.outputs, 0.0, 0.0, 0
        count = len(tf.nest.flatten(structure))
        for batch in self.eval_data:
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            self.task.check_batch(y, "validation_data" if self.split == "validation" else "dataset",
                                  f"batch {batches + 1}")
            outputs = self._forward(x, tf.constant(False))[:count]
            y_pred = outputs[0] if count == 1 else tf.nest.pack_sequence_as(structure, outputs)
            correct = tf.cast(self._accuracy(y, y_pred), tf.float64)
            w = tf.ones_like(correct) if sample_weight is None else tf.broadcast_to(
                tf.reshape(tf.cast(sample_weight, tf.float64), tf.shape(correct)), tf.shape(correct))
            total += float(tf.reduce_sum(correct * w))
            weight += float(tf.reduce_sum(w))
            batches += 1
        if not batches:
            raise DatasetError("the evaluation data yielded no batch; pass a non-empty validation_data.")
        return total / weight if weight else 0.0  # all weights zero: 0, as Keras' weighted mean gives

    def evaluate_model(self, model):
        """Accuracy of another model (the user's full-precision one) on the evaluation data."""
        trainer = BitatTrainer(model)
        trainer.compile(loss=self.loss, metrics=[self.task.metric()])
        return float(trainer.evaluate(self.eval_data, verbose=0, return_dict=True)["accuracy"])

    def capture(self, layers):
        """Captured inputs of binarizable `layers` (a list, or one layer); a list of `capture.Capture`, or one.

        A capture reads at most `capture_batches` batches, and only as many whole batches as give every
        layer `capture_rows` rows of X (`capture_images`): on the standard model (standard mode: 4 batches
        of 128) one batch for a layer at 8 x 8 positions or more and two at 4 x 4, where the top layers'
        captures are nearly whole forward passes.

        With a recalibration pending (`settle`) whose passes read at least `capture_batches` batches, the
        inputs come from the first of them (the same whole batches): those passes compute every binarized
        layer's input anyway. They run in training mode for the BatchNorms being recalibrated, i.e.
        normalise with the statistics of the images in the pass, which are what the moving statistics become
        (exactly so when the phase averaged none of its steps; nearly otherwise). Else one compiled forward
        pass of its own (inference mode, traced once per run).
        """
        single = not isinstance(layers, (list, tuple))
        layers = [layers] if single else list(layers)
        captured = None
        if self.batch_statistics:  # what the steps see: every BatchNorm on the pass's batch statistics
            self._set_batchnorm_training(set(self._norms))
            self.pending_recalibration = (-1, 0)  # a forward pass in training mode moves them too
        else:
            captured = self.settle(capture_layers=layers)
        if captured is None:
            picks = self._input_picks(layers)
            training = tf.constant(self.batch_statistics)
            inputs = ([values[i] for i in picks] for values in
                      (self._forward(x, training) for x, _ in
                       self.passes(self.config.capture_batches, self.capture_images(layers))))
            captured = capture.capture_many(layers, inputs, memory_mb=self.config.capture_memory_mb,
                                            seed=self.config.seed)
        return captured[0] if single else captured

    def capture_images(self, layers):
        """Images that give each of `layers` at least `capture_rows` rows of X (None: configs without
        capture_rows, the baselines', read all their capture batches)."""
        rows = getattr(self.config, "capture_rows", None)
        if rows is None:
            return None
        return max(-(-rows // capture.rows_per_image(layer)) for layer in layers)

    def _input_picks(self, layers):
        """Where the compiled forward returns the inputs of `layers`."""
        outputs = len(tf.nest.flatten(self.working.outputs))
        return [outputs + self.plan.binarized.index(layer.name) for layer in layers]


def forward_with_inputs(model, names, element_spec):
    """`f(x, training)` -> [the model's outputs..., the inputs of the layers `names`...], compiled once for
    any number of images (`training` is a boolean tensor, so both modes share the trace).

    A capture runs the whole model, although it needs only the layers below the one it captures: a
    `tf.cond` per layer that skipped the rest cost the standard model's first evaluation ~2.3 s of trace
    and graph instantiation and saved its 31 captures (one or two batches each) ~1.1-1.6 s (measured).
    """
    inputs = [capture.layer_input_model(model, model.get_layer(n)).outputs[0] for n in names]
    probe = keras.Model(model.inputs, tf.nest.flatten(model.outputs) + inputs)

    def forward(x, training):
        return tf.nest.flatten(probe(x, training=training))

    specs = element_spec[0] if isinstance(element_spec, tuple) else element_spec
    if not all(type(s) is tf.TensorSpec and s.shape.rank is not None for s in tf.nest.flatten(specs)):
        return tf.function(forward, reduce_retracing=True)  # ragged, sparse or rank unknown: as TF decides
    specs = tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), specs)
    return tf.function(forward, input_signature=[specs, tf.TensorSpec([], tf.bool)])


def pass_bytes_per_image(model, names):
    """Bytes a forward pass holds per image: every binarized layer's input (returned together) plus twice
    the largest activation (the one being computed and its input)."""
    def size(layer, attribute):
        try:
            tensors = tf.nest.flatten(getattr(layer, attribute))
        except (AttributeError, RuntimeError):  # a layer called more than once has no single shape
            return 0
        return sum(int(np.prod([d or 1 for d in t.shape[1:]])) for t in tensors)

    held = sum(size(model.get_layer(n), "input") for n in names)
    largest = max([size(layer, "output") for layer in model.layers] or [1])
    return 4 * max(held + 2 * largest, 1)


__all__ = ["ForwardPasses", "forward_with_inputs", "pass_bytes_per_image"]
