"""ImageNet ResNet v1.5 (bottleneck stride on the 3x3 conv), as the TF TPU official ResNet-50/101/152."""

from __future__ import annotations

import keras

# Depth -> bottleneck blocks in each of the four groups (He et al. 2016, Table 1).
RESNET_SPECS = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
GROUP_FILTERS = (64, 128, 256, 512)
GROUP_STRIDES = (1, 2, 2, 2)
BOTTLENECK_EXPANSION = 4
BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5


def resnet(
    resnet_depth: int,
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    weight_decay: float = 1e-4,
    batch_norm_momentum: float = BATCH_NORM_MOMENTUM,
    batch_norm_epsilon: float = BATCH_NORM_EPSILON,
    name: str | None = None,
    sync_batch_norm: bool = False,
    **unused,
) -> keras.Model:
    """Builds a post-activation bottleneck ResNet for ImageNet-sized inputs.

    Stem: 7x7/2 conv with 64 filters → BN → ReLU → 3x3/2 max pool. Then four groups of bottleneck blocks
    (widths 64/128/256/512, output 4x wider, strides 1/2/2/2). A block is 1x1 conv → BN-ReLU → 3x3 conv
    carrying the stride → BN-ReLU → 1x1 conv → BN (gamma initialised to 0, Goyal et al. 2017, so every
    block starts as the identity) → add the shortcut → ReLU. Each group's first block has a projection
    shortcut (strided 1x1 conv → BN). Head: global average pool → `Dense` named `"logits"`.

    Choices taken from the TPU code: a strided conv pads `kernel_size - 1` pixels explicitly (half before,
    half after) and then convolves VALID, so the padding does not depend on the input size; stride-1 convs
    use SAME. Convs have no bias and are initialised with `VarianceScaling()` (scale 1, fan-in, truncated
    normal: the defaults of `tf.variance_scaling_initializer()`); the logit layer with N(0, 0.01²) and a
    zero bias. BN momentum 0.9 and epsilon 1e-5.

    Weight decay: the TPU code adds `weight_decay · Σ tf.nn.l2_loss(v) = weight_decay · Σ v²/2` over every
    trainable variable that is not a BN parameter (conv kernels, the logit kernel and the logit bias). Keras'
    `L2(l2)` adds `l2 · Σ v²`, so each of those variables carries `L2(weight_decay / 2)`; the penalty
    appears in `model.losses`, which `fit` adds to the training loss.

    Args:
        resnet_depth: 50, 101 or 152.
        num_classes: units of the logit layer.
        input_shape: `(height, width, 3)`; the parameter count does not depend on the spatial size.
        weight_decay: the TPU code's decay factor (1e-4); 0 attaches no regulariser.
        batch_norm_momentum: moving-average momentum of every BN layer.
        batch_norm_epsilon: variance epsilon of every BN layer.
        name: model name; `resnet{resnet_depth}` by default.
        sync_batch_norm: batch statistics over every replica's examples (an all-reduce per BN layer)
            instead of each replica's own, as the TPU code computed them.
        **unused: options meant for other models, ignored.

    Returns:
        A `keras.Model` mapping `[batch, height, width, 3]` images to `[batch, num_classes]` logits,
        float32 under any mixed-precision policy.
    """
    if resnet_depth not in RESNET_SPECS:
        raise ValueError(
            f"`resnet_depth` must be one of {sorted(RESNET_SPECS)}. Received: resnet_depth={resnet_depth!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes!r}")
    if len(tuple(input_shape)) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape!r}"
        )
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay!r}")
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay > 0 else None

    def batch_norm(values, layer_name, zero_gamma=False):
        return keras.layers.BatchNormalization(
            momentum=batch_norm_momentum,
            epsilon=batch_norm_epsilon,
            gamma_initializer="zeros" if zero_gamma else "ones",
            synchronized=sync_batch_norm,
            name=layer_name,
        )(values)

    def conv(values, filters, kernel_size, strides, layer_name):
        return _fixed_padding_conv(values, filters, kernel_size, strides, regularizer, layer_name)

    inputs = keras.Input(shape=tuple(input_shape), name="images")
    hidden = conv(inputs, 64, 7, 2, "stem_conv")
    hidden = batch_norm(hidden, "stem_bn")
    hidden = keras.layers.ReLU(name="stem_relu")(hidden)
    hidden = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(hidden)

    for group, (blocks, filters, group_stride) in enumerate(
        zip(RESNET_SPECS[resnet_depth], GROUP_FILTERS, GROUP_STRIDES, strict=True), start=1
    ):
        for block in range(1, blocks + 1):
            prefix = f"group{group}_block{block}"
            strides = group_stride if block == 1 else 1
            if block == 1:
                shortcut = conv(hidden, BOTTLENECK_EXPANSION * filters, 1, strides, f"{prefix}_projection")
                shortcut = batch_norm(shortcut, f"{prefix}_projection_bn")
            else:
                shortcut = hidden
            branch = conv(hidden, filters, 1, 1, f"{prefix}_conv1")
            branch = batch_norm(branch, f"{prefix}_bn1")
            branch = keras.layers.ReLU(name=f"{prefix}_relu1")(branch)
            branch = conv(branch, filters, 3, strides, f"{prefix}_conv2")
            branch = batch_norm(branch, f"{prefix}_bn2")
            branch = keras.layers.ReLU(name=f"{prefix}_relu2")(branch)
            branch = conv(branch, BOTTLENECK_EXPANSION * filters, 1, 1, f"{prefix}_conv3")
            branch = batch_norm(branch, f"{prefix}_bn3", zero_gamma=True)
            hidden = keras.layers.Add(name=f"{prefix}_add")([shortcut, branch])
            hidden = keras.layers.ReLU(name=f"{prefix}_out")(hidden)

    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(hidden)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        kernel_regularizer=regularizer,
        bias_regularizer=regularizer,
        dtype="float32",
        name="logits",
    )(features)
    return keras.Model(inputs, logits, name=name or f"resnet{resnet_depth}")


def _fixed_padding_conv(values, filters, kernel_size, strides, regularizer, layer_name):
    """A bias-free conv whose strided form pads `kernel_size - 1` explicitly, then convolves VALID."""
    if strides > 1 and kernel_size > 1:
        pad_total = kernel_size - 1
        pad_before = pad_total // 2
        padding = (pad_before, pad_total - pad_before)
        values = keras.layers.ZeroPadding2D((padding, padding), name=f"{layer_name}_pad")(values)
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(),
        kernel_regularizer=regularizer,
        name=layer_name,
    )(values)


def resnet50(num_classes=1000, input_shape=(224, 224, 3), weight_decay=1e-4, **kw) -> keras.Model:
    """ResNet-50 v1.5: blocks [3, 4, 6, 3], 25,557,032 trainable parameters with 1000 classes."""
    return resnet(50, num_classes, input_shape, weight_decay, **kw)


def resnet101(num_classes=1000, input_shape=(224, 224, 3), weight_decay=1e-4, **kw) -> keras.Model:
    """ResNet-101 v1.5: blocks [3, 4, 23, 3], 44,549,160 trainable parameters with 1000 classes."""
    return resnet(101, num_classes, input_shape, weight_decay, **kw)


def resnet152(num_classes=1000, input_shape=(224, 224, 3), weight_decay=1e-4, **kw) -> keras.Model:
    """ResNet-152 v1.5: blocks [3, 8, 36, 3], 60,192,808 trainable parameters with 1000 classes."""
    return resnet(152, num_classes, input_shape, weight_decay, **kw)
