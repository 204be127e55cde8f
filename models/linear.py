"""Linear and deep-linear classifiers, the students of Phuong & Lampert 2019's analysis of distillation."""

from __future__ import annotations

import keras


def _check(num_classes, width, depth, weight_decay) -> None:
    for argument, value in (("num_classes", num_classes), ("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"`{argument}` must be a positive integer. Received: {argument}={value!r}")
    if not weight_decay >= 0:
        raise ValueError(f"`weight_decay` must be >= 0. Received: weight_decay={weight_decay!r}")


def deep_linear(
    num_classes: int,
    input_shape: tuple[int, ...],
    width: int = 64,
    depth: int = 3,
    weight_decay: float = 0.0,
    name: str = "deep_linear",
    **unused,
) -> keras.Model:
    """Builds `logits = W_depth ··· W_2 W_1 x + b`: a product of `depth` matrices with no activation.

    The function class is that of a linear classifier (when `width` is at least the smaller of the input
    and class dimensions); what differs is gradient descent's path through the factored parameters, the
    "optimisation bias" of Phuong & Lampert. Only the last layer has a bias.

    Args:
        num_classes: number of classes `M`.
        input_shape: shape of one input: `(dim,)`, or several axes (an image) flattened into one.
        width: units of every hidden factor.
        depth: number of weight matrices; 1 is the plain linear classifier.
        weight_decay: rate on `tf.nn.l2_loss` (`Σw²/2`) of every kernel.
        name: model name.
        **unused: options meant for other models, ignored.

    Returns:
        A `keras.Model` mapping `[batch, *input_shape]` inputs to `[batch, num_classes]` float32 logits; its last
        layer is named `"logits"`.
    """
    _check(num_classes, width, depth, weight_decay)
    # Keras' `L2(c)` adds `c·Σw²`, so TF's `rate·l2_loss` needs `c = rate / 2`.
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay > 0 else None
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    # Images (or any input of more than one axis) are flattened into one vector of features.
    hidden = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for layer in range(1, depth):
        hidden = keras.layers.Dense(
            width, use_bias=False, kernel_regularizer=regularizer, name=f"factor_{layer}"
        )(hidden)
    logits = keras.layers.Dense(num_classes, kernel_regularizer=regularizer, dtype="float32", name="logits")(
        hidden
    )
    return keras.Model(inputs, logits, name=name)


def linear(
    num_classes: int,
    input_shape: tuple[int, ...],
    weight_decay: float = 0.0,
    name: str = "linear",
    **unused,
) -> keras.Model:
    """Builds the linear classifier `logits = W x + b` (`deep_linear` with one matrix)."""
    return deep_linear(num_classes, input_shape, depth=1, weight_decay=weight_decay, name=name)
