"""Residual tanh MLP with cosine logits: the synthetic experiment's teacher and student (paper §5.1)."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kd_tf")
class CosineLogits(keras.layers.Layer):
    """Logits `scale · cos(h, w_m)`: ℓ2-normalised inputs times ℓ2-normalised class vectors.

    Ranjan et al. 2017 and Zhang et al. 2018 normalise both sides of the logit layer; the paper found it
    steadier on the synthetic task. The kernel has shape `(input_dim, units)`, so class `m`'s vector is its
    column `m`, as for a `Dense` logit layer. The scale is a fixed constant, not a weight: a learnable one
    grows to make the training loss small and so sharpens the teacher's outputs during training, which
    would change what a distillation temperature means from one run to the next.

    Args:
        units: number of classes.
        scale: positive factor on the cosines; every logit lies in `[-scale, scale]`.
        kernel_initializer: initialiser of the class vectors.
        epsilon: added under the square root of the squared norms, so a zero vector maps to 0.
    """

    def __init__(
        self,
        units: int,
        scale: float = 16.0,
        kernel_initializer="glorot_uniform",
        epsilon: float = 1e-12,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units <= 0:
            raise ValueError(f"`units` must be a positive integer. Received: units={units!r}")
        if not scale > 0:
            raise ValueError(f"`scale` must be > 0. Received: scale={scale!r}")
        self.units = units
        self.scale = float(scale)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
        )

    def call(self, inputs):
        unit_inputs = _l2_normalize(inputs, axis=-1, epsilon=self.epsilon)
        unit_kernel = _l2_normalize(ops.cast(self.kernel, inputs.dtype), axis=0, epsilon=self.epsilon)
        return self.scale * ops.matmul(unit_inputs, unit_kernel)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            scale=self.scale,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            epsilon=self.epsilon,
        )
        return config


def _l2_normalize(values, axis: int, epsilon: float):
    return values * ops.rsqrt(ops.sum(ops.square(values), axis=axis, keepdims=True) + epsilon)


def mlp(
    num_classes: int,
    input_shape: tuple[int, ...],
    width: int = 64,
    depth: int = 2,
    logit_scale: float = 16.0,
    weight_decay: float = 0.0,
    name: str = "mlp",
    sync_batch_norm: bool = False,
    **unused,
) -> keras.Model:
    """Builds the residual tanh network with batch normalisation and cosine logits.

    Each of the `depth` hidden layers computes `h ← shortcut(h) + tanh(BN(Dense(h)))`. The shortcut is the
    identity, except where the width changes (the first layer, when `input_shape[-1] != width`): there it is
    a bias-free linear projection, He et al. 2016's option B. The projection keeps a linear path from the
    input to the logits, which is exactly what the synthetic task's difficulty-0 labels need. The
    penultimate activations and the class vectors are ℓ2-normalised in the `CosineLogits` layer named
    `"logits"`, which computes in float32 under any mixed-precision policy.

    Args:
        num_classes: number of classes `M`.
        input_shape: shape of one input, `(dim,)`.
        width: units of every hidden layer (the teacher wide, the student narrow).
        depth: number of hidden layers (the paper's network has 2).
        logit_scale: fixed scale of the cosine logits.
        weight_decay: rate on `tf.nn.l2_loss` (`Σw²/2`) of the hidden and projection kernels; 0 (the
            paper's synthetic setting) adds no penalty. The logit kernel is left out: its norm does not
            reach the cosine logits.
        name: model name.
        sync_batch_norm: batch statistics over the global batch of every replica (an all-reduce per BN
            layer) instead of each replica's own part; data-parallel training then makes one process's update.
        **unused: options meant for other models, ignored.

    Returns:
        A `keras.Model` mapping `[batch, dim]` inputs to `[batch, num_classes]` float32 logits.
    """
    for argument, value in (("num_classes", num_classes), ("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{argument}` must be a positive integer. Received: {argument}={value!r}")
    if not logit_scale > 0:
        raise ValueError(f"`logit_scale` must be > 0. Received: logit_scale={logit_scale!r}")
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay!r}")
    # Keras' `L2(c)` adds `c·Σw²`, so TF's `rate·l2_loss` needs `c = rate / 2`.
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay > 0 else None
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    hidden = inputs
    for layer in range(1, depth + 1):
        branch = keras.layers.Dense(
            width, use_bias=False, kernel_regularizer=regularizer, name=f"dense_{layer}"
        )(hidden)
        branch = keras.layers.BatchNormalization(synchronized=sync_batch_norm, name=f"batch_norm_{layer}")(
            branch
        )
        branch = keras.layers.Activation("tanh", name=f"tanh_{layer}")(branch)
        if hidden.shape[-1] == width:
            shortcut = hidden
        else:
            shortcut = keras.layers.Dense(
                width, use_bias=False, kernel_regularizer=regularizer, name=f"projection_{layer}"
            )(hidden)
        hidden = keras.layers.Add(name=f"residual_{layer}")([shortcut, branch])
    logits = CosineLogits(num_classes, scale=logit_scale, dtype="float32", name="logits")(hidden)
    return keras.Model(inputs, logits, name=name)
