"""KD-topk: keep the teacher's `k` largest probabilities, spread the rest evenly (paper §5.3)."""

import tensorflow as tf

from kd_tf.losses.base import DistillationLoss, check_range, register


def topk_distribution(topk_probs, topk_indices, num_classes):
    """`q^T_i` for the `k` listed classes, `(1 - Σ top-k)/(M - k)` for every other class."""
    k = topk_probs.shape[-1]
    topk_probs = tf.cast(topk_probs, tf.float32)
    rest = (1.0 - tf.reduce_sum(topk_probs, axis=-1, keepdims=True)) / max(num_classes - k, 1)
    # Write the k kept probabilities into a [rows, M] table of `rest`: a one-hot [..., k, M] would cost
    # k times the logits' memory (a 10,000-word vocabulary at k = 5: 5 × 28 MB per 700-token batch).
    leading_shape = tf.shape(topk_probs)[:-1]
    rows = tf.reduce_prod(leading_shape)
    row_ids = tf.broadcast_to(tf.range(rows)[:, None], tf.stack([rows, k]))
    class_ids = tf.reshape(tf.cast(topk_indices, tf.int32), tf.stack([rows, k]))
    table = tf.broadcast_to(tf.reshape(tf.maximum(rest, 0.0), [-1, 1]), tf.stack([rows, num_classes]))
    table = tf.tensor_scatter_nd_update(
        table, tf.stack([row_ids, class_ids], axis=-1), tf.reshape(topk_probs, tf.stack([rows, k]))
    )
    return tf.reshape(table, tf.concat([leading_shape, [num_classes]], axis=0))


@register("kd_topk", label="KD-topk", table_position=6)
class KDTopK(DistillationLoss):
    """`q̃_i = q^T_i` for the `topk` most likely classes, the remaining mass uniform over the others.

    The payload is `2k` numbers per example: the `k` probabilities at `temperature`, then their indices.

    Args:
        topk: `k ≥ 1` (must not exceed the number of classes).
        temperature, alpha: as `DistillationLoss`.
    """

    hyperparameters = ("temperature", "alpha", "topk")

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

    def check_num_classes(self, num_classes):
        if self.topk > num_classes:
            raise ValueError(
                f"`topk` must be <= the number of classes ({num_classes}). Received: topk={self.topk}"
            )

    def payload_size(self, num_classes):
        self.check_num_classes(num_classes)
        return 2 * self.topk

    def teacher_payload(self, labels, teacher_logits):
        probs = tf.nn.softmax(tf.cast(teacher_logits, tf.float32) / self.temperature, axis=-1)
        values, indices = tf.math.top_k(probs, k=self.topk)
        return tf.concat([values, tf.cast(indices, tf.float32)], axis=-1)

    def target_distribution(self, labels, payload, num_classes):
        self.check_num_classes(num_classes)
        return topk_distribution(payload[..., : self.topk], payload[..., self.topk :], num_classes)

    def get_config(self):
        return {**super().get_config(), "topk": self.topk}
