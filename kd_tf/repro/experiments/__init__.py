"""The experiments `run.py --mode` selects: one module each in this package, registered as it is imported.

An experiment owns what is its own: the values it gives flags the user did not set (`presets`), its
`--quick` variant, its output directory, the checks of its flags, the models and methods it trains (for the
plan and the disk estimate) and how it runs. `run.py`, the checks, the plan and the runner read this
registry; a new study is one new module here, with the flags it defines.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Mapping
from typing import ClassVar

# The task every sweep's `--quick` variant runs: small enough for seconds, big enough for the bookkeeping.
QUICK_TASK = {
    "num_classes": 8,
    "num_superclasses": 2,
    "dim": 16,
    "difficulty": 1,
    "train_examples": 256,
    "validation_examples": 128,
    "test_examples": 128,
    "batch_size": 32,
    "epochs": 2,
    "teacher_epochs": 2,
    "jit_compile": "false",
    "steps_per_execution": 1,
    "teacher_width": 16,
    "student_width": 4,
    "topk": 3,  # of the 8 classes
}


class Experiment:
    """What one `--mode` runs. Subclasses set the class attributes and override what differs.

    Attributes:
        name: the `--mode` value.
        rank: where the mode stands in `--mode`'s list and help.
        help: one line for `--mode`'s help.
        kinds: the kinds of dataset (`data.Facts.kind`) it runs on.
        datasets: the only datasets it runs on, where it is not all of its kinds'.
        writes: whether it writes results into `--output_dir` (held for the run, refused when it holds
            results, `config.json` written before training).
        multi_worker: whether it trains across workers (`--strategy=multi_worker_mirrored`).
        task_seeds: whether it averages over several synthetic tasks (`--task_seeds`).
        teacher_cache: whether its students can distil from a cache of their teacher's outputs
            (`--teacher_cache`; where not, the flag's preset is `off` and any other value is refused).
        presets: flag name -> the value it takes when the user did not set it (above a dataset's preset).
        quick: flag name -> its value under `--quick` (above `presets`, below what the user set).
        group: the `Config` group of flags it reads of its own ("sweeps", "analysis"), shown by the plan.
        flags: flags a module defines for itself, shown by the plan in a section named after the mode
            (their values: `Config.value(name)`).
    """

    name: ClassVar[str] = ""
    rank: ClassVar[int] = 100
    help: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ("classification",)
    datasets: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[bool] = True
    multi_worker: ClassVar[bool] = False
    task_seeds: ClassVar[bool] = False
    teacher_cache: ClassVar[bool] = True
    presets: ClassVar[Mapping] = {}
    quick: ClassVar[Mapping] = {}
    group: ClassVar[str | None] = None
    flags: ClassVar[tuple[str, ...]] = ()

    def output_dir(self, dataset: str, method: str) -> str:
        """Where it writes when `--output_dir` is not given: one directory per kind of run, so that the
        documented commands never collide."""
        del dataset, method
        return os.path.join("runs", self.name)

    def trained_methods(self, config) -> list[str]:
        """The methods it builds a loss for: the only ones whose values are checked and planned."""
        del config
        return []

    def roles(self, config) -> list[str]:
        """The models it trains ("teacher", "student"), for the plan and the disk estimate."""
        del config
        return ["teacher", "student"]

    def model_counts(self, config) -> dict | None:
        """Role -> how many models of it the run trains, or `None` where that is the experiment's own
        business (the plan then gives the disk per model)."""
        del config
        return None

    def grid_trained(self, config) -> dict:
        """Teacher training values its grid sets in place of the flags (field -> text for the plan)."""
        del config
        return {}

    def check(self, config, missing) -> None:
        """Its own checks of `config`: raises `config.UserError` naming the flag, before any work; calls
        `missing(problem)` for what the disk lacks (a refusal, or under `--dry_run` a line of the plan)."""
        del config, missing

    def run(self, options) -> None:
        """Runs it: `options` is the `modes.Run` of a checked configuration."""
        raise NotImplementedError


_REGISTRY: dict[str, Experiment] = {}


def register(experiment_class: type[Experiment]) -> type[Experiment]:
    """Class decorator: makes `--mode=<experiment_class.name>` run it."""
    if not experiment_class.name or experiment_class.name in _REGISTRY:
        raise ValueError(f"An experiment needs a name of its own. Received: {experiment_class.name!r}")
    _REGISTRY[experiment_class.name] = experiment_class()
    return experiment_class


def _load() -> dict[str, Experiment]:
    if not _REGISTRY:
        for module in pkgutil.iter_modules(__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{__name__}.{module.name}")
    return _REGISTRY


def names() -> list[str]:
    """Every registered `--mode`, in `rank` order."""
    return sorted(_load(), key=lambda name: (_REGISTRY[name].rank, name))


def get(name: str) -> Experiment:
    return _load()[name]


def all_of(**wanted) -> list[str]:
    """The modes whose attributes have the `wanted` values, e.g. `all_of(writes=True)`."""
    return [
        name
        for name in names()
        if all(getattr(_REGISTRY[name], key) == value for key, value in wanted.items())
    ]
