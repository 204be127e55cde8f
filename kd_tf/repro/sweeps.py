"""What the companion-paper sweeps share: groups of cells trained in worker processes, progress lines,
CSV files and a model's logits over arrays."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

import keras
import numpy as np

from kd_tf.io import atomic_write_text
from kd_tf.repro import experiment


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
