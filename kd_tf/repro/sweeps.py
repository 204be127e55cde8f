"""What the companion-paper sweeps share: their experiment's checks and run, groups of cells trained in
worker processes, CSV files and a model's logits over arrays."""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np
from absl import flags

from data import synthetic
from kd_tf.repro import grid, tables, trainers
from kd_tf.repro.config import UserError
from kd_tf.repro.experiments import Experiment

# The flags the sweeps share (their values: `Config.sweeps`).
flags.DEFINE_list(
    "train_sizes",
    ["1000", "2000", "5000", "10000", "20000", "50000", "100000"],
    "data_efficiency: student training-set sizes (prefixes of one pool); regime_map: training-set sizes "
    "(default 5000,50000).",
)
flags.DEFINE_integer(
    "student_steps",
    3000,
    "data_efficiency, regime_map: training steps of every student, whatever its training-set size.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "evaluations",
    10,
    "data_efficiency, regime_map: validation checks per student (the best is kept).",
    lower_bound=1,
)
flags.DEFINE_list(
    "difficulties",
    [],
    "data_efficiency: task difficulties to sweep (default: --difficulty); regime_map: default 1,4.",
)


def positive_integers(values) -> bool:
    """A flag validator: a non-empty list of positive integers."""
    return bool(values) and all(value.isdigit() and int(value) > 0 for value in values)


def numbers_within(low: float, high: float, low_open: bool = False):
    """A flag validator: a non-empty list of numbers in [low, high] (`(low, high]` with `low_open`)."""

    def valid(values) -> bool:
        try:
            numbers = [float(value) for value in values]
        except ValueError:
            return False
        return bool(numbers) and all((low < n if low_open else low <= n) and n <= high for n in numbers)

    return valid


flags.register_validator(
    "train_sizes", positive_integers, "--train_sizes must be a list of positive integers"
)
flags.register_validator(
    "difficulties",
    lambda values: all(value.isdigit() for value in values),
    "--difficulties must be a list of non-negative integers",
)


class SweepExperiment(Experiment):
    """A sweep over the synthetic task: a grid of cells, each a small model, in groups sharing a teacher."""

    group = "sweeps"
    datasets = ("synthetic",)

    def trained_methods(self, config) -> list[str]:
        return list(config.methods)

    def run(self, options) -> None:
        grid_config = self.grid_config(options)
        cells, grid_cells = grid_config.cells(), grid_config.grid_cells()
        teachers = len({grid_cells.key(cell) for cell in cells})  # one group of cells each
        jobs = options.jobs(teachers)
        if jobs > 1:
            from kd_tf import parallel

            print(
                f"{jobs} jobs at a time, {parallel.threads_per_job(jobs)} thread(s) each (--jobs).",
                flush=True,
            )
        announced = self.announce(teachers, len(cells), options.output_dir)
        if announced:
            print(announced, flush=True)
        deterministic = options.config.runtime.deterministic
        records = grid.run(
            grid_config, options.output_dir, cells, grid_cells, jobs=jobs, deterministic=deterministic
        )
        self.write(grid_config, options.output_dir, records, f"Command: `{options.config.command}`\n\n")
        # The summary the sweep just wrote (a bad value in the grid flags was a ValueError before any work,
        # which `modes.run` turns into a one-line error).
        with open(os.path.join(options.output_dir, tables.RESULTS_MARKDOWN), encoding="utf-8") as handle:
            print("\n" + handle.read())

    @staticmethod
    def check_fixed_steps(config) -> None:
        """A sweep whose students train a fixed number of steps over training sets of several sizes: one batch
        fits in the smallest, and there are at least as many steps as validation checks."""
        smallest = min(config.sweeps.train_sizes)
        if config.student.batch_size > smallest:
            raise UserError(
                f"--batch_size={config.student.batch_size} exceeds the smallest --train_sizes ({smallest})."
            )
        if config.sweeps.student_steps < config.sweeps.evaluations:
            raise UserError(
                f"--student_steps={config.sweeps.student_steps} must be at least "
                f"--evaluations={config.sweeps.evaluations}."
            )

    def grid_config(self, options):
        """The sweep's own configuration, built from the run's."""
        raise NotImplementedError

    def announce(self, teachers: int, cells: int, output_dir: str) -> str:
        """A line printed before the first cell trains, or ""."""
        del teachers, cells, output_dir
        return ""

    def write(self, grid_config, output_dir: str, records: list[dict], header: str) -> None:
        """Writes the sweep's summary files (`results.md` among them) from every cell's record."""
        raise NotImplementedError


