"""LS: label smoothing (Szegedy et al. 2016), KD with a uniform teacher at `T = 1` and `λ = ε`."""

import tensorflow as tf

from kd_tf.losses.base import DistillationLoss, check_range, register


@register("ls", label="LS", table_position=1)
class LabelSmoothing(DistillationLoss):
    """`(1 - ε)·H(y, p) + ε·KL(u ‖ p)` with `u` uniform over the `M` classes.

    Equals cross-entropy against `y_LS = (1 - ε)·y + ε/M` up to a constant, so it has the same gradient.

    Args:
        label_smoothing: `ε` in [0, 1]; the weight of the uniform target.
    """

    hyperparameters = ("label_smoothing",)

    def __init__(self, label_smoothing=0.1, name=None, reduction="sum_over_batch_size", dtype=None):
        check_range("label_smoothing", label_smoothing, 0, 1)
        super().__init__(temperature=1.0, alpha=label_smoothing, name=name, reduction=reduction)
        self.label_smoothing = float(label_smoothing)

    def payload_size(self, num_classes):
        return 0

    def target_distribution(self, labels, payload, num_classes):
        shape = tf.concat([tf.shape(labels), [num_classes]], axis=0)
        return tf.fill(shape, 1.0 / num_classes)

    def get_config(self):
        return {
            "name": self.name,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
        }
