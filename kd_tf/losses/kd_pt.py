"""KD-pt: keep only the teacher's probability of the ground truth, `q^T_t` (paper §4)."""

import tensorflow as tf

from kd_tf.losses.base import DistillationLoss, register, uniform_except_target


def target_probability(labels, teacher_logits, temperature):
    """The teacher's softened probability of the ground-truth class, `q^T_t`, shape `[...]`."""
    log_probs = tf.nn.log_softmax(tf.cast(teacher_logits, tf.float32) / temperature, axis=-1)
    return tf.exp(tf.gather(log_probs, labels, axis=-1, batch_dims=labels.shape.rank))


@register("kd_pt", label="KD-pt", table_position=3)
class KDPt(DistillationLoss):
    """`q̃_t = q^T_t`, `q̃_i = (1 - q^T_t)/(M - 1)` for `i ≠ t`: gradient rescaling without class relations.

    The teacher payload is one number per example, `q^T_t`.
    """

    def __init__(self, temperature=4.0, alpha=0.9, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(temperature=temperature, alpha=alpha, name=name, reduction=reduction)

    def payload_size(self, num_classes):
        return 1

    def teacher_payload(self, labels, teacher_logits):
        return target_probability(labels, teacher_logits, self.temperature)[..., None]

    def target_distribution(self, labels, payload, num_classes):
        return uniform_except_target(labels, payload[..., 0], num_classes)
