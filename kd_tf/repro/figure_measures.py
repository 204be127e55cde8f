"""The numbers behind Figures 1-5 for one cell: the teacher's class correlations, each student's gradient
rescaling and logit geometry (Figure 2, Proposition 1), and the comparison with a label-smoothed teacher."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from kd_tf import analysis
from kd_tf.io import read_json
from kd_tf.repro import trainers
from kd_tf.repro.figure_cells import Cell, Examples, load_examples, load_student, load_teacher_data
from kd_tf.repro.figure_request import AnalysisRequest

# Equal-count bins of q^T_t in which Figure 2's w is averaged for the summary.
_RESCALING_BINS = 10


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


def fresh_copy(model: keras.Model, seed: int) -> keras.Model:
    """The same architecture with newly initialised weights: the student at the start of training."""
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)


# One cell: its teacher, then its students.


@dataclasses.dataclass(frozen=True)
class CellTeacher:
    """A cell's teacher, its `teacher.json`, its regenerated data and its logits on the analysed examples."""

    model: keras.Model
    info: dict
    splits: Any
    evaluation: Examples
    logits: np.ndarray


@dataclasses.dataclass(frozen=True)
class KdArrays:
    """The KD student's points of Figure 2 (end and start of training) and of the geometry figure."""

    rescaling_end: dict
    rescaling_start: dict
    wrong_teacher_probs: np.ndarray
    wrong_distances: np.ndarray


@dataclasses.dataclass(frozen=True)
class CellMeasures:
    """What one cell adds to the summary, and the arrays its figures are drawn from."""

    summary: dict
    teacher: CellTeacher
    matrices: dict
    boundaries: list
    kd: KdArrays | None


def measure_cell(cell: Cell, request: AnalysisRequest, log: Callable[[str], None]) -> CellMeasures:
    """Loads a cell's teacher and students and measures them on `request`'s splits and temperatures."""
    model, info, splits = load_teacher_data(os.path.join(cell.directory, "teacher"))
    evaluation = load_examples(splits, request.split, request.max_examples)
    teacher = CellTeacher(model, info, splits, evaluation, _logits(model, evaluation.inputs))
    teacher_summary, result = _measure_teacher(cell, teacher, request, log)
    students, kd = _measure_students(cell, teacher, request)
    summary = {
        "column_key": cell.column_key,
        "column_value": cell.column_value,
        "seed": cell.seed,
        "data_options": info.get("data_options", {}),
        "teacher": teacher_summary,
        "students": students,
    }
    return CellMeasures(summary, teacher, result["matrices"], result["boundaries"], kd)


def _measure_teacher(cell, teacher: CellTeacher, request: AnalysisRequest, log) -> tuple[dict, dict]:
    labels = teacher.evaluation.labels
    teacher_accuracy = _accuracy(teacher.logits, labels)
    recorded = teacher.info.get("test_accuracy")
    # A teacher that no longer scores what it scored in training is not looking at its own data (or the
    # run capped its test split with --steps_per_epoch): say so beside the numbers.
    data_check = None
    if request.split == "test" and request.max_examples is None and recorded is not None:
        data_check = "match" if abs(teacher_accuracy - recorded) <= 0.01 else "mismatch"
        if data_check == "mismatch":
            log(
                f"Warning: the teacher of {cell.directory} scores {teacher_accuracy:.4f} on the regenerated "
                f"test split, but {recorded:.4f} was recorded in training."
            )
    topk = request.topk
    result = analysis.analyze_teacher(
        teacher.logits,
        labels,
        teacher.splits.class_parents,
        kernel=analysis.logit_kernel(teacher.model),
        temperatures=list(request.temperatures),
        topk=int(topk) if topk and topk < teacher.splits.num_classes else None,
    )
    summary = {
        **result["summary"],
        "recorded_test_accuracy": recorded,
        "data_check": data_check,
        "label_smoothing": teacher.info.get("label_smoothing", 0.0),
    }
    return summary, result


