"""KD-topk: keep the teacher's `k` largest probabilities, spread the rest evenly (paper §5.3)."""

import tensorflow as tf

from kd_tf.losses.base import DistillationLoss, check_range, register


def topk_distribution(topk_probs, topk_indices, num_classes):
    """`q^T_i` for the `k` listed classes, `(1 - Σ top-k)/(M - k)` for every other class."""
    k = topk_probs.shape[-1]
    one_hot = tf.one_hot(tf.cast(topk_indices, tf.int32), num_classes, dtype=tf.float32)  # [..., k, M]
    rest = (1.0 - tf.reduce_sum(topk_probs, axis=-1, keepdims=True)) / max(num_classes - k, 1)
    kept = tf.reduce_sum(one_hot * topk_probs[..., None], axis=-2)
    return kept + (1.0 - tf.reduce_sum(one_hot, axis=-2)) * tf.maximum(rest, 0.0)


@register("kd_topk")
class KDTopK(DistillationLoss):
    """`q̃_i = q^T_i` for the `topk` most likely classes, the remaining mass uniform over the others.

    The payload is `2k` numbers per example: the `k` probabilities at `temperature`, then their indices.

    Args:
        topk: `k ≥ 1` (must not exceed the number of classes).
        temperature, alpha: as `DistillationLoss`.
    """

    def __init__(
        self,
        topk=5,
        temperature=4.0,
        alpha=0.9,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        if int(topk) != topk:
            raise ValueError(f"`topk` must be an integer. Received: topk={topk}")
        check_range("topk", topk, low=1)
        super().__init__(temperature=temperature, alpha=alpha, name=name, reduction=reduction)
        self.topk = int(topk)

    def _check(self, num_classes):
        if self.topk > num_classes:
            raise ValueError(
                f"`topk` must be <= the number of classes ({num_classes}). Received: topk={self.topk}"
            )

    def payload_size(self, num_classes):
        self._check(num_classes)
        return 2 * self.topk

    def teacher_payload(self, labels, teacher_logits):
        probs = tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / self.temperature, axis=-1)
        values, indices = tf.math.top_k(probs, k=self.topk)
        return tf.concat([values, tf.cast(indices, tf.float32)], axis=-1)

    def target_distribution(self, labels, payload, num_classes):
        self._check(num_classes)
        return topk_distribution(payload[..., : self.topk], payload[..., self.topk :], num_classes)

    def get_config(self):
        return {**super().get_config(), "topk": self.topk}