def train_configs(options):
    """A sweep's teacher and student training: hundreds of small cells, each keeping its record and
    history.csv, without TensorBoard logs."""
    teacher = dataclasses.replace(options.train_config("teacher", verbose=0), tensorboard=False)
    student = dataclasses.replace(options.train_config("student", verbose=0), tensorboard=False)
    return teacher, student


def models_and_training(options) -> dict:
    """A sweep config's teacher and student (architecture, options, training), method values, precision."""
    teacher_train, student_train = train_configs(options)
    return {
        "teacher_model": options.teacher_model,
        "teacher_model_options": options.model_options("teacher", options.teacher_model),
        "student_model": options.student_model,
        "student_model_options": options.model_options("student", options.student_model),
        "teacher_train": teacher_train,
        "student_train": student_train,
        "hyperparameters": options.hyperparameters(),
        "method_overrides": options.method_overrides,
        "precision": options.config.runtime.precision,
    }


def logits_of(model: keras.Model, inputs: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    # Eager calls: `predict` would trace a new function for every one of the sweep's many models.
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(inputs[start : start + batch_size], training=False))
            for start in range(0, len(inputs), batch_size)
        ]
    )


def teacher_line(label: str, record: dict, measures: dict) -> str:
    """A sweep's progress line for a group's teacher: its test accuracy and its task's label non-linearity."""
    accuracy = 100 * record["test_accuracy"]
    return f"teacher {label}: test accuracy {accuracy:.2f}%; {synthetic.describe_measures(measures)}"


def teacher_spec(
    config, teacher_cache: str = "off", teacher_cache_max_mb: float = float("inf")
) -> trainers.TeacherSpec:
    """The teacher of a sweep's `config` (its model, options, training and precision) on the synthetic task,
    its outputs cached for its students when `teacher_cache` and `teacher_cache_max_mb` say so
    (`kd_tf.offline.wanted`)."""
    return trainers.TeacherSpec(
        dataset="synthetic",
        model=config.teacher_model,
        model_options=config.teacher_model_options,
        train=config.teacher_train,
        precision=config.precision,
        cache=teacher_cache,
        cache_max_mb=teacher_cache_max_mb,
    )


def steps_between_checks(config) -> int:
    """The training steps between two of a fixed-step student's `config.evaluations` validation checks."""
    return config.student_steps // config.evaluations


def train_for_steps(
    config,
    cell: dict,
    directory: str,
    *,
    arrays,
    teacher,
    values: dict,
    model: str,
    model_options: dict,
    cache_dirs=None,
    **split_options,
):
    """Distils `cell["method"]` into a `model` student for `config.student_steps` steps whatever the size of its
    training set (`arrays`' training examples, or those `split_options` select): they are an endless stream,
    an "epoch" being one of `config.evaluations` validation intervals, so that sizes compare data, not
    compute. Returns `trainers.distil`'s (student, result, hyperparameters)."""
    train_config = dataclasses.replace(config.student_train, epochs=config.evaluations)
    keras.utils.set_random_seed(cell["seed"] + 1)  # before the pipeline: the seed enters its shuffle order
    splits = synthetic.splits(
        arrays,
        train_config.batch_size,
        cell["seed"],
        examples_per_epoch=steps_between_checks(config) * train_config.batch_size,
        **split_options,
    )
    return trainers.distil(
        cell["method"],
        values,
        teacher,
        splits,
        model,
        model_options,
        train_config,
        precision=config.precision,
        seed=cell["seed"],
        run_dir=directory,
        cache_dirs=cache_dirs,
    )


def check_steps(student_steps: int, evaluations: int) -> None:
    """A sweep whose students train a fixed number of steps checks the best of `evaluations` along them."""
    if evaluations <= 0 or student_steps < evaluations:
        raise ValueError(
            "`student_steps` must be at least `evaluations` (> 0). Received: "
            f"student_steps={student_steps}, evaluations={evaluations}"
        )
