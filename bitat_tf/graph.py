"""Layer-graph analysis: which layers are binarized and why, the block partition, and the Larq twin.

Analysis never touches the user's model; `to_larq` clones it and copies the weights.
"""

import contextlib
import dataclasses
import inspect
import re

from bitat_tf._compat import is_keras3_model, keras, larq, tf
from bitat_tf.errors import UnsupportedModelError
from bitat_tf.quantizers import ScaledSign, ThresholdSign

L = keras.layers

# The declarative table: a binarizable Keras layer type, its Larq counterpart, the name of its kernel,
# and how many trailing kernel axes index an output channel.
BINARIZABLE = {
    L.Conv2D: (larq.layers.QuantConv2D, "kernel", 1),
    L.Dense: (larq.layers.QuantDense, "kernel", 1),
    L.DepthwiseConv2D: (larq.layers.QuantDepthwiseConv2D, "depthwise_kernel", 2),
}
_QUANTIZER_ARG = {L.DepthwiseConv2D: "depthwise_quantizer"}
# Keras' random image augmentation layers branch on `training` in Python, which the engine's compiled passes
# give as a tensor (one trace for both modes); augmentation belongs in the dataset here.
_AUGMENTATION = tuple(getattr(L, n) for n in ("RandomBrightness", "RandomContrast", "RandomFlip", "RandomHeight",
                                              "RandomRotation", "RandomTranslation", "RandomWidth", "RandomZoom")
                      if hasattr(L, n))
_WEIGHT_LAYERS = (L.Conv1D, L.Conv2D, L.Conv3D, L.Dense, L.DepthwiseConv2D, L.SeparableConv2D,
                  L.Conv2DTranspose, L.LocallyConnected2D)


@dataclasses.dataclass
class LayerPlan:
    """What happens to one weight layer: binarized or kept, and why."""

    name: str
    type: str
    binarize: bool
    reason: str
    index: int


@dataclasses.dataclass
class Plan:
    """The layers of a model in topological order, the policy's decisions, and the block partition."""

    layers: list  # LayerPlan for every weight layer
    blocks: list  # lists of names of binarized layers, bottom to top

    @property
    def binarized(self):
        return [p.name for p in self.layers if p.binarize]

    def __getitem__(self, name):
        return next(p for p in self.layers if p.name == name)


def check_model(model):
    """Raise UnsupportedModelError unless `model` is a built tf_keras Functional or Sequential model."""
    if is_keras3_model(model):
        raise UnsupportedModelError(
            f"{type(model).__name__} is a Keras 3 model; bitat_tf works on tf_keras (Keras 2) models. "
            "Convert it with `bitat_tf.keras3.to_tf_keras(model)` (binarize does this when every layer is a "
            "common one) or rebuild it with `import tf_keras`.")
    if not isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"expected a tf_keras.Model, got {type(model).__name__}. Pass a built Functional or Sequential "
            "model.")
    if not getattr(model, "_is_graph_network", False) and not isinstance(model, keras.Sequential):
        raise UnsupportedModelError(
            f"model {model.name!r} is a subclassed keras.Model ({type(model).__name__}); its layer graph "
            "cannot be analysed or cloned. Rebuild it with the Functional API or keras.Sequential.")
    if not getattr(model, "built", False) or not model.inputs:
        raise UnsupportedModelError(
            f"model {model.name!r} is not built: it has no defined inputs. Build it first, e.g. give the "
            "Sequential model an `Input(shape)` layer or call `model.build(input_shape)` on it.")
    augmenting = [layer.name for layer in model.layers if isinstance(layer, _AUGMENTATION)]
    if augmenting:
        raise UnsupportedModelError(
            f"model {model.name!r} holds random augmentation layers {augmenting}, which bitat_tf's compiled passes "
            "cannot run (and which would show the teacher and the binary model different images). Augment in "
            "the dataset instead (dataset.map(lambda x, y: (augment(x, training=True), y))) and pass the model "
            "rebuilt without them, its weights copied (at inference they are the identity, so its outputs are "
            "the same).")
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise UnsupportedModelError(
            f"model {model.name!r} contains nested models {nested}; flatten them into one Functional "
            "model first with bitat_tf.nesting.flatten(model) (bitat_tf.binarize does this itself).")


