"""KD (Hinton et al. 2015): the student matches the teacher's whole softened distribution `q^T`."""

import tensorflow as tf

from kd_tf.losses.base import DistillationLoss, register


@register("kd", label="KD", table_position=2)
class KD(DistillationLoss):
    """`q̃ = q^T = softmax(teacher_logits / T)`; needs all `M` teacher logits per example.

    Example:
    >>> loss = kd_tf.losses.get("kd", temperature=4.0, alpha=0.9)
    >>> loss.per_example(labels, teacher_logits, student_logits)  # [batch]
    """

    def __init__(self, temperature=4.0, alpha=0.9, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(temperature=temperature, alpha=alpha, name=name, reduction=reduction)

    def target_distribution(self, labels, payload, num_classes):
        return tf.nn.softmax(payload / self.temperature, axis=-1)
