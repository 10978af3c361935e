"""The backward pass in segments, each skipped while nothing at or below it trains.

In a progressive stage everything below the layer being trained is frozen, yet a train step traced once
for the whole run differentiates the whole model: which variables train is a mask the step reads at run
time, and TensorFlow builds the backward pass from the loss to every variable. `gating` switches off the
convolutions' gradient kernels below the frozen frontier, but the rest of the backward pass there
(BatchNorms, quantizers, activations, on zero gradients) still ran.

Here the working model is cut at layers whose output every path from the inputs to the outputs goes
through (the one below each binarized layer's block). While the train step runs the model inside
`Segments.recording()`, each segment is recorded by a gradient tape of its own: at a cut the tape of the
segment below stops and a new one starts, watching the cut's output. The step differentiates the loss
on the top tape (which also holds what reads variables only: the BiTAT penalty, weight regularizers),
then each segment below, top down, as the vector-Jacobian product of its output with the gradient that
arrived there. Each of those runs inside a `tf.cond` on a boolean variable (`Segments.set`, from the same
trainable mask as the step's): while no variable at or below a segment trains, its branch returns zeros,
the gradients the mask would have discarded anyway, and none of the frozen prefix's backward ops runs.
The gradients are those of one backward pass (tested), and the step is still traced once a run.

One tape at a time, none persistent: while a persistent tape (or two at once) watches, TensorFlow builds
the gradient of every `tf.cond` of the forward pass as it traces it, in case a second-order gradient is
asked for: for the penalty's 31 conds that doubled the Python tracing of the standard train step.
"""

import contextlib

from bitat_tf._compat import keras, tf
from bitat_tf.training import variable_ref


class Segments:
    """The cuts of `model` chosen for `anchors` (the layer below each anchor's block), the switches of
    the segments' backward passes, and the patch that changes tapes there while a train step is traced.

    `Segments.of` returns None for a model it cannot cut (not functional, a layer run twice).
    """

    def __init__(self, model, cuts):
        self.model = model
        self.cuts = list(cuts)  # bottom up; segment j ends with cuts[j], the top segment has no cut
        position = {id(layer): i for i, layer in enumerate(model.layers)}
        bounds = [position[id(c)] for c in self.cuts]
        self.owner = {}  # variable.ref() -> the segment of the layer that owns it
        for layer in model.layers:
            j = sum(position[id(layer)] > b for b in bounds)
            for variable in layer.trainable_weights:
                self.owner[variable_ref(variable)] = j
        self.runs = tf.Variable([True] * len(self.cuts), trainable=False, name="segment_backward_runs")
        self._recording = None
        for i, layer in enumerate(self.cuts):
            object.__setattr__(layer, "call", self._wrap(layer.call, i))

    @classmethod
    def of(cls, model, anchors):
        """The cut below each anchor's block."""
        cuts = cut_layers(model)
        position = {id(layer): i for i, layer in enumerate(model.layers)}
        chosen = []
        for anchor in anchors:
            below = [c for c in cuts if position[id(c)] < position[id(anchor)]]
            if below and below[-1] not in chosen:
                chosen.append(below[-1])
        chosen.sort(key=lambda c: position[id(c)])
        return cls(model, chosen) if chosen else None

    def detach(self):
        for layer in self.cuts:
            object.__delattr__(layer, "call")  # the class's method again

    def set(self, trains):
        """Run segment j's backward pass exactly when a variable in `trains` (a set of `variable.ref()`)
        lies in segment j or below it."""
        lowest = min((self.owner[r] for r in trains if r in self.owner), default=len(self.cuts))
        self.runs.assign([j >= lowest for j in range(len(self.cuts))])

    @contextlib.contextmanager
    def recording(self):
        """Stands for `tf.GradientTape()` around a forward pass of the model and its loss: yields an
        object whose `gradient(total, variables)` computes the gradients segment by segment."""
        recording = _Recording(self)
        self._recording = recording
        try:
            with recording:
                yield recording
        finally:
            self._recording = None

    def _wrap(self, call, i):
        def cut_call(*args, **kwargs):
            out = call(*args, **kwargs)
            if self._recording is not None:
                self._recording.cut(i, out)
            return out

        return cut_call


