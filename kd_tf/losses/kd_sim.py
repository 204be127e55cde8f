"""KD-sim: class relations from the cosine similarity of the teacher's logit-layer weights (paper §4)."""

import numpy as np

from kd_tf.losses.base import DistillationLoss, check_range, gather_rows, register


def cosine_similarities(class_vectors) -> np.ndarray:
    """`[M, M]` cosines (float64) between the class vectors, the columns of a `(h, M)` logit-layer kernel."""
    kernel = np.asarray(class_vectors, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"`class_vectors` must have shape (h, M). Received: shape={kernel.shape}")
    unit = kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    return np.clip(unit.T @ unit, -1.0, 1.0)


def similarity_targets(class_vectors, sim_power=1.0, sim_temperature=1.0):
    """`[M, M]` table whose row `t` is `softmax(sign(s)·|s|^ρ / T_sim)`, `s` = cosines of class `t`'s vector.

    Args:
        class_vectors: the teacher's logit-layer kernel, shape `(h, M)`: class vectors are its columns.
        sim_power: `ρ ≥ 1`, sharpens the similarity.
        sim_temperature: `T_sim > 0`.
    """
    cosine = cosine_similarities(class_vectors)
    scores = np.sign(cosine) * np.abs(cosine) ** sim_power / sim_temperature
    scores -= scores.max(axis=1, keepdims=True)
    table = np.exp(scores)
    return (table / table.sum(axis=1, keepdims=True)).astype(np.float32)


@register("kd_sim", label="KD-sim", table_position=4)
class KDSim(DistillationLoss):
    """`q̃ = softmax(sign(s)·|s|^ρ / T_sim)`, `s_i = cos(ŵ_t, ŵ_i)` over the teacher's class vectors.

    Nothing is needed from the teacher per example: the `M × M` table is computed once.

    Args:
        class_vectors: teacher logit-layer kernel `(h, M)` (see `kd_tf.class_vectors(teacher)`).
        sim_power: `ρ ≥ 1` (default 1).
        sim_temperature: `T_sim > 0` (default 1).
        temperature, alpha: as `DistillationLoss`.
    """

    hyperparameters = ("temperature", "alpha", "sim_power", "sim_temperature")
    needs = frozenset({"class_vectors"})

    def __init__(
        self,
        class_vectors,
        sim_power=1.0,
        sim_temperature=1.0,
        temperature=4.0,
        alpha=0.9,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        check_range("sim_power", sim_power, low=1)
        check_range("sim_temperature", sim_temperature, low=0, low_inclusive=False)
        super().__init__(temperature=temperature, alpha=alpha, name=name, reduction=reduction)
        self.class_vectors = np.asarray(class_vectors, dtype=np.float32)
        self.sim_power = float(sim_power)
        self.sim_temperature = float(sim_temperature)
        self.similarity_table = similarity_targets(self.class_vectors, sim_power, sim_temperature)

    def payload_size(self, num_classes):
        return 0

    def target_distribution(self, labels, payload, num_classes):
        _check_classes(self.similarity_table, num_classes, "class_vectors")
        return gather_rows(self.similarity_table, labels)

    def get_config(self):
        return {
            **super().get_config(),
            "class_vectors": self.class_vectors.tolist(),
            "sim_power": self.sim_power,
            "sim_temperature": self.sim_temperature,
        }


def _check_classes(table, num_classes, argument):
    if table.shape[0] != num_classes:
        raise ValueError(
            f"`{argument}` describes {table.shape[0]} classes but the logits have {num_classes}."
        )
