"""Full-precision models to binarize: the ReActNet-A twin (the paper's BiTAT-A backbone) and a tiny CNN.

Every builder returns a built tf_keras Functional model that outputs logits.
"""

from bitat_tf._compat import keras

L = keras.layers

# MobileNetV1's 13 blocks: output channels and stride of each (CIFAR variant: the stem keeps 32x32).
_REACTNET_A = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
               (512, 1), (512, 1), (1024, 2), (1024, 1))


def _channels(n, width):
    return max(8, int(round(n * width)))


def reactnet_a(*, input_shape=(32, 32, 3), num_classes=10, width=0.25, bn_momentum=0.9):
    """The real-valued twin of ReActNet-A, the network BiTAT binarizes in the paper (BiTAT-A).

    MobileNetV1's layout with each depthwise convolution replaced by a full 3x3 convolution. A block is
    `conv3x3 -> BN -> + shortcut (2x2 average pool when strided) -> PReLU`, then
    `conv1x1 -> BN -> + shortcut -> PReLU`; where the channels double, two 1x1 convolutions of the same
    input are concatenated, each with an identity shortcut. The stem (3x3, stride 1 for 32x32 inputs) and
    the classifier stay full precision; the 13 blocks hold 31 binarizable convolutions (13 3x3, and 18 1x1
    because five blocks double their channels).

    # Arguments
        width: multiplier on every channel count (0.25 trains at about 950 images/s on 2 cores).

    # References
        - [ReActNet](https://arxiv.org/abs/2003.03488), Liu et al., ECCV 2020.
    """
    inputs = keras.Input(input_shape)
    x = L.Conv2D(_channels(32, width), 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = L.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    cin = _channels(32, width)
    for index, (cout, stride) in enumerate(_REACTNET_A, start=1):
        x = _reactnet_block(x, f"block{index}", cin, _channels(cout, width), stride, bn_momentum)
        cin = _channels(cout, width)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"reactnet_a_{width:g}")


def reactnet_a_imagenet(*, input_shape=(224, 224, 3), num_classes=1000, width=1.0, bn_momentum=0.9):
    """ReActNet-A as the paper runs it on ImageNet: `reactnet_a`'s 13 blocks behind MobileNetV1's stem, a
    3x3 convolution of stride 2, so that a 224x224 input reaches the classifier at 7x7 (an s x s input at
    s/32; s must be a multiple of 32). Width 1.0 is the published network (about 29M binary weights).

    # References
        - [ReActNet](https://arxiv.org/abs/2003.03488), Liu et al., ECCV 2020.
    """
    if input_shape[0] % 32 or input_shape[1] % 32:
        raise ValueError(f"reactnet_a_imagenet: input sides must be multiples of 32 (five halvings), got "
                         f"{input_shape[:2]}.")
    inputs = keras.Input(input_shape)
    cin = _channels(32, width)
    x = L.Conv2D(cin, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = L.BatchNormalization(momentum=bn_momentum, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    for index, (cout, stride) in enumerate(_REACTNET_A, start=1):
        x = _reactnet_block(x, f"block{index}", cin, _channels(cout, width), stride, bn_momentum)
        cin = _channels(cout, width)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"reactnet_a_imagenet_{width:g}")


def _reactnet_block(x, name, cin, cout, stride, momentum):
    shortcut = L.AveragePooling2D(2, name=f"{name}_pool")(x) if stride == 2 else x
    h = L.Conv2D(cin, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv3x3")(x)
    h = L.BatchNormalization(momentum=momentum, name=f"{name}_bn3x3")(h)
    h = L.Add(name=f"{name}_add3x3")([h, shortcut])
    x = L.PReLU(shared_axes=[1, 2], name=f"{name}_prelu3x3")(h)
    if cout == cin:
        h = L.Conv2D(cout, 1, use_bias=False, name=f"{name}_conv1x1")(x)
        h = L.BatchNormalization(momentum=momentum, name=f"{name}_bn1x1")(h)
        h = L.Add(name=f"{name}_add1x1")([h, x])
    elif cout == 2 * cin:
        halves = []
        for suffix in ("", "_b"):
            h = L.Conv2D(cin, 1, use_bias=False, name=f"{name}_conv1x1{suffix}")(x)
            h = L.BatchNormalization(momentum=momentum, name=f"{name}_bn1x1{suffix}")(h)
            halves.append(L.Add(name=f"{name}_add1x1{suffix}")([h, x]))
        h = L.Concatenate(name=f"{name}_concat")(halves)
    else:
        raise ValueError(f"{name}: channels go from {cin} to {cout}; ReActNet-A keeps or doubles them.")
    return L.PReLU(shared_axes=[1, 2], name=f"{name}_prelu1x1")(h)


def reactnet_a_blocks(model):
    """The block partition of a `reactnet_a` model: the convolutions of each block, bottom to top."""
    blocks = {}
    for layer in model.layers:
        if isinstance(layer, L.Conv2D) and layer.name.startswith("block"):
            blocks.setdefault(layer.name.split("_")[0], []).append(layer.name)
    return list(blocks.values())


def small_cnn(*, input_shape=(8, 8, 1), num_classes=10, width=16, bn_momentum=0.9):
    """A tiny CNN for sklearn's digits: stem, two blocks of 3x3 convolutions, pooling, classifier.

    Trains above 95% on digits in seconds; three of its five weight layers are binarized by default.
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for name, filters, stride in (("stem", width, 1), ("block1_a", 2 * width, 1), ("block1_b", 2 * width, 2),
                                  ("block2_a", 4 * width, 1)):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name)(x)
        x = L.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
        x = L.ReLU(name=f"{name}_relu")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, L.Dense(num_classes, name="classifier")(x), name="small_cnn")
