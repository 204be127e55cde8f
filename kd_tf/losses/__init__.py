"""Every method of the paper as a Keras `Loss`, reachable by its flag name through `get`."""

from kd_tf.losses import kd, kd_pt, kd_rel, kd_sim, kd_topk, ls, mixes, student  # noqa: F401 (registers)
from kd_tf.losses.base import DistillationLoss, pack_targets, registered
from kd_tf.losses.kd import KD
from kd_tf.losses.kd_pt import KDPt
from kd_tf.losses.kd_rel import KDRel
from kd_tf.losses.kd_sim import KDSim
from kd_tf.losses.kd_topk import KDTopK
from kd_tf.losses.ls import LabelSmoothing
from kd_tf.losses.mixes import KDPtRel, KDPtSim
from kd_tf.losses.student import Student

# Flag names in the order of the paper's tables.
NAMES = ("student", "ls", "kd", "kd_pt", "kd_sim", "kd_pt_sim", "kd_topk", "kd_rel", "kd_pt_rel")

# What each method needs when it is built (beyond its hyperparameters).
NEEDS_CLASS_VECTORS = ("kd_sim", "kd_pt_sim")
NEEDS_CLASS_PARENTS = ("kd_rel", "kd_pt_rel")


def label(name: str) -> str:
    """The paper's name of the method registered under the flag name `name` ("kd_pt" -> "KD-pt")."""
    methods = registered()
    return methods[name].paper_label if name in methods else name


def get(name: str, **hyperparameters) -> DistillationLoss:
    """Returns the loss registered under the flag name `name`, built with `hyperparameters`.

    Example:
    >>> kd_tf.losses.get("kd_topk", topk=5, temperature=4.0, alpha=0.9)
    """
    methods = registered()
    if name not in methods:
        raise ValueError(f"Unknown method {name!r}. Known methods: {', '.join(methods)}.")
    return methods[name](**hyperparameters)


__all__ = [
    "KD",
    "NAMES",
    "DistillationLoss",
    "KDPt",
    "KDPtRel",
    "KDPtSim",
    "KDRel",
    "KDSim",
    "KDTopK",
    "LabelSmoothing",
    "Student",
    "get",
    "label",
    "pack_targets",
    "registered",
]