class _Recording:
    """The tapes of one forward pass, one a segment, and the segmented backward pass over them."""

    def __init__(self, segments):
        self.segments = segments
        self.tapes, self.outs, self.losses, self._seen = [], [], [], set()
        self.control_flow, self._ops = [], 0  # per segment: whether its forward pass has a cond or loop

    def __enter__(self):
        self._ops = len(tf.compat.v1.get_default_graph().get_operations())
        self._start()
        return self

    def __exit__(self, *exc):
        self.losses.append(self._new_losses())
        self.tapes[-1].__exit__(*exc)

    def _start(self, watch=()):
        tape = tf.GradientTape()
        tape.__enter__()
        for tensor in watch:
            tape.watch(tensor)
        self.tapes.append(tape)

    def _new_losses(self):
        """Losses the layers added from activations (activity regularizers, `add_loss` in a call) since the
        last cut: they belong to the tape that recorded them."""
        new = [loss for layer in self.segments.model._flatten_layers() for loss in layer._eager_losses
               if id(loss) not in self._seen]
        self._seen.update(id(loss) for loss in new)
        return new

    def _control_flow_since_last_cut(self):
        """Whether the forward pass since the last cut built a cond or a loop (e.g. a BatchNorm's switch
        between batch and moving statistics). TensorFlow cannot differentiate one inside another cond's
        branch, so such a segment is differentiated outside its switch, always."""
        ops = tf.compat.v1.get_default_graph().get_operations()
        new, self._ops = ops[self._ops:], len(ops)
        return any(op.type in _CONTROL_FLOW for op in new)

    def cut(self, i, out):
        if i != len(self.outs):
            raise RuntimeError(f"internal: segment cut {i} reached out of order ({len(self.outs)} expected)")
        self.control_flow.append(self._control_flow_since_last_cut())
        self.losses.append(self._new_losses())
        self.tapes[-1].__exit__(None, None, None)
        self.outs.append(out)
        top = i == len(self.segments.cuts) - 1  # the top tape also watches every loss recorded below
        self._start(watch=[out] + ([loss for losses in self.losses for loss in losses] if top else []))

    def gradient(self, total, variables):
        """Gradients of `total` for `variables` (None where not connected), as one tape's would be."""
        if len(self.outs) != len(self.segments.cuts):
            raise RuntimeError("internal: the model ran without passing all its segment cuts")
        variables, n = list(variables), len(variables)
        below = [loss for losses in self.losses[:-1] for loss in losses]
        found = self.tapes[-1].gradient(total, variables + [self.outs[-1]] + below,
                                        unconnected_gradients="none")
        grads, seed, loss_seeds = found[:n], found[n], iter(found[n + 1:])
        seeds = [[next(loss_seeds) for _ in losses] for losses in self.losses[:-1]]
        for j in range(len(self.outs) - 1, -1, -1):
            targets = [(t, g) for t, g in zip([self.outs[j]] + self.losses[j], [seed] + seeds[j]) if g is not None]
            if not targets:  # nothing above depends on this segment
                seed = None
                continue
            sources = variables + ([self.outs[j - 1]] if j else [])
            vjp = self._segment(j, targets, sources)
            grads = [_add(g, v) for g, v in zip(grads, vjp[:n])]
            seed = vjp[n] if j else None
        return grads

    def _segment(self, j, targets, sources):
        """The gradients of `targets` (tensor, its gradient) for `sources` on segment j's tape, behind the
        segment's switch (zeros while it is off)."""
        connected = []  # which gradients exist, learnt while TensorFlow traces the first branch

        def run():
            found = self.tapes[j].gradient([t for t, _ in targets], sources, output_gradients=[g for _, g in targets],
                                           unconnected_gradients="none")
            connected.extend(g is not None for g in found)
            return [tf.convert_to_tensor(g) for g in found if g is not None]

        def skip():
            return [tf.zeros_like(s) for s, c in zip(sources, connected) if c]

        values = iter(run() if self.control_flow[j] else tf.cond(self.segments.runs[j], run, skip))
        return [next(values) if c else None for c in connected]


def cut_layers(model):
    """Layers of a functional `model` with one output through which every path from the inputs to the
    outputs goes, bottom up; [] when the model is not functional or a layer runs more than once."""
    layers = list(getattr(model, "layers", []))  # a functional model lists them in topological order
    if not getattr(model, "_is_graph_network", False) or any(len(l.inbound_nodes) != 1 for l in layers):
        return []
    position = {id(layer): i for i, layer in enumerate(layers)}
    last_use = list(range(len(layers)))
    for i, layer in enumerate(layers):
        for inbound, *_ in layer.inbound_nodes[0].iterate_inbound():
            if id(inbound) not in position:
                return []
            last_use[position[id(inbound)]] = max(last_use[position[id(inbound)]], i)
    for tensor in tf.nest.flatten(model.outputs):
        last_use[position[id(tensor._keras_history.layer)]] = len(layers)
    cuts, reach = [], 0  # reach: the last use of any layer before the i-th
    for i, layer in enumerate(layers):
        single = not isinstance(layer.output, (list, tuple, dict))
        if reach <= i < last_use[i] and single and not isinstance(layer, keras.layers.InputLayer):
            cuts.append(layer)
        reach = max(reach, last_use[i])
    return cuts


_CONTROL_FLOW = {"If", "StatelessIf", "While", "StatelessWhile", "Case", "StatelessCase"}


def _add(a, b):
    return a if b is None else (b if a is None else a + b)


__all__ = ["Segments", "cut_layers"]
