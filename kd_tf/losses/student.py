"""Student: plain cross-entropy on the labels, the baseline every method is measured against."""

import tensorflow as tf

from kd_tf.losses.base import DistillationLoss, register


@register("student", label="Student", table_position=0)
class Student(DistillationLoss):
    """Cross-entropy `H(y, p)` with no teacher (`alpha = 0`).

    Its `teacher_distribution` is the one-hot label, the target plain cross-entropy trains toward.

    Example:
    >>> loss = kd_tf.losses.get("student")
    >>> loss([0, 2], [[2.0, 1.0, 0.1], [0.5, 0.5, 3.0]])
    """

    hyperparameters = ()

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(temperature=1.0, alpha=0.0, name=name, reduction=reduction)

    def payload_size(self, num_classes):
        return 0

    def target_distribution(self, labels, payload, num_classes):
        return tf.one_hot(labels, num_classes, dtype=tf.float32)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}
