"""What the companion-paper sweeps share: their experiment's checks and run, groups of cells trained in
worker processes, CSV files and a model's logits over arrays."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Sequence

import keras
import numpy as np

from kd_tf.io import atomic_write_text
from kd_tf.repro import experiment
from kd_tf.repro.experiments import Experiment


class SweepExperiment(Experiment):
    """A sweep over the synthetic task: a grid of cells, each a small model, in groups sharing a teacher."""

    group = "sweeps"
    datasets = ("synthetic",)

    def trained_methods(self, config) -> list[str]:
        return list(config.methods)

    def run(self, options) -> None:
        grid_config = self.grid_config(options)
        groups = self.groups(grid_config)
        jobs = options.jobs(groups)
        if jobs > 1:
            from kd_tf import parallel

            print(
                f"{jobs} jobs at a time, {parallel.threads_per_job(jobs)} thread(s) each (--jobs).",
                flush=True,
            )
        self.run_grid(
            grid_config,
            options.output_dir,
            header=f"Command: `{options.config.command}`\n\n",
            jobs=jobs,
            deterministic=options.config.runtime.deterministic,
        )
        # The summary the sweep just wrote (a bad value in the grid flags was a ValueError before any work,
        # which `modes.run` turns into a one-line error).
        with open(os.path.join(options.output_dir, experiment.RESULTS_MARKDOWN), encoding="utf-8") as handle:
            print("\n" + handle.read())

    def grid_config(self, options):
        """The sweep's own configuration, built from the run's."""
        raise NotImplementedError

    def groups(self, grid_config) -> int:
        """How many groups of cells share a teacher (what `--jobs` runs at a time)."""
        raise NotImplementedError

    def run_grid(self, grid_config, output_dir: str, **options) -> None:
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


@dataclasses.dataclass(frozen=True)
class Group:
    """Cells of a sweep that share a teacher (plain values, so that a worker process can take them)."""

    config: object
    output_dir: str
    total: int
    members: list  # (1-based index in the sweep, cell)


def run_grouped(config, output_dir: str, key, function, log, jobs: int, deterministic: bool) -> list[dict]:
    """Every cell of `config.cells()`, grouped by `key(cell)` (the cells that share a teacher), each group
    trained by `function(group, log)` here or in `jobs` worker processes (which print their own progress);
    returns the cells' records in the sweep's order."""
    cells = config.cells()
    groups: dict = {}
    for index, cell in enumerate(cells, start=1):
        groups.setdefault(key(cell), Group(config, output_dir, len(cells), [])).members.append((index, cell))
    found = {}
    if jobs > 1 and len(groups) > 1:
        from kd_tf import parallel

        for _, records in parallel.run_unordered(
            function,
            list(groups.values()),
            min(jobs, len(groups)),
            deterministic=deterministic,
            precision=config.precision,
        ):
            found.update(records)
    else:
        for group in groups.values():
            found.update(function(group, log))
    return [found[index] for index in range(1, len(cells) + 1)]


def write_csv(path: str, records: Sequence[dict], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: record.get(name) for name in fields})
    atomic_write_text(path, buffer.getvalue())


def teacher_study(config, data_options: dict, teacher_cache: str = "off"):
    """The `experiment.StudyConfig` that `experiment.train_teacher` needs to train a sweep's teacher (`config`:
    a sweep's config, with its teacher's model, options and training), its outputs cached for its students
    when `teacher_cache` says so (`kd_tf.offline.MODES`)."""
    return experiment.StudyConfig(
        dataset="synthetic",
        methods=(),
        seeds=(),
        settings=(),
        column_key="tau",
        data_options=data_options,
        teacher_model=config.teacher_model,
        teacher_model_options=config.teacher_model_options,
        student_model="",
        student_model_options={},
        teacher_train=config.teacher_train,
        student_train=config.student_train,
        hyperparameters={},
        method_overrides={},
        precision=config.precision,
        teacher_cache=teacher_cache,
    )


def check_steps(student_steps: int, evaluations: int) -> None:
    """A sweep whose students train a fixed number of steps checks the best of `evaluations` along them."""
    if evaluations <= 0 or student_steps < evaluations:
        raise ValueError(
            "`student_steps` must be at least `evaluations` (> 0). Received: "
            f"student_steps={student_steps}, evaluations={evaluations}"
        )
