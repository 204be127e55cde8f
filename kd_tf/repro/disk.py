"""The disk a run needs, roughly: what `--dry_run` compares with the output's free space, and what a full
disk's error reports beside it.

A trained model leaves on disk, in 32-bit floats: two checkpoints of its state (the latest and the one
before it, each its weights and its optimizer's slots: `kd_tf.checkpoint.EpochCheckpoint.save`), its best
weights (`training.BestValidation`) and the saved model. A teacher whose students distil from
its cached outputs adds its logits over the training examples (`kd_tf.offline`). Records, histories and
tables are a few kilobytes and are left out.
"""

from __future__ import annotations

import dataclasses
import functools

import keras

import data as datasets
from kd_tf.repro import config as config_module
from kd_tf.repro import experiments, outputs

FLOAT_BYTES = 4
# Optimizer slots per weight: Adam's two moments, SGD's momentum when it has one.
_SLOTS = {"adam": 2, "sgd": 1}


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Attributes:
    per_model: role -> bytes one trained model of that role leaves (its checkpoints, best weights, saved
        model, and for a teacher its cached outputs where students read them).
    models: role -> how many of that role the run trains, or `None` where the mode's cells are known only
        as it runs (the sweeps, which size their grids from their own settings).
    """

    per_model: dict
    models: dict | None

    @property
    def total(self) -> int | None:
        if self.models is None:
            return None
        return sum(self.per_model[role] * count for role, count in self.models.items())

    def describe(self) -> str:
        if not self.per_model:
            return "none: this run trains no model"
        each = ", ".join(f"{size_text(size)} a {role}" for role, size in self.per_model.items())
        if self.total is None:
            return f"about {each} (the count of models is known once the sweep runs)"
        counts = " + ".join(f"{count} {role}(s)" for role, count in self.models.items() if count)
        return f"about {size_text(self.total)} in all: {counts}; {each}"


def size_text(count: float) -> str:
    """Bytes for a person: kB under a megabyte, MB under a gigabyte, GB above."""
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count / 2**10:,.0f} kB"


def estimate(config: config_module.Config) -> Estimate | None:
    """The disk `config`'s run writes, or `None` where the models cannot be sized before the data is read
    (a language model's vocabulary) or an optional package is missing."""
    mode = experiments.get(config.mode)
    if not mode.roles(config):
        return Estimate({}, {})  # it reads finished runs
    facts = datasets.facts(config.dataset)
    options = dict(config.data_options)
    if facts.kind != "classification" or facts.missing_packages():
        return None
    classes, shape, examples = facts.classes(options), facts.shape(options), facts.examples(options)
    if classes is None or shape is None:
        return None
    per_model = {}
    for role in mode.roles(config):
        settings = config.teacher if role == "teacher" else config.student
        parameters = _parameters(config, role, classes, shape)
        slots = (
            0 if settings.optimizer == "sgd" and not settings.momentum else _SLOTS.get(settings.optimizer, 0)
        )
        size = FLOAT_BYTES * parameters * (2 * (1 + slots) + 2)
        if role == "teacher" and config.runtime.teacher_cache != "off" and not facts.augmented(options):
            size += FLOAT_BYTES * (examples or 0) * classes
        per_model[role] = size
    return Estimate(per_model, mode.model_counts(config))


def _parameters(config, role: str, classes: int, shape) -> int:
    name = config.teacher_model if role == "teacher" else config.student_model
    return _count(name, classes, tuple(shape), tuple(sorted(config.model_options(role).items())))


@functools.cache
def _count(name: str, classes: int, shape: tuple, options: tuple) -> int:
    """The parameters of architecture `name` (built once a process: ResNet-152 takes seconds)."""
    from kd_tf.repro import trainers

    count = trainers.build_model(name, classes, shape, dict(options), 0.0).count_params()
    keras.backend.clear_session()
    return count


def warning(config: config_module.Config, estimate_: Estimate | None) -> str | None:
    """A warning when the output's filesystem has less free space than the run's estimate, or `None`."""
    if estimate_ is None or estimate_.total is None:
        return None
    free = outputs.free_bytes(config.output_dir)
    if free is None or free >= estimate_.total:
        return None
    return (
        f"Warning: {config.output_dir} is on a filesystem with {size_text(free)} free, less than the "
        f"about {size_text(estimate_.total)} this run writes: it would stop when the disk is full "
        "(and resume once there is room)."
    )
