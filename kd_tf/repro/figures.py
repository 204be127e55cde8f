"""The paper's Figures 1-5 and Proposition 1 from a finished table run: PNGs, CSV and JSON."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Callable, Sequence

import keras
import numpy as np

import models
from kd_tf import analysis, plots, training
from kd_tf.io import atomic_write_text, read_json
from kd_tf.repro import experiment

FIGURES_DIR = "figures"
SWEEP_DIR = "topk_sweep"
SWEEP_CSV = "topk_sweep.csv"
SUMMARY_JSON = "summary.json"
BLOCK_CONTRAST_CSV = "block_contrast.csv"
STUDENTS_CSV = "students.csv"
UPLIFT_CSV = "topk_uplift.csv"

# Equal-count bins of q^T_t in which Figure 2's w is averaged for the summary.
_RESCALING_BINS = 10
_DISPLAY_NAMES = {"tau": "τ"}
_SPLITS = ("test", "train", "validation")


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
        return f"{_DISPLAY_NAMES.get(self.column_key, self.column_key)}={self.column_value}"

    def method_dirs(self) -> dict[str, str]:
        """Method -> directory, for every student of this cell with a saved model and a record."""
        found = {}
        for name in sorted(os.listdir(self.directory)):
            directory = os.path.join(self.directory, name)
            if name != "teacher" and _finished(directory, "student.keras"):
                found[name] = directory
        return found


def _finished(directory: str, model_file: str) -> bool:
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
            if seed and _finished(os.path.join(directory, "teacher"), experiment.TEACHER_FILE):
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
    return sorted(cells, key=lambda cell: (_sort_key(cell.column_value), cell.seed))


def _same_value(first, second) -> bool:
    try:
        return math.isclose(float(first), float(second))
    except (TypeError, ValueError):
        return str(first) == str(second)


def _sort_key(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


# Loading a cell: the data regenerated from its teacher.json, the teacher, the students.


@dataclasses.dataclass
class _Split:
    inputs: np.ndarray
    labels: np.ndarray


def _collect(dataset, max_examples: int | None) -> _Split:
    """The `(inputs, labels)` of a batched pipeline as arrays, at most `max_examples` of them."""
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
    return _Split(inputs, labels)


def _split_of(splits, split: str):
    dataset = {"test": splits.test, "train": splits.train_ordered, "validation": splits.validation}[split]
    if dataset is None:
        raise ValueError(f"This dataset has no ordered {split!r} split to analyse. Received: split={split!r}")
    return dataset


def load_teacher_data(teacher_dir: str, batch_size: int = 512):
    """The teacher saved in `teacher_dir`, its `teacher.json`, and its data regenerated from that file.

    The data of a table cell is a function of its data options and seed (the synthetic task is sampled
    from the seed), so the arrays are exactly those the teacher and its students were trained and tested on.
    """
    info = read_json(os.path.join(teacher_dir, experiment.TEACHER_INFO))
    data_options = dict(info["data_options"])
    # The synthetic pipeline refuses a batch larger than its training set.
    batch_size = min(batch_size, data_options.get("train_examples", batch_size))
    splits = experiment.load_splits(info["dataset"], data_options, batch_size, info["seed"])
    _import_model_module(info.get("model"))
    teacher, _ = experiment.load_teacher(teacher_dir, info["dataset"], splits.num_classes)
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


def _outputs(model, inputs, batch_size: int = 1024, wrap: bool = False) -> np.ndarray:
    # Direct calls in inference mode: `predict` would trace a new function for every model loaded here.
    # `wrap` passes the input as a one-element list, for sub-models built on `model.inputs`.
    chunks = [inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size)]
    return np.concatenate(
        [np.asarray(model([chunk] if wrap else chunk, training=False), dtype=np.float64) for chunk in chunks]
    )


def _logits(model, inputs) -> np.ndarray:
    return _outputs(model, inputs)


def _geometry(model, inputs, teacher_logits, labels) -> dict:
    """`analysis.model_logit_geometry` at `T = 1`, on the model's logit layer named "logits"."""
    layer = model.get_layer("logits")
    # Cosine logits compare l2-normalised vectors; a plain Dense layer compares them as they are.
    normalize = not isinstance(layer, keras.layers.Dense)
    penultimate = _outputs(analysis.penultimate_model(model), inputs, wrap=True)
    return {
        **analysis.logit_geometry(
            penultimate, analysis.logit_kernel(model), teacher_logits, labels, 1.0, normalize
        ),
        "normalized": normalize,
    }


