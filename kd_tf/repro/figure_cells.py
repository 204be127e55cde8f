"""The cells of a finished table run, and their teachers, students and data loaded back from disk."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence

import keras
import numpy as np

import models
from kd_tf import training
from kd_tf.io import read_json
from kd_tf.repro import trainers

# The splits a cell's examples can be taken from.
SPLITS = ("test", "train", "validation")
_DISPLAY_NAMES = {"tau": "τ"}


def column_label(column_key: str, column_value: str) -> str:
    """`<key>=<value>` as figure titles show it (`τ` for `tau`)."""
    return f"{_DISPLAY_NAMES.get(column_key, column_key)}={column_value}"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (column, seed) cell of a table run: `runs/<column_key>=<column_value>/seed=<seed>/`."""

    column_key: str
    column_value: str
    seed: int
    directory: str

    @property
    def name(self) -> str:
        return f"{self.column_key}={self.column_value}_seed={self.seed}"

    @property
    def label(self) -> str:
        return column_label(self.column_key, self.column_value)

    def method_dirs(self) -> dict[str, str]:
        """Method -> directory, for every student of this cell with a saved model and a record."""
        found = {}
        for name in sorted(os.listdir(self.directory)):
            directory = os.path.join(self.directory, name)
            if name != "teacher" and finished(directory, "student.keras"):
                found[name] = directory
        return found


def finished(directory: str, model_file: str) -> bool:
    """Whether `directory` holds both `model_file` and the `record.json` written when training ended."""
    return all(os.path.exists(os.path.join(directory, name)) for name in (model_file, "record.json"))


def find_cells(
    run_dir: str, columns: Sequence | None = None, seeds: Sequence[int] | None = None
) -> list[Cell]:
    """The cells of a table run that hold a saved teacher, in column then seed order.

    Args:
        run_dir: the `--output_dir` of a `--mode=table` run.
        columns: keep only these column values (e.g. τ); compared as numbers when both parse as one.
        seeds: keep only these seeds.
    """
    runs = os.path.join(os.fspath(run_dir), "runs")
    if not os.path.isdir(runs):
        raise ValueError(
            f"`run_dir` must be the output directory of a table run (with a runs/ folder). "
            f"Received: run_dir={os.fspath(run_dir)!r}"
        )
    cells = []
    for column_name in os.listdir(runs):
        column = re.fullmatch(r"([^=]+)=(.+)", column_name)
        if not column or not os.path.isdir(os.path.join(runs, column_name)):
            continue
        for seed_name in os.listdir(os.path.join(runs, column_name)):
            seed = re.fullmatch(r"seed=(-?\d+)", seed_name)
            directory = os.path.join(runs, column_name, seed_name)
            if seed and finished(os.path.join(directory, "teacher"), trainers.TEACHER_FILE):
                cells.append(Cell(column.group(1), column.group(2), int(seed.group(1)), directory))
    if columns is not None:
        cells = [cell for cell in cells if any(_same_value(cell.column_value, c) for c in columns)]
    if seeds is not None:
        cells = [cell for cell in cells if cell.seed in {int(seed) for seed in seeds}]
    if not cells:
        raise ValueError(
            f"`run_dir` holds no finished teacher for columns={columns} and seeds={seeds}. "
            f"Received: run_dir={os.fspath(run_dir)!r}"
        )
    return sorted(cells, key=lambda cell: (sort_key(cell.column_value), cell.seed))


def _same_value(first, second) -> bool:
    try:
        return math.isclose(float(first), float(second))
    except (TypeError, ValueError):
        return str(first) == str(second)


def sort_key(value: str):
    """Orders column values as numbers where they parse as one, after them the others by name."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def cell_key(cell: Cell):
    """What identifies a cell across two runs: "0.9" and "0.90" name the same column."""
    return cell.column_key, sort_key(cell.column_value), cell.seed


def check_same_data(cell: Cell, ls_cell: Cell) -> None:
    """Both teachers must have seen the same examples: Figures 4 and 5 compare them example by example."""
    info = read_json(os.path.join(cell.directory, "teacher", trainers.TEACHER_INFO))
    ls_info = read_json(os.path.join(ls_cell.directory, "teacher", trainers.TEACHER_INFO))
    fields = ("dataset", "data_options", "seed")
    if any(info.get(field) != ls_info.get(field) for field in fields):
        raise ValueError(
            f"`ls_run_dir`'s teacher in {ls_cell.directory} was trained on other data than the one in "
            f"{cell.directory}: {[ls_info.get(field) for field in fields]} against "
            f"{[info.get(field) for field in fields]}."
        )


# Loading a cell: the data regenerated from its teacher.json, the teacher, the students.


@dataclasses.dataclass
class Examples:
    """The inputs and integer labels of one split, as arrays."""

    inputs: np.ndarray
    labels: np.ndarray


def load_examples(splits, split: str, max_examples: int | None) -> Examples:
    """The ordered `split` (one of `SPLITS`) of `splits` as arrays, at most `max_examples` of them."""
    dataset = {"test": splits.test, "train": splits.train_ordered, "validation": splits.validation}[split]
    if dataset is None:
        raise ValueError(f"This dataset has no ordered {split!r} split to analyse. Received: split={split!r}")
    inputs, labels, count = [], [], 0
    for batch_inputs, batch_labels in dataset:
        inputs.append(np.asarray(batch_inputs))
        labels.append(np.asarray(batch_labels))
        count += len(labels[-1])
        if max_examples is not None and count >= max_examples:
            break
    inputs, labels = np.concatenate(inputs), np.concatenate(labels).astype(np.int64)
    if max_examples is not None:
        inputs, labels = inputs[:max_examples], labels[:max_examples]
    return Examples(inputs, labels)


def load_teacher_data(teacher_dir: str, batch_size: int = 512):
    """The teacher saved in `teacher_dir`, its `teacher.json`, and its data regenerated from that file.

    The data of a table cell is a function of its data options and seed (the synthetic task is sampled
    from the seed), so the arrays are exactly those the teacher and its students were trained and tested on.
    """
    info = read_json(os.path.join(teacher_dir, trainers.TEACHER_INFO))
    data_options = dict(info["data_options"])
    # The synthetic pipeline refuses a batch larger than its training set.
    batch_size = min(batch_size, data_options.get("train_examples", batch_size))
    splits = trainers.load_splits(info["dataset"], data_options, batch_size, info["seed"])
    _import_model_module(info.get("model"))
    teacher, _ = trainers.load_teacher(teacher_dir, info["dataset"], splits.num_classes)
    return teacher, info, splits


def _import_model_module(model_name: str | None) -> None:
    # Importing a model's module registers its custom layers (e.g. models.mlp.CosineLogits) for safe loading.
    if model_name:
        models.builder(model_name)


def load_student(directory: str) -> tuple[keras.Model, dict]:
    """A student saved by the table runner (`student.keras`, safe mode) and its `record.json`."""
    record = read_json(os.path.join(directory, "record.json"))
    _import_model_module(record.get("model"))
    student = training.load_model(os.path.join(directory, "student.keras"))
    return student, record
