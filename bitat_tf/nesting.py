"""Flatten nested tf_keras models (a pre-trained base inside a transfer-learning model) into one graph.

`Sequential([base, GlobalAveragePooling2D(), Dense(n)])`, with `base` a Keras Applications model, is how
most users fine-tune; the layer plan, capture and the Larq twin need every weight layer in one
functional graph. `flatten` re-runs the outer model's graph, calling a clone of each leaf layer (same
config and weights) and descending into each nested model, so the result computes what the original
computes (checked on random inputs). Inlined layers are named by their nested path, `base.conv1`.
"""

import numpy as np

from bitat_tf._compat import keras, tf
from bitat_tf.errors import UnsupportedModelError

SEPARATOR = "."


def has_nested_models(model):
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten(model, *, atol=1e-4):
    """One functional tf_keras model with the layers of every nested model inlined, same weights.

    # Raises
        UnsupportedModelError: when a nested model is not a built Functional or Sequential model, or the
            flattened model's outputs differ from the original's by more than `atol`.
    """
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=layer.name)
              for t, layer in zip(model.inputs, model._input_layers)]
    clones = {}
    outputs = _inline(model, inputs, "", clones)
    flat = keras.Model(inputs, outputs, name=model.name)
    for (old, new) in clones.values():
        new.set_weights(old.get_weights())
    _check_outputs(model, flat, atol)
    return flat


def _inline(model, inputs, prefix, clones):
    """Run `model`'s graph on `inputs`, cloning leaf layers and recursing into nested models."""
    if not getattr(model, "_is_graph_network", False):
        raise UnsupportedModelError(
            f"nested model {prefix.rstrip(SEPARATOR) or model.name!r} ({type(model).__name__}) is not a built "
            "Functional or Sequential model, so its layers cannot be inlined. Build it with an Input, or "
            "rebuild the outer model with the Functional API.")
    tensors, usage = {}, model._tensor_usage_count
    for x, y in zip(model.inputs, inputs):
        tensors[str(id(x))] = [y] * usage[str(id(x))]
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input or any(t not in tensors for t in node.flat_input_ids):
                continue
            args, kwargs = node.map_arguments(tensors)
            layer = node.layer
            if isinstance(layer, keras.Model):
                values = _inline(layer, tf.nest.flatten(args)[: len(layer.inputs or ())],
                                 f"{prefix}{layer.name}{SEPARATOR}", clones)
                values = values if len(values) != 1 else values[0]
            else:
                values = _clone(layer, prefix, clones)(*args, **kwargs)
            for x_id, y in zip(node.flat_output_ids, tf.nest.flatten(values)):
                tensors[x_id] = [y] * usage[x_id]
    return [tensors[str(id(x))].pop() for x in model.outputs]


def _clone(layer, prefix, clones):
    key = (prefix, id(layer))
    if key not in clones:  # a shared layer stays shared
        config = dict(layer.get_config(), name=f"{prefix}{layer.name}")
        clones[key] = (layer, layer.__class__.from_config(config))
    return clones[key][1]


def _check_outputs(model, flat, atol):
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, *t.shape[1:])).astype(t.dtype.as_numpy_dtype) for t in model.inputs]
    x = x[0] if len(x) == 1 else x
    want, got = (tf.nest.flatten(m(x, training=False)) for m in (model, flat))
    gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(want, got))
    if not gap <= atol:
        raise UnsupportedModelError(
            f"flattening the nested models of {model.name!r} changed its outputs by {gap:.2g} (> {atol}); "
            "rebuild it as one Functional model by hand (call the base model's layers on the outer tensors).")


__all__ = ["flatten", "has_nested_models", "SEPARATOR"]