def make_plan(model, config):
    """Decide, for every weight layer in topological order, whether it is binarized and why."""
    check_model(model)
    weight_layers = [layer for layer in model.layers if isinstance(layer, _WEIGHT_LAYERS)]
    first = weight_layers[0].name if weight_layers else None
    last = weight_layers[-1].name if weight_layers else None
    plans = []
    for index, layer in enumerate(model.layers):
        if isinstance(layer, _WEIGHT_LAYERS):
            binarize, reason = _decide(layer, config, first, last)
            plans.append(LayerPlan(layer.name, type(layer).__name__, binarize, reason, index))
    _check_overrides(model, config)
    if not any(p.binarize for p in plans):
        raise UnsupportedModelError(
            f"model {model.name!r} has no layer to binarize under this policy (weight layers: "
            f"{[(p.name, p.type, p.reason) for p in plans]}). Binarizable types are Conv2D, Dense and "
            "DepthwiseConv2D; use force_binarize=[...] to binarize the first or last layer.")
    binarized = [p.name for p in plans if p.binarize]
    return Plan(plans, partition_blocks(model, binarized, config))


def unmodelled_options(layer):
    """Options of a binarizable layer that the capture and kernel code do not model, as text (or None).

    Grouped convolutions have kernels of shape (kh, kw, cin / groups, cout), so their patch matrix is not
    the layer's input view; channels_first inputs are not what `capture` reads.
    """
    if getattr(layer, "groups", 1) != 1:
        return f"groups={layer.groups} (grouped convolution)"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"data_format={layer.data_format!r}"
    return None


def _decide(layer, config, first, last):
    kind = type(layer)
    named = {layer.name, kind.__name__}
    unmodelled = unmodelled_options(layer) if kind in BINARIZABLE else None
    if named & set(config.force_binarize):
        if kind not in BINARIZABLE:
            raise UnsupportedModelError(
                f"layer {layer.name!r} of type {kind.__name__} is in force_binarize but bitat_tf can only "
                f"binarize {[k.__name__ for k in BINARIZABLE]}; remove it from force_binarize.")
        if unmodelled:
            raise UnsupportedModelError(
                f"layer {layer.name!r} ({kind.__name__}) is in force_binarize but has {unmodelled}, which "
                "bitat_tf cannot binarize; remove it from force_binarize (it then stays full precision) or "
                "rebuild it with groups=1 and data_format='channels_last'.")
        return True, "forced by force_binarize"
    if named & set(config.keep_full_precision):
        return False, "kept by keep_full_precision"
    if kind not in BINARIZABLE:
        return False, f"{kind.__name__} has no binary counterpart here"
    if unmodelled:
        return False, f"{unmodelled}: not binarizable here"
    if layer.name == first and not config.binarize_first:
        return False, "first layer (sees the raw input)"
    if layer.name == last and not config.binarize_last:
        return False, "classifier (last layer)"
    if kind is L.DepthwiseConv2D and not config.binarize_depthwise:
        return False, "depthwise (LCE has no binary depthwise kernel)"
    if kind is L.Dense and not config.binarize_dense:
        return False, "dense (binarize_dense=False)"
    return True, "binarizable"


def _check_overrides(model, config):
    known = {layer.name for layer in model.layers} | {type(layer).__name__ for layer in model.layers}
    unknown = sorted(set(config.keep_full_precision + config.force_binarize) - known)
    if unknown:
        raise UnsupportedModelError(
            f"keep_full_precision/force_binarize name {unknown}, which are neither layer names nor layer "
            f"types of model {model.name!r}; check the spelling (model.summary() lists the names).")


def partition_blocks(model, binarized, config):
    """Group the binarized layers (topological order) into blocks of consecutive layers: the transform's
    cross-layer blocks, and the stages of `stage="block"`."""
    if not config.cross_layer and getattr(config, "stage", "layer") == "layer":
        return [[name] for name in binarized]
    if isinstance(config.blocks, int):
        return [binarized[i:i + config.blocks] for i in range(0, len(binarized), config.blocks)]
    if config.blocks == "auto":
        return _auto_blocks(binarized)
    listed = [name for block in config.blocks for name in block]
    if sorted(listed) != sorted(binarized) or len(set(listed)) != len(listed):
        raise UnsupportedModelError(
            "config.blocks must name every binarized layer exactly once, in order; missing "
            f"{sorted(set(binarized) - set(listed))}, not binarized or repeated "
            f"{sorted(set(n for n in listed if listed.count(n) > 1) | (set(listed) - set(binarized)))}.")
    if listed != binarized:
        raise UnsupportedModelError(
            f"config.blocks must list layers bottom to top; the model's order is {binarized}.")
    return [list(block) for block in config.blocks]


_BLOCK_PREFIX = re.compile(r"^(.*?block_?\d+|.*?stage_?\d+(?:_?unit_?\d+)?|conv\d+_block\d+)")


def _auto_blocks(binarized):
    """Blocks from architectural name prefixes (`block3_...`, `conv2_block1_...`); else pairs."""
    prefixes = [_BLOCK_PREFIX.match(name) for name in binarized]
    if all(prefixes):
        blocks, current = [], None
        for name, match in zip(binarized, prefixes):
            if match.group(1) != current:
                blocks.append([])
                current = match.group(1)
            blocks[-1].append(name)
        return blocks
    return [binarized[i:i + 2] for i in range(0, len(binarized), 2)]


