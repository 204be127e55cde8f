"""KD-rel: class relations from a known hierarchy instead of a teacher (paper Suppl. C)."""

import numpy as np

from kd_tf.losses.base import DistillationLoss, check_range, gather_rows, register


def hierarchy_targets(class_parents, rel_target, rel_sibling):
    """`[M, M]` table: row `t` gives `a` to `t`, `b` to its siblings, `c` to every other class.

    `c = (1 - a - |S(t)|·b) / (M - 1 - |S(t)|)` with `S(t)` the other classes under `t`'s parent.
    Raises `ValueError` unless `a ≥ b ≥ c ≥ 0` for every class.
    """
    parents = np.asarray(class_parents).astype(np.int64)
    if parents.ndim != 1 or parents.size < 2:
        raise ValueError(
            f"`class_parents` must be a 1-D array with one parent id per class. Received: shape={parents.shape}"
        )
    num_classes = parents.size
    same_parent = parents[:, None] == parents[None, :]
    siblings = same_parent.sum(axis=1) - 1
    outsiders = num_classes - 1 - siblings
    if np.any(outsiders == 0):
        raise ValueError("`class_parents` puts every class under one parent: KD-rel needs two or more.")
    rest = (1.0 - rel_target - siblings * rel_sibling) / outsiders
    violations = np.flatnonzero((rest < -1e-9) | (rest > rel_sibling + 1e-9))
    if violations.size:
        worst = int(violations[0])
        raise ValueError(
            "`rel_target` >= `rel_sibling` >= c >= 0 must hold for every class, with "
            "c = (1 - rel_target - siblings·rel_sibling) / (M - 1 - siblings). "
            f"Received: rel_target={rel_target}, rel_sibling={rel_sibling}, giving c={rest[worst]:.4g} "
            f"for class {worst} (c ranges over [{rest.min():.4g}, {rest.max():.4g}])."
        )
    # A c within rounding of zero (1 - 0.8 - 4·0.05 is -5.6e-17 in floats) is zero: a negative share makes
    # the soft term's q̃·log q̃ NaN.
    rest = np.maximum(rest, 0.0)
    table = np.where(same_parent, rel_sibling, rest[:, None])
    np.fill_diagonal(table, rel_target)
    return table.astype(np.float32)


@register("kd_rel", label="KD-rel", table_position=7)
class KDRel(DistillationLoss):
    """`q̃_t = a`, `b` for classes sharing `t`'s parent, `c` for the rest (`a ≥ b ≥ c ≥ 0`).

    Args:
        class_parents: `[M]` parent (super-class) id of each class.
        rel_target: `a`, the target class's share.
        rel_sibling: `b`, each sibling's share.
        temperature, alpha: as `DistillationLoss`.
    """

    hyperparameters = ("temperature", "alpha", "rel_target", "rel_sibling")
    needs = frozenset({"class_parents"})

    def __init__(
        self,
        class_parents,
        rel_target=0.5,
        rel_sibling=0.04,
        temperature=4.0,
        alpha=0.9,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        check_range("rel_target", rel_target, 0, 1)
        check_range("rel_sibling", rel_sibling, 0, rel_target)
        super().__init__(temperature=temperature, alpha=alpha, name=name, reduction=reduction)
        self.class_parents = np.asarray(class_parents).astype(np.int64)
        self.rel_target = float(rel_target)
        self.rel_sibling = float(rel_sibling)
        self.relation_table = hierarchy_targets(self.class_parents, rel_target, rel_sibling)

    def payload_size(self, num_classes):
        return 0

    def target_distribution(self, labels, payload, num_classes):
        if self.relation_table.shape[0] != num_classes:
            raise ValueError(
                f"`class_parents` describes {self.relation_table.shape[0]} classes but the logits have "
                f"{num_classes}."
            )
        return gather_rows(self.relation_table, labels)

    def get_config(self):
        return {
            **super().get_config(),
            "class_parents": self.class_parents.tolist(),
            "rel_target": self.rel_target,
            "rel_sibling": self.rel_sibling,
        }
