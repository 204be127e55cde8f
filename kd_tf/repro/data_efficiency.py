"""The data efficiency of distillation (Phuong & Lampert 2019): a fixed teacher per task setting; students
of several kinds (residual MLP, linear, deep-linear) learn from the first `n` examples of one pool, for
growing `n`, with hard labels (Student) or with the teacher's outputs (KD and the partial methods).

Every finished cell is a `record.json` under `<output_dir>/runs/`; a rerun reuses them, so an interrupted
sweep resumes where it stopped. The summary files (CSV, markdown, PNGs) are rewritten from the records.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import keras
import numpy as np

from data import synthetic
from kd_tf import training
from kd_tf.repro import grid, sweeps, trainers


@dataclasses.dataclass
class DataEfficiencyConfig:
    """The grid settings × seeds × student models × methods × training-set sizes, and how each is trained.

    `data_options` are the synthetic task's options shared by every setting; `settings` override them
    (e.g. `{"tau": 0.9, "difficulty": 2}`). Each student trains for `student_steps` steps whatever its
    training-set size, with `evaluations` validation checks spread evenly over them (the best is kept).
    """

    settings: Sequence[dict]
    train_sizes: Sequence[int]
    student_models: Sequence[str]
    methods: Sequence[str]
    seeds: Sequence[int]
    data_options: dict
    teacher_examples: int
    teacher_model: str
    teacher_model_options: dict
    student_model_options: dict  # model name -> options
    teacher_train: training.TrainConfig
    student_train: training.TrainConfig
    student_steps: int
    evaluations: int
    hyperparameters: dict
    method_overrides: dict
    precision: str = "float32"

    def __post_init__(self):
        sizes = list(self.train_sizes)
        if not sizes or any(size <= 0 for size in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(f"`train_sizes` must be distinct positive integers. Received: {sizes}")
        if self.student_train.batch_size > min(sizes):
            raise ValueError(
                "The batch size must not exceed the smallest training-set size. Received: "
                f"batch_size={self.student_train.batch_size}, train_sizes={sizes}"
            )
        sweeps.check_steps(self.student_steps, self.evaluations)
        if self.teacher_train.batch_size > self.teacher_examples:
            raise ValueError(
                "The teacher's batch size must not exceed `teacher_examples`. Received: "
                f"batch_size={self.teacher_train.batch_size}, teacher_examples={self.teacher_examples}"
            )

    def cells(self) -> list[dict]:
        """Every student run of the grid, once, in the order they are trained."""
        return [
            {
                **setting,
                "seed": seed,
                "student_model": model,
                "method": method,
                "train_examples": size,
            }
            for setting in self.settings
            for seed in self.seeds
            for model in self.student_models
            for method in self.methods
            for size in sorted(self.train_sizes)
        ]

    def grid_cells(self) -> grid.Cells:
        """What the grid engine needs of this grid's cells (`grid.run(self, output_dir, self.cells(), ...)`)."""
        return _Cells(tuple(self.settings[0]) if self.settings else ())


@dataclasses.dataclass
class _Task:
    """One setting and seed: the arrays (the teacher's examples first, then the students' pool), the
    teacher, its test predictions and the task's label non-linearity (`synthetic.measures`)."""

    arrays: synthetic.SyntheticArrays
    teacher: keras.Model
    teacher_record: dict
    teacher_test_predictions: np.ndarray
    measures: dict


def _setting_name(setting: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(setting.items()))


