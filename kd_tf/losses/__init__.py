"""Every method of the paper as a Keras `Loss`, reachable by its flag name through `get`.

Each module of this package is imported here, so a loss class registered (`base.register`) in a new file
`kd_tf/losses/<name>.py` is a method of `get`, `NAMES` and `run.py --method` with no other edit. Its class
says what a run needs to build it (`hyperparameters`, `needs`).
"""

import importlib
import pkgutil

from kd_tf.losses.base import DistillationLoss, pack_targets, registered
from kd_tf.losses.kd import KD
from kd_tf.losses.kd_pt import KDPt
from kd_tf.losses.kd_rel import KDRel
from kd_tf.losses.kd_sim import KDSim
from kd_tf.losses.kd_topk import KDTopK
from kd_tf.losses.ls import LabelSmoothing
from kd_tf.losses.mixes import KDPtRel, KDPtSim
from kd_tf.losses.student import Student

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def _table_order(name: str) -> tuple:
    position = registered()[name].table_position
    return (position is None, position or 0, name)


# Flag names in the order of the paper's tables (then any other registered method, by name).
NAMES = tuple(sorted(registered(), key=_table_order))

# Every hyperparameter any method takes, each once, in the order of the methods that take it.
HYPERPARAMETER_NAMES = tuple(
    dict.fromkeys(name for method in NAMES for name in registered()[method].hyperparameters)
)


def needing(what: str) -> tuple[str, ...]:
    """The methods whose loss needs `what` ("class_vectors" or "class_parents") to be built."""
    return tuple(name for name in NAMES if what in registered()[name].needs)


def hyperparameters_of(name: str, values: dict) -> dict:
    """The subset of `values` (hyperparameter name -> value) that method `name` takes, in its order."""
    return {key: values[key] for key in registered()[name].hyperparameters if key in values}


def parse_overrides(text: str) -> dict[str, dict]:
    """Per-method hyperparameters written as `'kd_pt:temperature=2,alpha=1;kd_sim:sim_temperature=0.1'`, as
    `{method: {name: value}}`; a `ValueError` names an unknown method or hyperparameter, or a bad value."""
    overrides = {}
    for part in filter(None, (piece.strip() for piece in text.split(";"))):
        method, _, assignments = part.partition(":")
        method = method.strip()
        if method not in NAMES:
            raise ValueError(f"unknown method {method!r}. Known: {', '.join(NAMES)}.")
        values = {}
        for assignment in filter(None, (piece.strip() for piece in assignments.split(","))):
            name, equals, text_value = assignment.partition("=")
            name = name.strip()
            if not equals:
                raise ValueError(f"expected name=value, got {assignment!r} for {method}.")
            if name not in HYPERPARAMETER_NAMES:
                raise ValueError(
                    f"for {method}: unknown hyperparameter(s) {[name]}; known: {HYPERPARAMETER_NAMES}"
                )
            try:
                values[name] = int(text_value) if name == "topk" else float(text_value)
            except ValueError as error:
                raise ValueError(f"{name}={text_value!r} for {method} is not a number.") from error
        overrides[method] = values
    return overrides


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
    "HYPERPARAMETER_NAMES",
    "KDTopK",
    "LabelSmoothing",
    "Student",
    "get",
    "hyperparameters_of",
    "label",
    "needing",
    "pack_targets",
    "registered",
]
