"""CIFAR ResNets of depth 6n+2: pre-activation (v2, TF legacy `research/resnet`) and post-activation (v1)."""

from __future__ import annotations

import keras

STAGE_FILTERS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
VARIANTS = ("v2", "v1")

# Per variant: (BN momentum, BN epsilon, default leaky-ReLU slope).
# v2 is TF's legacy `research/resnet` (the code the paper cites): BN decay 0.9, epsilon 1e-3 and a leaky
# ReLU of slope 0.1. v1 is TF2's `official/benchmark/models/resnet_cifar_model.py`: 0.997, 1e-5, plain ReLU.
_VARIANT_DEFAULTS = {"v2": (0.9, 1e-3, 0.1), "v1": (0.997, 1e-5, 0.0)}


@keras.saving.register_keras_serializable(package="kd_tf")
class ZeroPadChannels(keras.layers.Layer):
    """Appends zero channels on both sides of the channel axis (the "option A" shortcut of He et al.)."""

    def __init__(self, before: int, after: int, **kwargs):
        super().__init__(**kwargs)
        if before < 0 or after < 0:
            raise ValueError(f"`before` and `after` must be >= 0. Received: before={before}, after={after}")
        self.before = before
        self.after = after

    def call(self, inputs):
        return keras.ops.pad(inputs, [[0, 0], [0, 0], [0, 0], [self.before, self.after]])

    def compute_output_shape(self, input_shape):
        channels = input_shape[-1]
        if channels is not None:
            channels += self.before + self.after
        return (*input_shape[:-1], channels)

    def get_config(self):
        return {**super().get_config(), "before": self.before, "after": self.after}


def _l2(weight_decay: float):
    # `weight_decay` is TF's rate on `tf.nn.l2_loss(w) = sum(w**2) / 2` (the legacy code's and the paper's
    # convention), while Keras' `L2(c)` adds `c * sum(w**2)`: the same penalty needs `c = weight_decay / 2`.
    return keras.regularizers.L2(weight_decay / 2) if weight_decay > 0 else None


class _Layers:
    """Layer factories with one variant's initialisers, BN constants and regulariser."""

    def __init__(self, variant: str, weight_decay: float, relu_leakiness: float, sync_batch_norm: bool):
        momentum, epsilon, _ = _VARIANT_DEFAULTS[variant]
        self.sync_batch_norm = sync_batch_norm
        self.variant = variant
        self.momentum = momentum
        self.epsilon = epsilon
        self.regularizer = _l2(weight_decay)
        self.relu_leakiness = relu_leakiness
        if variant == "v2":
            # The legacy code draws conv kernels from N(0, 2 / (k * k * out_channels)): He-normal on fan-out,
            # untruncated; its dense kernel is `uniform_unit_scaling(1.0)`, i.e. U(+-sqrt(3 / fan_in)).
            self.conv_initializer = keras.initializers.VarianceScaling(
                2.0, mode="fan_out", distribution="untruncated_normal"
            )
            self.dense_initializer = keras.initializers.VarianceScaling(
                1.0, mode="fan_in", distribution="uniform"
            )
            # The legacy decay covers only variables named `DW` (conv and dense kernels), not the bias.
            self.bias_regularizer = None
        else:
            self.conv_initializer = keras.initializers.HeNormal()
            self.dense_initializer = keras.initializers.RandomNormal(stddev=0.01)
            self.bias_regularizer = self.regularizer

    def conv(self, filters: int, kernel_size: int, strides: int, name: str):
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=strides,
            padding="same",
            use_bias=False,
            kernel_initializer=self.conv_initializer,
            kernel_regularizer=self.regularizer,
            name=name,
        )

    def batch_norm(self, name: str):
        return keras.layers.BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, synchronized=self.sync_batch_norm, name=name
        )

    def relu(self, name: str):
        if self.relu_leakiness == 0:
            return keras.layers.ReLU(name=name)
        return keras.layers.LeakyReLU(negative_slope=self.relu_leakiness, name=name)

    def bn_relu(self, inputs, name: str):
        return self.relu(f"{name}_relu")(self.batch_norm(f"{name}_bn")(inputs))

    def logits(self, num_classes: int):
        # float32 even under a mixed-precision policy: the losses take log-softmax of these logits.
        return keras.layers.Dense(
            num_classes,
            kernel_initializer=self.dense_initializer,
            kernel_regularizer=self.regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype="float32",
            name="logits",
        )