def _accuracy(logits, labels) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


# Figure 2 and Proposition 1 for one student.


def binned_means(x, y, bins: int = _RESCALING_BINS) -> list[dict]:
    """Mean and median of `y` in `bins` equal-count bins of `x` (Figure 2 as a table)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"`x` and `y` must be equally long vectors. Received: {x.shape} and {y.shape}")
    if bins < 1:
        raise ValueError(f"`bins` must be >= 1. Received: bins={bins}")
    order = np.argsort(x, kind="stable")
    rows = []
    for chosen in np.array_split(order, bins):
        if chosen.size == 0:
            continue
        rows.append(
            {
                "x_low": float(x[chosen].min()),
                "x_high": float(x[chosen].max()),
                "x_mean": float(x[chosen].mean()),
                "y_mean": float(y[chosen].mean()),
                "y_median": float(np.median(y[chosen])),
                "count": int(chosen.size),
            }
        )
    return rows


def _rescaling(loss, labels, teacher_logits, student_logits) -> dict:
    result = analysis.rescaling_analysis(loss, labels, teacher_logits, student_logits)
    # w is 0/0 where the student puts all its mass on the true class; such rows carry no gradient.
    finite = np.isfinite(result["w"])
    teacher_probs, factors = result["teacher_probs"][finite], result["w"][finite]
    return {
        "arrays": {"teacher_probs": teacher_probs, "w": factors},
        "summary": {
            "pearson": analysis.pearson(teacher_probs, factors) if factors.size > 1 else None,
            "spearman": analysis.spearman(teacher_probs, factors),
            "w_mean": float(np.mean(factors)) if factors.size else None,
            "w_median": float(np.median(factors)) if factors.size else None,
            "non_finite": int((~finite).sum()),
            "binned": binned_means(teacher_probs, factors) if factors.size else [],
        },
    }


def _fresh_copy(model: keras.Model, seed: int) -> keras.Model:
    """The same architecture with newly initialised weights: the student at the start of training."""
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)


# The whole analysis.


def analyze_run(
    run_dir,
    *,
    ls_run_dir=None,
    figures_dir=None,
    temperatures: Sequence[float] = (1.0, 4.0),
    topk: int = 5,
    columns: Sequence | None = None,
    seeds: Sequence[int] | None = None,
    split: str = "test",
    rescaling_split: str = "train",
    max_examples: int | None = None,
    sweep_csv=None,
    log: Callable[[str], None] = print,
) -> dict:
    """Draws Figures 1-5 and Proposition 1's geometry for a finished table run and writes their numbers.

    For each cell (column value, seed) of `run_dir` the data is regenerated from the teacher's
    `teacher.json`; the teacher and every saved student are loaded in Keras safe mode. Written to
    `figures_dir` (default `run_dir/figures`):

    - `figure1_<cell>.png`: class-correlation heatmaps of the teacher at each temperature, of KD-topk's
      target at the highest, and the cosines of the teacher's logit-layer class vectors;
      `figure1_high_temperature_seed=<s>.png`: the highest-temperature matrix of every column side by side.
    - `figure2_<cell>.png`: the KD student's gradient rescaling `w` against `q^T_t` at the end of training
      (on `rescaling_split`), and `figure2_start_<cell>.png` for a freshly initialised student.
    - `geometry_<cell>.png`: Proposition 1, the KD student's distance to each wrong class's vector
      against the teacher's probability of that class.
    - `figure3_<column>.png`: KD-topk's uplift over KD against `k`, from `sweep_csv` (default
      `figures_dir/topk_sweep.csv` when it exists, as written by `topk_sweep`).
    - `figure4_<cell>.png`, `figure5_<cell>.png`: with `ls_run_dir`, a table run on the same data whose
      teachers were trained with label smoothing: both teachers' heatmaps at the highest temperature
      (one shared colour scale) and histograms of their `q^T_t` at the lowest.
    - `summary.json` (every number), `block_contrast.csv`, `students.csv`, `topk_uplift.csv`.

    Args:
        run_dir: output directory of a `--mode=table` run.
        ls_run_dir: optional second table run whose teachers used `--teacher_label_smoothing`.
        figures_dir: where to write (default `run_dir/figures`).
        temperatures: temperatures of the teacher heatmaps; Figure 4 uses the highest, Figure 5 the lowest.
        topk: `k` of Figure 1's KD-topk panel (0 skips it).
        columns, seeds: restrict the cells analysed (default: all).
        split: examples of the heatmaps, histograms and geometry (`test`, `train`, `validation`).
        rescaling_split: examples of Figure 2 (`train`: the gradients the student was trained with).
        max_examples: cap on the examples taken from each split.
        sweep_csv: a `topk_sweep` CSV for Figure 3.
        log: progress messages.

    Returns:
        The summary written to `summary.json`.
    """
    temperatures = _check_temperatures(temperatures)
    for name, value in (("split", split), ("rescaling_split", rescaling_split)):
        if value not in _SPLITS:
            raise ValueError(f"`{name}` must be one of {', '.join(_SPLITS)}. Received: {name}={value!r}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"`max_examples` must be >= 1. Received: max_examples={max_examples}")
    run_dir = os.fspath(run_dir)
    figures_dir = os.fspath(figures_dir) if figures_dir else os.path.join(run_dir, FIGURES_DIR)
    cells = find_cells(run_dir, columns, seeds)
    ls_cells = (
        {_cell_key(cell): cell for cell in find_cells(ls_run_dir, columns, seeds)} if ls_run_dir else {}
    )
    for cell in cells:
        if _cell_key(cell) in ls_cells:
            _check_same_data(cell, ls_cells[_cell_key(cell)])
    os.makedirs(figures_dir, exist_ok=True)

    summary: dict = {
        "run_dir": os.path.abspath(run_dir),
        "ls_run_dir": os.path.abspath(ls_run_dir) if ls_run_dir else None,
        "split": split,
        "rescaling_split": rescaling_split,
        "temperatures": temperatures,
        "topk": int(topk) if topk else None,
        "cells": {},
        "label_smoothing": {},
        "figures": [],
    }
    contrast_rows, student_rows = [], []
    high_temperature_matrices: dict[int, dict] = {}
    high_title = f"teacher T={max(temperatures):g}"
    for cell in cells:
        log(f"Analysing {cell.name}")
        cell_summary, loaded = _analyze_cell(
            cell,
            figures_dir,
            temperatures,
            topk,
            split,
            rescaling_split,
            max_examples,
            summary["figures"],
            log,
        )
        summary["cells"][cell.name] = cell_summary
        high_temperature_matrices.setdefault(cell.seed, {})[cell] = loaded
        for title, values in cell_summary["teacher"].get("block_contrast", {}).items():
            contrast_rows.append(_contrast_row(cell, "teacher", title, values))
        for method, values in cell_summary["students"].items():
            student_rows.append(_student_row(cell, method, values))
        if _cell_key(cell) in ls_cells:
            comparison = _compare_with_ls(
                cell, ls_cells[_cell_key(cell)], loaded, figures_dir, temperatures, summary["figures"]
            )
            summary["label_smoothing"][cell.name] = comparison
            for teacher_name, values in comparison["heatmap"].items():
                if "block_contrast" in values:
                    contrast_rows.append(
                        _contrast_row(
                            cell, teacher_name, f"T={max(temperatures):g}", values["block_contrast"]
                        )
                    )
        keras.backend.clear_session()

    for seed, by_cell in high_temperature_matrices.items():
        matrices = {
            f"{cell.label}, {high_title}": entry["matrices"][high_title] for cell, entry in by_cell.items()
        }
        if len(matrices) > 1:
            boundaries = next(iter(by_cell.values()))["boundaries"]
            path = os.path.join(figures_dir, f"figure1_high_temperature_seed={seed}.png")
            plots.correlation_heatmaps(
                matrices,
                path,
                boundaries=boundaries,
                title=f"Teacher class correlations at T={max(temperatures):g}, by column",
            )
            summary["figures"].append(os.path.basename(path))

    sweep_csv = os.fspath(sweep_csv) if sweep_csv else os.path.join(figures_dir, SWEEP_CSV)
    uplift_rows = []
    if os.path.exists(sweep_csv):
        summary["topk_uplift"], uplift_rows = _figure3(sweep_csv, figures_dir, summary["figures"])
    summary["figures"] = sorted(set(summary["figures"]))
    _write_csv(os.path.join(figures_dir, BLOCK_CONTRAST_CSV), contrast_rows)
    _write_csv(os.path.join(figures_dir, STUDENTS_CSV), student_rows)
    if uplift_rows:
        _write_csv(os.path.join(figures_dir, UPLIFT_CSV), uplift_rows)
    atomic_write_text(
        os.path.join(figures_dir, SUMMARY_JSON), json.dumps(summary, indent=2, allow_nan=False) + "\n"
    )
    log(f"Figures and numbers: {figures_dir}")
    return summary


def _check_temperatures(temperatures) -> list[float]:
    checked = sorted({float(value) for value in temperatures})
    if not checked or checked[0] <= 0:
        raise ValueError(
            f"`temperatures` must be one or more values > 0. Received: temperatures={list(temperatures)}"
        )
    return checked


def _cell_key(cell: Cell):
    # "0.9" and "0.90" name the same column.
    return cell.column_key, _sort_key(cell.column_value), cell.seed


def _analyze_cell(cell, figures_dir, temperatures, topk, split, rescaling_split, max_examples, figures, log):
    teacher, info, splits = load_teacher_data(os.path.join(cell.directory, "teacher"))
    evaluation = _collect(_split_of(splits, split), max_examples)
    teacher_logits = _logits(teacher, evaluation.inputs)
    teacher_accuracy = _accuracy(teacher_logits, evaluation.labels)
    recorded = info.get("test_accuracy")
    # A teacher that no longer scores what it scored in training is not looking at its own data (or the
    # run capped its test split with --steps_per_epoch): say so beside the numbers.
    data_check = None
    if split == "test" and max_examples is None and recorded is not None:
        data_check = "match" if abs(teacher_accuracy - recorded) <= 0.01 else "mismatch"
        if data_check == "mismatch":
            log(
                f"Warning: the teacher of {cell.directory} scores {teacher_accuracy:.4f} on the regenerated "
                f"test split, but {recorded:.4f} was recorded in training."
            )
    num_classes = splits.num_classes
    kept = int(topk) if topk and topk < num_classes else None
    result = analysis.analyze_teacher(
        teacher_logits,
        evaluation.labels,
        splits.class_parents,
        kernel=analysis.logit_kernel(teacher),
        temperatures=temperatures,
        topk=kept,
    )
    path = os.path.join(figures_dir, f"figure1_{cell.name}.png")
    plots.correlation_heatmaps(
        result["matrices"],
        path,
        boundaries=result["boundaries"],
        title=f"Figure 1: {cell.label}, seed {cell.seed}",
    )
    figures.append(os.path.basename(path))
    teacher_summary = {
        **result["summary"],
        "recorded_test_accuracy": recorded,
        "data_check": data_check,
        "label_smoothing": info.get("label_smoothing", 0.0),
    }

    training = _collect(_split_of(splits, rescaling_split), max_examples)
    training_teacher_logits = _logits(teacher, training.inputs)
    students = {}
    for method, directory in cell.method_dirs().items():
        student, record = load_student(directory)
        student_logits = _logits(student, evaluation.inputs)
        entry = {
            "recorded_test_accuracy": record.get("test_accuracy"),
            f"{split}_accuracy": _accuracy(student_logits, evaluation.labels),
            "hyperparameters": record.get("hyperparameters", {}),
        }
        loss = experiment.method_loss(method, record.get("hyperparameters", {}), teacher, splits)
        rescaling = _rescaling(
            loss, training.labels, training_teacher_logits, _logits(student, training.inputs)
        )
        entry["rescaling_end"] = rescaling["summary"]
        geometry = _geometry(student, evaluation.inputs, teacher_logits, evaluation.labels)
        entry["geometry"] = {
            "pearson_distance_vs_teacher_prob": geometry["pearson"],
            "pearson_squared_gap_vs_log_teacher_prob": geometry["pearson_log_gap"],
            "normalized": geometry["normalized"],
        }
        if method == "kd":
            start = _fresh_copy(student, cell.seed + 1)
            rescaling_start = _rescaling(
                loss, training.labels, training_teacher_logits, _logits(start, training.inputs)
            )
            entry["rescaling_start"] = rescaling_start["summary"]
            for stage, values in (("", rescaling), ("start_", rescaling_start)):
                path = os.path.join(figures_dir, f"figure2_{stage}{cell.name}.png")
                when = "end" if not stage else "start"
                plots.rescaling_scatter(
                    values["arrays"]["teacher_probs"],
                    values["arrays"]["w"],
                    path,
                    title=f"KD, {cell.label}, {when} of training",
                )
                figures.append(os.path.basename(path))
            path = os.path.join(figures_dir, f"geometry_{cell.name}.png")
            wrong = geometry["wrong_class"]
            plots.geometry_scatter(
                geometry["teacher_probs"][wrong],
                geometry["distances"][wrong],
                path,
                title=f"KD student, {cell.label}",
            )
            figures.append(os.path.basename(path))
        students[method] = entry
    cell_summary = {
        "column_key": cell.column_key,
        "column_value": cell.column_value,
        "seed": cell.seed,
        "data_options": info.get("data_options", {}),
        "teacher": teacher_summary,
        "students": students,
    }
    loaded = {
        "matrices": result["matrices"],
        "boundaries": result["boundaries"],
        "teacher": teacher,
        "info": info,
        "splits": splits,
        "evaluation": evaluation,
        "teacher_logits": teacher_logits,
    }
    return cell_summary, loaded


def _compare_with_ls(cell, ls_cell, loaded, figures_dir, temperatures, figures) -> dict:
    info, splits, evaluation = loaded["info"], loaded["splits"], loaded["evaluation"]
    ls_teacher, ls_info, _ = load_teacher_data(os.path.join(ls_cell.directory, "teacher"))
    names = [
        _teacher_name(info.get("label_smoothing", 0.0)),
        _teacher_name(ls_info.get("label_smoothing", 0.0), other=True),
    ]
    logits = dict(zip(names, [loaded["teacher_logits"], _logits(ls_teacher, evaluation.inputs)], strict=True))
    high, low = max(temperatures), min(temperatures)
    heatmap = analysis.compare_teachers(logits, evaluation.labels, splits.class_parents, temperature=high)
    histogram = analysis.compare_teachers(logits, evaluation.labels, splits.class_parents, temperature=low)
    boundaries = (
        analysis.superclass_boundaries(splits.class_parents) if splits.class_parents is not None else ()
    )
    path = os.path.join(figures_dir, f"figure4_{cell.name}.png")
    plots.correlation_heatmaps(
        heatmap["matrices"],
        path,
        boundaries=boundaries,
        title=f"Figure 4: teacher class correlations at T={high:g}, {cell.label}",
        value_range="off_diagonal_shared",
    )
    figures.append(os.path.basename(path))
    path = os.path.join(figures_dir, f"figure5_{cell.name}.png")
    plots.probability_histograms(
        histogram["ground_truth_probs"],
        path,
        title=f"Figure 5: teacher $q_t$ at T={low:g}, {cell.label}",
    )
    figures.append(os.path.basename(path))
    accuracy = {}
    for directory_cell, teacher_name in zip((cell, ls_cell), names, strict=True):
        values = {
            "teacher": read_json(os.path.join(directory_cell.directory, "teacher", "record.json"))[
                "test_accuracy"
            ]
        }
        for method, directory in directory_cell.method_dirs().items():
            values[method] = read_json(os.path.join(directory, "record.json"))["test_accuracy"]
        accuracy[teacher_name] = values
    return {
        "teachers": names,
        "heatmap_temperature": high,
        "histogram_temperature": low,
        "heatmap": heatmap["summary"],
        "histogram": {
            name: {
                **values,
                "quantiles": {
                    f"q{int(100 * q)}": float(np.quantile(histogram["ground_truth_probs"][name], q))
                    for q in (0.1, 0.5, 0.9)
                },
            }
            for name, values in histogram["summary"].items()
        },
        "test_accuracy": accuracy,
    }


def _check_same_data(cell: Cell, ls_cell: Cell) -> None:
    """Both teachers must have seen the same examples: Figures 4 and 5 compare them example by example."""
    info = read_json(os.path.join(cell.directory, "teacher", experiment.TEACHER_INFO))
    ls_info = read_json(os.path.join(ls_cell.directory, "teacher", experiment.TEACHER_INFO))
    fields = ("dataset", "data_options", "seed")
    if any(info.get(field) != ls_info.get(field) for field in fields):
        raise ValueError(
            f"`ls_run_dir`'s teacher in {ls_cell.directory} was trained on other data than the one in "
            f"{cell.directory}: {[ls_info.get(field) for field in fields]} against "
            f"{[info.get(field) for field in fields]}."
        )


def _teacher_name(label_smoothing: float, other: bool = False) -> str:
    if label_smoothing:
        return f"teacher with LS (ε={label_smoothing:g})"
    return "teacher w/o LS" + (" (second run)" if other else "")


def _contrast_row(cell, teacher, matrix, values) -> dict:
    return {
        cell.column_key: cell.column_value,
        "seed": cell.seed,
        "teacher": teacher,
        "matrix": matrix,
        **{name: values[name] for name in ("within", "across", "difference", "ratio")},
    }


def _student_row(cell, method, values) -> dict:
    row = {
        cell.column_key: cell.column_value,
        "seed": cell.seed,
        "method": method,
        "recorded_test_accuracy": values["recorded_test_accuracy"],
    }
    for stage in ("rescaling_end", "rescaling_start"):
        if stage in values:
            for name in ("pearson", "spearman", "w_mean", "w_median"):
                row[f"{stage}.{name}"] = values[stage][name]
    row["geometry.pearson"] = values["geometry"]["pearson_distance_vs_teacher_prob"]
    row["geometry.pearson_log_gap"] = values["geometry"]["pearson_squared_gap_vs_log_teacher_prob"]
    return row


def _write_csv(path: str, rows: Sequence[dict]) -> None:
    fields = []
    for row in rows:
        fields.extend(name for name in row if name not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


# Figure 3: KD-topk against k.


def _figure3(sweep_csv: str, figures_dir: str, figures: list) -> tuple[dict, list[dict]]:
    with open(sweep_csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"`sweep_csv` holds no results. Received: sweep_csv={sweep_csv!r}")
    column_key = rows[0]["column_key"]
    series, uplift_rows = {}, []
    for column_value in sorted({row["column_value"] for row in rows}, key=_sort_key):
        chosen = [row for row in rows if row["column_value"] == column_value]
        kd_runs = {
            int(row["seed"]): 100 * float(row["test_accuracy"]) for row in chosen if row["method"] == "kd"
        }
        topk_runs = [row for row in chosen if row["method"] == "kd_topk"]
        if not kd_runs or not topk_runs:
            continue
        # Each k is compared with KD of its own seed (same teacher and initialisation), then averaged.
        records = [
            (int(row["topk"]), 100 * float(row["test_accuracy"]) - kd_runs[int(row["seed"])])
            for row in topk_runs
            if int(row["seed"]) in kd_runs
        ]
        values = analysis.topk_uplift_series(records, 0.0)
        values["kd_accuracy"] = float(np.mean(list(kd_runs.values())))
        label = f"{_DISPLAY_NAMES.get(column_key, column_key)}={column_value}"
        path = os.path.join(figures_dir, f"figure3_{column_key}={column_value}.png")
        plots.topk_uplift(
            values["ks"],
            values["uplift"],
            path,
            stds=values["uplift_std"] if max(values["runs"]) > 1 else None,
            title=f"Figure 3: KD-topk over KD ({values['kd_accuracy']:.2f}%), {label}",
        )
        figures.append(os.path.basename(path))
        series[f"{column_key}={column_value}"] = values
        for index, k in enumerate(values["ks"]):
            uplift_rows.append(
                {
                    column_key: column_value,
                    "k": k,
                    "uplift_points": values["uplift"][index],
                    "uplift_std": values["uplift_std"][index],
                    "seeds": values["runs"][index],
                    "kd_accuracy": values["kd_accuracy"],
                }
            )
    return series, uplift_rows