@contextlib.contextmanager
def float32_policy():
    """Keras' global dtype policy at float32 inside the block, the caller's restored after it.

    Larq's layers and quantizers compute in float32 only (their padding constant and the quantizers'
    scales are float32), so every layer `binarize` makes (the Larq twin, its quantizers, the float32 copy of
    a model built under a mixed-precision policy, the compiled model) is made float32 even when the caller
    set `mixed_float16` or `mixed_bfloat16` globally. A decorator too.
    """
    before = keras.mixed_precision.global_policy()
    if before.name == "float32":
        yield
        return
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


def in_float32(model):
    """`model`, or a copy computing in float32 (weights copied) if a layer computes in float16 or bfloat16.

    A model built under a mixed-precision policy keeps float32 variables, so the copy holds the same
    weights; its layers, and so the binary model, compute in float32 (call it under `float32_policy`).
    Raises `check_model`'s `UnsupportedModelError` for a model that is not a built graph (an unbuilt
    Sequential model), before anything reads its inputs.
    """
    check_model(model)
    if not any(_reduced(layer) for layer in model.layers):
        return model

    def clone(layer):
        config = layer.get_config()
        if _reduced(layer):
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def _reduced(layer):
    return getattr(layer, "compute_dtype", None) in ("float16", "bfloat16")


def to_larq(model, plan, *, quantizers=None):
    """Clone `model`, replacing each binarized layer by its Larq twin with inactive quantizers.

    The clone computes exactly what the original computes until `set_binary(layer, True)`.
    `quantizers`, a function of the Keras layer returning `(input_quantizer, kernel_quantizer)`, puts
    other (always active) quantizers in their place, e.g. Larq's "ste_sign" for the plain baseline; 'same'
    padding then pads with +1 from the start.
    """
    chosen = set(plan.binarized)

    def clone(layer):
        if layer.name not in chosen:
            return layer.__class__.from_config(layer.get_config())
        quant_cls, _, channel_axes = BINARIZABLE[type(layer)]
        kwarg = _QUANTIZER_ARG.get(type(layer), "kernel_quantizer")
        config = dict(layer.get_config())
        if quantizers is None:
            input_quantizer, kernel_quantizer = ThresholdSign(active=False), ScaledSign(
                channel_axes=channel_axes, active=False)
        else:
            input_quantizer, kernel_quantizer = quantizers(layer)
            if config.get("padding") == "same" and "pad_values" in inspect.signature(quant_cls).parameters:
                config["pad_values"] = 1.0
        config.update({
            "input_quantizer": input_quantizer,
            kwarg: kernel_quantizer,
            kwarg.replace("quantizer", "constraint"): "weight_clip",
        })
        return quant_cls(**config)

    clone_model = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, clone_model.layers):
        if old.name in chosen:
            for weight_name in ("kernel", "depthwise_kernel", "bias"):
                if getattr(old, weight_name, None) is not None:
                    getattr(new, weight_name).assign(getattr(old, weight_name))
        else:
            new.set_weights(old.get_weights())
    return clone_model


def kernel_of(layer):
    """The latent (real) kernel variable of a binarizable layer."""
    name = "depthwise_kernel" if isinstance(layer, L.DepthwiseConv2D) else "kernel"
    kernel = getattr(layer, name)
    return getattr(kernel, "latent_variable", kernel)


def weight_quantizer(layer):
    return getattr(layer, "depthwise_quantizer", None) or layer.kernel_quantizer


def set_binary(layer, on, *, weights=None):
    """Switch a Larq layer's input and weight binarization on or off (recompile afterwards).

    `weights` (default: `on`) lets the weights stay real while the input is binary, as in the first step
    of ReActNet's training. 'same' padding must pad the binary input with +1 (LCE's binary convolution
    pads with one), while the full-precision input must be padded with zeros, so the pad value follows
    the input's switch.
    """
    layer.input_quantizer.active = on
    weight_quantizer(layer).active = on if weights is None else weights
    if getattr(layer, "padding", None) == "same" and hasattr(layer, "pad_values"):
        if isinstance(layer.pad_values, tf.Variable):  # held by the engine: pads explicitly with this value
            layer.pad_values.assign(1.0 if on else 0.0)
        else:
            layer.pad_values = 1.0 if on else 0.0
            layer._is_native_padding = not on  # Larq decides at construction; the switch moves it with the value


def following_batchnorm(layer):
    """The BatchNormalization that alone consumes `layer`'s output, if any."""
    consumers = [node.outbound_layer for node in layer._outbound_nodes]
    if len(consumers) == 1 and isinstance(consumers[0], L.BatchNormalization):
        return consumers[0]
    return None
