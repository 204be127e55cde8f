"""The top-k sweep (Figure 3): KD-topk students for several `k` from a finished table run's teachers.

A runner of its own: it trains, and `figures.analyze_run` draws Figure 3 from the CSV it writes.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

import keras

from kd_tf import training
from kd_tf.repro import store, trainers
from kd_tf.repro.figure_cells import find_cells, finished, load_student, load_teacher_data
from kd_tf.repro.figure_measures import fresh_copy
from kd_tf.repro.figure_outputs import write_csv
from kd_tf.repro.figures import FIGURES_DIR, SWEEP_CSV

SWEEP_DIR = "topk_sweep"


def _sweep_student(
    teacher_dir, template, seed, method, k, hyperparameters, config, precision, directory
) -> dict:
    """One student of the top-k sweep: KD (`k` None) or KD-topk at `k`, from the cell's teacher."""
    teacher, _, splits = load_teacher_data(teacher_dir, config.batch_size)
    if k is not None and k > splits.num_classes:
        raise ValueError(f"`ks` must be <= the number of classes {splits.num_classes}. Received: k={k}")
    arguments = dict(hyperparameters) if k is None else {**hyperparameters, "topk": k}
    loss = trainers.method_loss(method, arguments, teacher, splits)
    student = fresh_copy(template, seed + 1)
    result = training.train(
        student=student,
        teacher=teacher,
        loss=loss,
        splits=splits,
        config=config,
        precision=precision,
        run_dir=directory,
    )
    result = {
        **result,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "optimizer": config.optimizer,
    }
    keras.backend.clear_session()
    return result


def run(
    run_dir,
    ks: Sequence[int],
    *,
    columns: Sequence | None = None,
    seeds: Sequence[int] | None = None,
    train_config: training.TrainConfig | None = None,
    epochs: int | None = None,
    output_csv=None,
    precision: str = "float32",
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Trains a KD-topk student for each `k` (and a KD student) from every saved teacher of a table run.

    Students reuse the architecture of the cell's KD student (fresh weights from the same seed the table
    used), KD's temperature and alpha, and one training config, so each `k` differs from KD only in its
    target. Runs are kept under `run_dir/topk_sweep/<column>/<seed>/k=<k>/` and reused when the sweep is
    run again; one row per run goes to `output_csv` (default `run_dir/figures/topk_sweep.csv`), which
    `analyze_run` turns into Figure 3.

    Args:
        run_dir: output directory of a table run that trained `kd`.
        ks: the values of `k` (each in [1, M]).
        columns, seeds: restrict the cells (default: all).
        train_config: batch size, optimizer and learning rate (default: `TrainConfig()`, the runner's
            defaults); pass the table run's values.
        epochs: epochs per student (default: those recorded by the cell's KD student).
        output_csv: the CSV to write.
        precision: compute precision of the students.
        log: progress messages.
    """
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise ValueError(f"`ks` must be a non-empty list of positive integers. Received: ks={ks}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"`epochs` must be >= 1. Received: epochs={epochs}")
    run_dir = os.fspath(run_dir)
    base_config = train_config or training.TrainConfig(verbose=0)
    output_csv = os.fspath(output_csv) if output_csv else os.path.join(run_dir, FIGURES_DIR, SWEEP_CSV)
    rows = []
    for cell in find_cells(run_dir, columns, seeds):
        kd_directory = os.path.join(cell.directory, "kd")
        if not finished(kd_directory, "student.keras"):
            raise ValueError(f"`topk_sweep` needs the table's KD student in {kd_directory}.")
        template, kd_record = load_student(kd_directory)
        config = dataclasses.replace(base_config, epochs=epochs or int(kd_record["epochs"]))
        hyperparameters = {name: kd_record["hyperparameters"][name] for name in ("temperature", "alpha")}
        teacher_dir = os.path.join(cell.directory, "teacher")
        for k in [None, *sorted({int(k) for k in ks})]:
            method = "kd" if k is None else "kd_topk"
            directory = os.path.join(
                run_dir,
                SWEEP_DIR,
                f"{cell.column_key}={cell.column_value}",
                f"seed={cell.seed}",
                "kd" if k is None else f"k={k}",
            )

            train_it = functools.partial(
                _sweep_student,
                teacher_dir,
                template,
                cell.seed,
                method,
                k,
                hyperparameters,
                config,
                precision,
                directory,
            )
            result = store.reuse_or_train(directory, train_it)
            row = {
                "column_key": cell.column_key,
                "column_value": cell.column_value,
                "seed": cell.seed,
                "method": method,
                "topk": "" if k is None else k,
                **hyperparameters,
                **{
                    name: result[name]
                    for name in (
                        "test_accuracy",
                        "best_validation_accuracy",
                        "best_epoch",
                        "epochs",
                        "wall_time_s",
                    )
                },
            }
            rows.append(row)
            log(
                f"top-k sweep {cell.name} {method} k={k or 'all'}: test accuracy "
                f"{100 * row['test_accuracy']:.2f}% ({row['wall_time_s']:.0f} s)"
            )
    write_csv(output_csv, rows)
    return rows