def _measure_students(cell, teacher: CellTeacher, request: AnalysisRequest) -> tuple[dict, KdArrays | None]:
    training = load_examples(teacher.splits, request.rescaling_split, request.max_examples)
    training_logits = _logits(teacher.model, training.inputs)
    students, kd = {}, None
    for method, directory in cell.method_dirs().items():
        student, record = load_student(directory)
        hyperparameters = record.get("hyperparameters", {})
        student_logits = _logits(student, teacher.evaluation.inputs)
        entry = {
            "recorded_test_accuracy": record.get("test_accuracy"),
            f"{request.split}_accuracy": _accuracy(student_logits, teacher.evaluation.labels),
            "hyperparameters": hyperparameters,
        }
        loss = trainers.method_loss(method, hyperparameters, teacher.model, teacher.splits)
        rescaling = _rescaling(loss, training.labels, training_logits, _logits(student, training.inputs))
        entry["rescaling_end"] = rescaling["summary"]
        geometry = _geometry(student, teacher.evaluation.inputs, teacher.logits, teacher.evaluation.labels)
        entry["geometry"] = {
            "pearson_distance_vs_teacher_prob": geometry["pearson"],
            "pearson_squared_gap_vs_log_teacher_prob": geometry["pearson_log_gap"],
            "normalized": geometry["normalized"],
        }
        if method == "kd":
            start = fresh_copy(student, cell.seed + 1)
            rescaling_start = _rescaling(
                loss, training.labels, training_logits, _logits(start, training.inputs)
            )
            entry["rescaling_start"] = rescaling_start["summary"]
            wrong = geometry["wrong_class"]
            kd = KdArrays(
                rescaling["arrays"],
                rescaling_start["arrays"],
                geometry["teacher_probs"][wrong],
                geometry["distances"][wrong],
            )
        students[method] = entry
    return students, kd


# Figures 4 and 5: the cell's teacher against one trained with label smoothing on the same data.


@dataclasses.dataclass(frozen=True)
class LsComparison:
    """The two teachers' numbers, with their heatmap matrices and ground-truth probabilities to draw."""

    summary: dict
    matrices: dict
    ground_truth_probs: dict
    boundaries: list | tuple


def compare_with_ls(
    cell: Cell, ls_cell: Cell, teacher: CellTeacher, temperatures: tuple[float, ...]
) -> LsComparison:
    """Both teachers on the cell's examples: heatmaps at the highest temperature, `q^T_t` at the lowest."""
    splits, evaluation = teacher.splits, teacher.evaluation
    ls_teacher, ls_info, _ = load_teacher_data(os.path.join(ls_cell.directory, "teacher"))
    names = [
        _teacher_name(teacher.info.get("label_smoothing", 0.0)),
        _teacher_name(ls_info.get("label_smoothing", 0.0), other=True),
    ]
    logits = dict(zip(names, [teacher.logits, _logits(ls_teacher, evaluation.inputs)], strict=True))
    high, low = max(temperatures), min(temperatures)
    heatmap = analysis.compare_teachers(logits, evaluation.labels, splits.class_parents, temperature=high)
    histogram = analysis.compare_teachers(logits, evaluation.labels, splits.class_parents, temperature=low)
    boundaries = (
        analysis.superclass_boundaries(splits.class_parents) if splits.class_parents is not None else ()
    )
    summary = {
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
        "test_accuracy": {
            name: _recorded_accuracies(directory_cell)
            for directory_cell, name in zip((cell, ls_cell), names, strict=True)
        },
    }
    return LsComparison(summary, heatmap["matrices"], histogram["ground_truth_probs"], boundaries)


def _recorded_accuracies(cell: Cell) -> dict:
    values = {"teacher": read_json(os.path.join(cell.directory, "teacher", "record.json"))["test_accuracy"]}
    for method, directory in cell.method_dirs().items():
        values[method] = read_json(os.path.join(directory, "record.json"))["test_accuracy"]
    return values


def _teacher_name(label_smoothing: float, other: bool = False) -> str:
    if label_smoothing:
        return f"teacher with LS (ε={label_smoothing:g})"
    return "teacher w/o LS" + (" (second run)" if other else "")