def _prepare_task(config: DataEfficiencyConfig, setting: dict, seed: int, directory: str) -> _Task:
    """Draws the teacher's examples and the students' pool from one task, and trains (or reuses) the teacher.

    The teacher learns from its own `teacher_examples`; the students' training sets are prefixes of a
    separate pool, so a larger set always contains a smaller one.
    """
    data_options = {**config.data_options, **setting}
    largest = max(config.train_sizes)
    arrays = synthetic.arrays(
        **{**data_options, "train_examples": config.teacher_examples + largest}, seed=seed
    )
    keras.utils.set_random_seed(seed)  # the global seed enters tf.data's shuffle order
    teacher_splits = synthetic.splits(
        arrays, config.teacher_train.batch_size, seed, train_count=config.teacher_examples
    )
    study = sweeps.teacher_spec(config)
    teacher_record, teacher = trainers.train_teacher(
        study, teacher_splits, {**data_options, "train_examples": config.teacher_examples}, seed, directory
    )
    teacher_logits = sweeps.logits_of(teacher, arrays.x_test)
    return _Task(
        arrays=arrays,
        teacher=teacher,
        teacher_record=teacher_record,
        teacher_test_predictions=np.argmax(teacher_logits, axis=-1),
        measures=synthetic.measures(data_options, seed),
    )


def _data_efficiency_cell(config: DataEfficiencyConfig, task: _Task, cell: dict, directory: str) -> dict:
    method, model = cell["method"], cell["student_model"]
    # The first n examples of the pool, after the teacher's own.
    student, result, hyperparameters = sweeps.train_for_steps(
        config,
        cell,
        directory,
        arrays=task.arrays,
        teacher=task.teacher,
        values={**config.hyperparameters, **config.method_overrides.get(method, {})},
        model=model,
        model_options=config.student_model_options.get(model, {}),
        train_count=cell["train_examples"],
        train_offset=config.teacher_examples,
    )
    student_logits = sweeps.logits_of(student, task.arrays.x_test)
    agreement = float(np.mean(np.argmax(student_logits, axis=-1) == task.teacher_test_predictions))
    return {
        **cell,
        "test_accuracy": result["test_accuracy"],
        "test_agreement": agreement,
        "best_validation_accuracy": result["best_validation_accuracy"],
        "best_evaluation": result["best_epoch"],
        "steps": sweeps.steps_between_checks(config) * config.evaluations,
        "teacher_test_accuracy": task.teacher_record["test_accuracy"],
        "wall_time_s": result["wall_time_s"],
        "hyperparameters": hyperparameters,
        "data_measures": task.measures,
    }


@dataclasses.dataclass(frozen=True)
class _Cells(grid.Cells):
    """The grid's cells: one group per setting and seed, sharing a teacher and the students' pool."""

    setting_keys: tuple  # the data options a setting sets

    def setting(self, cell: dict) -> dict:
        return {name: cell[name] for name in self.setting_keys}

    def key(self, cell: dict) -> tuple:
        return _setting_name(self.setting(cell)), cell["seed"]

    def setting_dir(self, output_dir: str, cell: dict) -> str:
        return os.path.join(output_dir, "runs", _setting_name(self.setting(cell)), f"seed={cell['seed']}")

    def directory(self, output_dir: str, cell: dict) -> str:
        setting_dir = self.setting_dir(output_dir, cell)
        return os.path.join(setting_dir, cell["student_model"], cell["method"], f"n={cell['train_examples']}")

    def prepare(self, group: grid.Group, cell: dict, log) -> _Task:
        setting = self.setting(cell)
        teacher_dir = os.path.join(self.setting_dir(group.output_dir, cell), "teacher")
        task = _prepare_task(group.config, setting, cell["seed"], teacher_dir)
        log(
            sweeps.teacher_line(
                f"{_setting_name(setting)} seed={cell['seed']}", task.teacher_record, task.measures
            )
        )
        return task

    def train(self, group: grid.Group, shared: _Task, cell: dict, directory: str, log) -> dict:
        return _data_efficiency_cell(group.config, shared, cell, directory)

    def describe(self, cell: dict, record: dict) -> str:
        return (
            f"{_setting_name(self.setting(cell))} seed={cell['seed']} "
            f"{cell['student_model']:<11} {cell['method']:<7} n={cell['train_examples']:<6} "
            f"test {100 * record['test_accuracy']:.2f}%  agreement {100 * record['test_agreement']:.2f}%  "
            f"({record['wall_time_s']:.0f} s)"
        )