def _preactivation_unit(layers: _Layers, inputs, filters: int, strides: int, first: bool, name: str):
    """BN-ReLU -> conv(strides) -> BN-ReLU -> conv, plus an identity or pool-and-pad shortcut."""
    activated = layers.bn_relu(inputs, f"{name}_preact")
    # The very first unit after the stem shares its activation with the shortcut ("activate before
    # residual"); every other unit adds its raw input, as in the legacy code.
    shortcut = activated if first else inputs
    x = layers.conv(filters, 3, strides, f"{name}_conv1")(activated)
    x = layers.bn_relu(x, f"{name}_mid")
    x = layers.conv(filters, 3, 1, f"{name}_conv2")(x)
    in_filters = inputs.shape[-1]
    if in_filters != filters:
        shortcut = keras.layers.AveragePooling2D(
            pool_size=strides, strides=strides, padding="valid", name=f"{name}_shortcut_pool"
        )(shortcut)
        extra = filters - in_filters
        shortcut = ZeroPadChannels(extra // 2, extra - extra // 2, name=f"{name}_shortcut_pad")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])


def _postactivation_block(layers: _Layers, inputs, filters: int, strides: int, project: bool, name: str):
    """conv(strides)-BN-ReLU -> conv-BN, plus an identity or 1x1-projection shortcut, then ReLU."""
    x = layers.conv(filters, 3, strides, f"{name}_conv1")(inputs)
    x = layers.relu(f"{name}_relu1")(layers.batch_norm(f"{name}_bn1")(x))
    x = layers.conv(filters, 3, 1, f"{name}_conv2")(x)
    x = layers.batch_norm(f"{name}_bn2")(x)
    shortcut = inputs
    if project:
        shortcut = layers.conv(filters, 1, strides, f"{name}_shortcut_conv")(inputs)
        shortcut = layers.batch_norm(f"{name}_shortcut_bn")(shortcut)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return layers.relu(f"{name}_out")(x)


def resnet(
    depth: int,
    num_classes: int,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    weight_decay: float = 2e-4,
    variant: str = "v2",
    relu_leakiness: float | None = None,
    name: str | None = None,
    sync_batch_norm: bool = False,
) -> keras.Model:
    """Builds a CIFAR ResNet of `depth = 6n + 2` layers that outputs float32 logits.

    `variant="v2"` (the default) is the pre-activation network of TF's legacy `research/resnet`, which the
    paper cites: stem 3x3 conv 16; three stages of `n` units (filters 16/32/64, strides 1/2/2), each unit
    BN-ReLU -> 3x3 conv -> BN-ReLU -> 3x3 conv -> add, with a 2x2 average pool plus zero-channel padding as the
    shortcut where the width changes; head BN-ReLU -> global average pool -> dense. `variant="v1"` is the
    post-activation network of TF2's `official/benchmark/models/resnet_cifar_model.py` (1x1 projection
    shortcut at the start of every stage).

    Args:
        depth: number of weighted layers, `6n + 2` (20, 32, 44, 56, 110, ...).
        num_classes: number of output logits `M`.
        input_shape: `(height, width, channels)` of one image.
        weight_decay: L2 rate in TF's convention, `weight_decay * sum(w**2) / 2` over the conv and dense
            kernels (and the dense bias in v1), added to `model.losses`. Defaults to 2e-4, the legacy
            code's rate. The v1 source's Keras `L2(2e-4)` corresponds to `weight_decay=4e-4`.
        variant: `"v2"` (pre-activation, legacy) or `"v1"` (post-activation, TF2 Keras official).
        relu_leakiness: negative slope of the ReLUs. Defaults to each source's: 0.1 for v2, 0 for v1.
        name: model name; defaults to `resnet{depth}` (`resnet{depth}_v1` for v1).
        sync_batch_norm: batch statistics over every replica's examples (an all-reduce per BN layer)
            instead of each replica's own.

    Returns:
        A `keras.Model` mapping `[batch, *input_shape]` images to `[batch, num_classes]` float32 logits;
        the logit layer is named `"logits"` (kernel shape `(64, num_classes)`).

    Example:
        >>> model = resnet(20, num_classes=100)
        >>> model.output.shape
        (None, 100)
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"`depth` must be 6n+2 with n >= 1. Received: depth={depth}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive integer. Received: num_classes={num_classes}")
    if len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be (height, width, channels). Received: input_shape={input_shape}"
        )
    if weight_decay < 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay}")
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    if relu_leakiness is None:
        relu_leakiness = _VARIANT_DEFAULTS[variant][2]
    if not 0 <= relu_leakiness < 1:
        raise ValueError(f"`relu_leakiness` must be in [0, 1). Received: relu_leakiness={relu_leakiness}")

    # depth = 6n + 2: the stem conv, three stages of n two-conv units, the dense layer.
    units_per_stage = (depth - 2) // 6
    layers = _Layers(variant, weight_decay, relu_leakiness, sync_batch_norm)
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = layers.conv(STAGE_FILTERS[0], 3, 1, "stem_conv")(inputs)
    if variant == "v1":
        x = layers.relu("stem_relu")(layers.batch_norm("stem_bn")(x))

    stages = zip(STAGE_FILTERS, STAGE_STRIDES, strict=True)
    for stage, (filters, stage_strides) in enumerate(stages, start=1):
        for unit in range(units_per_stage):
            strides = stage_strides if unit == 0 else 1
            unit_name = f"stage{stage}_unit{unit + 1}"
            if variant == "v2":
                first = stage == 1 and unit == 0
                x = _preactivation_unit(layers, x, filters, strides, first, unit_name)
            else:
                x = _postactivation_block(layers, x, filters, strides, unit == 0, unit_name)

    if variant == "v2":
        x = layers.bn_relu(x, "head")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = layers.logits(num_classes)(x)
    if name is None:
        name = f"resnet{depth}" if variant == "v2" else f"resnet{depth}_v1"
    return keras.Model(inputs, logits, name=name)


def resnet8(num_classes: int, **options) -> keras.Model:
    """ResNet-8 (n = 1, one unit a stage: a small student); `options` as in `resnet`."""
    return resnet(8, num_classes, **options)


def resnet20(num_classes: int, **options) -> keras.Model:
    """ResNet-20 (n = 3, the paper's CIFAR student); `options` as in `resnet`."""
    return resnet(20, num_classes, **options)


def resnet32(num_classes: int, **options) -> keras.Model:
    """ResNet-32 (n = 5); `options` as in `resnet`."""
    return resnet(32, num_classes, **options)


def resnet56(num_classes: int, **options) -> keras.Model:
    """ResNet-56 (n = 9, the paper's CIFAR teacher); `options` as in `resnet`."""
    return resnet(56, num_classes, **options)


def resnet110(num_classes: int, **options) -> keras.Model:
    """ResNet-110 (n = 18); `options` as in `resnet`."""
    return resnet(110, num_classes, **options)
