"""Two sweeps from the companion papers: the data efficiency of distillation and the teacher's sweet spot.

- `data_efficiency` (Phuong & Lampert 2019): a fixed teacher per task setting; students of several kinds
  (residual MLP, linear, deep-linear) learn from the first `n` examples of one pool, for growing `n`, with
  hard labels (Student) or with the teacher's outputs (KD and the partial methods).
- `sweet_spot` ("Controlling the Quality of Distillation"): teachers trained on a grid of batch sizes ×
  epochs; for each, its accuracy, how much class-similarity information its outputs carry, and the
  accuracy of a KD student distilled from it.

Every finished cell is a `record.json` under `<output_dir>/runs/`; a rerun reuses them, so an interrupted
sweep resumes where it stopped. The summary files (CSV, markdown, PNGs) are rewritten from the records.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence

import keras
import numpy as np

from data import synthetic
from kd_tf import analysis, checkpoint, losses, plots, training
from kd_tf.io import atomic_write_text
from kd_tf.repro import experiment, store

DATA_EFFICIENCY_METHODS = ("student", "kd", "kd_pt", "kd_sim")
DATA_EFFICIENCY_MODELS = ("mlp", "linear", "deep_linear")
DATA_EFFICIENCY_CSV = "data_efficiency.csv"
DATA_EFFICIENCY_FIELDS = (
    "tau",
    "difficulty",
    "seed",
    "student_model",
    "method",
    "train_examples",
    "test_accuracy",
    "test_agreement",
    "best_validation_accuracy",
    "best_evaluation",
    "steps",
    "teacher_test_accuracy",
    "wall_time_s",
)
SWEET_SPOT_CSV = "sweet_spot.csv"
SWEET_SPOT_FIELDS = (
    "tau",
    "seed",
    "teacher_batch_size",
    "teacher_epochs",
    "teacher_steps",
    "teacher_test_accuracy",
    "similarity_within",
    "similarity_across",
    "similarity_contrast",
    "similarity_ratio",
    "nontarget_entropy",
    "student_method",
    "student_test_accuracy",
    "student_best_validation_accuracy",
    "baseline_test_accuracy",
    "kd_gain",
    "student_over_teacher",
    "wall_time_s",
)
# What the sweet-spot summary relates to the student's accuracy.
SWEET_SPOT_PREDICTORS = ("teacher_test_accuracy", "similarity_contrast", "nontarget_entropy")


def _print_now(line: str) -> None:
    print(line, flush=True)


# The data-efficiency sweep.


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
        if self.evaluations <= 0 or self.student_steps < self.evaluations:
            raise ValueError(
                "`student_steps` must be at least `evaluations` (> 0). Received: "
                f"student_steps={self.student_steps}, evaluations={self.evaluations}"
            )
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


@dataclasses.dataclass
class _Task:
    """One setting and seed: the arrays (the teacher's examples first, then the students' pool), the
    teacher and its test predictions."""

    arrays: synthetic.SyntheticArrays
    teacher: keras.Model
    teacher_record: dict
    teacher_test_predictions: np.ndarray


def _logits(model: keras.Model, inputs: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    # Eager calls: `predict` would trace a new function for every one of the sweep's many models.
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(inputs[start : start + batch_size], training=False))
            for start in range(0, len(inputs), batch_size)
        ]
    )


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
    study = _teacher_study(config, data_options)
    teacher_record, teacher = experiment.train_teacher(
        study, teacher_splits, {**data_options, "train_examples": config.teacher_examples}, seed, directory
    )
    teacher_logits = _logits(teacher, arrays.x_test)
    return _Task(
        arrays=arrays,
        teacher=teacher,
        teacher_record=teacher_record,
        teacher_test_predictions=np.argmax(teacher_logits, axis=-1),
    )


def _teacher_study(config, data_options: dict) -> experiment.StudyConfig:
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
    )


def _data_efficiency_cell(config: DataEfficiencyConfig, task: _Task, cell: dict, directory: str) -> dict:
    method, model = cell["method"], cell["student_model"]
    steps_between_checks = config.student_steps // config.evaluations
    train_config = dataclasses.replace(config.student_train, epochs=config.evaluations)
    keras.utils.set_random_seed(cell["seed"] + 1)  # before the pipeline: the seed enters its shuffle order
    # The first n examples of the pool as an endless stream, an "epoch" being one validation interval:
    # every student trains for the same number of steps, so the comparison is of data, not of compute.
    splits = synthetic.splits(
        task.arrays,
        train_config.batch_size,
        cell["seed"],
        train_count=cell["train_examples"],
        train_offset=config.teacher_examples,
        examples_per_epoch=steps_between_checks * train_config.batch_size,
    )
    student, result, hyperparameters = experiment.distil(
        method,
        {**config.hyperparameters, **config.method_overrides.get(method, {})},
        task.teacher,
        splits,
        model,
        config.student_model_options.get(model, {}),
        train_config,
        precision=config.precision,
        seed=cell["seed"],
        run_dir=directory,
    )
    student_logits = _logits(student, task.arrays.x_test)
    agreement = float(np.mean(np.argmax(student_logits, axis=-1) == task.teacher_test_predictions))
    return {
        **cell,
        "test_accuracy": result["test_accuracy"],
        "test_agreement": agreement,
        "best_validation_accuracy": result["best_validation_accuracy"],
        "best_evaluation": result["best_epoch"],
        "steps": steps_between_checks * config.evaluations,
        "teacher_test_accuracy": task.teacher_record["test_accuracy"],
        "wall_time_s": result["wall_time_s"],
        "hyperparameters": hyperparameters,
    }


def run_data_efficiency(
    config: DataEfficiencyConfig,
    output_dir: str,
    *,
    log: Callable[[str], None] = _print_now,
    header: str = "",
    jobs: int = 1,
    deterministic: bool = False,
) -> list[dict]:
    """Runs (or resumes) the whole grid and writes its CSV, JSON, markdown summary and figure.

    The cells of one setting and seed share a teacher; with `jobs > 1` those groups train in that many
    worker processes (`kd_tf.parallel`), each printing its own progress lines.
    """
    cells = config.cells()
    groups: dict = {}
    for index, cell in enumerate(cells, start=1):
        setting = {key: cell[key] for key in config.settings[0]} if config.settings else {}
        groups.setdefault((_setting_name(setting), cell["seed"]), _Group(config, output_dir, len(cells), []))
        groups[(_setting_name(setting), cell["seed"])].members.append((index, cell))
    found = _run_groups(
        _data_efficiency_group, list(groups.values()), log, jobs, deterministic, config.precision
    )
    records = [found[index] for index in range(1, len(cells) + 1)]
    write_data_efficiency(output_dir, records, header)
    return records


@dataclasses.dataclass(frozen=True)
class _Group:
    """Cells of a sweep that share a teacher (plain values, so that a worker process can take them)."""

    config: object
    output_dir: str
    total: int
    members: list  # (1-based index in the sweep, cell)


def _run_groups(function, groups, log, jobs, deterministic, precision) -> dict:
    """`function(group, log)` for every group, here or in `jobs` worker processes (which print their own
    progress); returns {cell index: record}."""
    found = {}
    if jobs > 1 and len(groups) > 1:
        from kd_tf import parallel

        for _, records in parallel.run_unordered(
            function, groups, min(jobs, len(groups)), deterministic=deterministic, precision=precision
        ):
            found.update(records)
    else:
        for group in groups:
            found.update(function(group, log))
    return found


def _data_efficiency_group(group: _Group, log: Callable[[str], None] = _print_now) -> dict:
    """Trains (or reuses) one group's teacher and students; returns {cell index: record}."""
    config, records, task = group.config, {}, None
    for index, cell in group.members:
        setting = {key: cell[key] for key in config.settings[0]} if config.settings else {}
        setting_dir = os.path.join(group.output_dir, "runs", _setting_name(setting), f"seed={cell['seed']}")
        cell_dir = os.path.join(
            setting_dir, cell["student_model"], cell["method"], f"n={cell['train_examples']}"
        )

        def train_cell(setting=setting, setting_dir=setting_dir, cell=cell, cell_dir=cell_dir) -> dict:
            nonlocal task
            if task is None:
                task = _prepare_task(config, setting, cell["seed"], os.path.join(setting_dir, "teacher"))
                log(
                    f"teacher {_setting_name(setting)} seed={cell['seed']}: test accuracy "
                    f"{100 * task.teacher_record['test_accuracy']:.2f}%"
                )
            return _data_efficiency_cell(config, task, cell, cell_dir)

        record = store.reuse_or_train(cell_dir, train_cell, drop_resume_state=True)
        records[index] = record
        log(
            f"[{index:>3}/{group.total}] {_setting_name(setting)} seed={cell['seed']} "
            f"{cell['student_model']:<11} {cell['method']:<7} n={cell['train_examples']:<6} "
            f"test {100 * record['test_accuracy']:.2f}%  agreement {100 * record['test_agreement']:.2f}%  "
            f"({record['wall_time_s']:.0f} s)"
        )
    return records


def learning_curve_exponent(sizes, errors) -> float | None:
    """The slope `κ` of `log error ≈ c − κ log n` by least squares: how fast the error falls with data.

    Phuong & Lampert bound a distilled linear classifier's transfer risk by `O(n^-κ)` with `κ` set by the
    data geometry; a larger fitted `κ` is faster learning. Points with zero error are left out (their log
    is unbounded); `None` when fewer than two points remain.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if sizes.shape != errors.shape:
        raise ValueError(f"`sizes` and `errors` must match. Received: {sizes.shape} and {errors.shape}")
    keep = errors > 0
    if keep.sum() < 2 or np.unique(sizes[keep]).size < 2:
        return None
    slope, _ = np.polyfit(np.log(sizes[keep]), np.log(errors[keep]), 1)
    return float(-slope)


def monotonicity_drops(values, tolerance: float = 0.0) -> int:
    """How many times a curve (ordered by training-set size) falls by more than `tolerance`."""
    values = np.asarray(values, dtype=np.float64)
    return int(np.sum(np.diff(values) < -tolerance))


def summarize_data_efficiency(records: Sequence[dict]) -> list[dict]:
    """One row per (setting, student model, method): accuracies by size (mean over seeds) and speed.

    `gain_first`/`gain_last` are the method's accuracy minus the hard-label Student's at the smallest and
    the largest size; `exponent` is `learning_curve_exponent` of the transfer risk `1 − agreement`;
    `drops` counts falls of the mean accuracy curve by more than 0.5 points as `n` grows.
    """
    groups: dict = {}
    model_order = list(dict.fromkeys(record["student_model"] for record in records))
    for record in records:
        key = (record["tau"], record["difficulty"], record["student_model"], record["method"])
        groups.setdefault(key, {}).setdefault(record["train_examples"], []).append(record)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], model_order.index(k[2]), _method_order(k[3]))):
        by_size = groups[key]
        sizes = sorted(by_size)
        accuracy = [float(np.mean([r["test_accuracy"] for r in by_size[n]])) for n in sizes]
        agreement = [float(np.mean([r["test_agreement"] for r in by_size[n]])) for n in sizes]
        rows.append(
            {
                "tau": key[0],
                "difficulty": key[1],
                "student_model": key[2],
                "method": key[3],
                "sizes": sizes,
                "accuracy": accuracy,
                "accuracy_std": [float(np.std([r["test_accuracy"] for r in by_size[n]])) for n in sizes],
                "agreement": agreement,
                "seeds": len(by_size[sizes[0]]),
                "exponent": learning_curve_exponent(sizes, 1.0 - np.asarray(agreement)),
                "drops": monotonicity_drops(accuracy, tolerance=0.005),
                "teacher_test_accuracy": float(
                    np.mean([r["teacher_test_accuracy"] for r in by_size[sizes[0]]])
                ),
            }
        )
    baselines = {
        (row["tau"], row["difficulty"], row["student_model"]): row
        for row in rows
        if row["method"] == "student"
    }
    for row in rows:
        baseline = baselines.get((row["tau"], row["difficulty"], row["student_model"]))
        if baseline is not None and baseline["sizes"] == row["sizes"]:
            row["gain_first"] = row["accuracy"][0] - baseline["accuracy"][0]
            row["gain_last"] = row["accuracy"][-1] - baseline["accuracy"][-1]
    return rows


def _method_order(method: str) -> tuple:
    order = ("student", "kd", "kd_pt", "kd_sim", "kd_topk", "kd_rel")
    return (order.index(method) if method in order else len(order), method)


def format_data_efficiency(rows: Sequence[dict]) -> str:
    """Markdown: per setting, accuracy by size for every student model and method, then its speed."""
    lines = []
    settings = sorted({(row["tau"], row["difficulty"]) for row in rows})
    for tau, difficulty in settings:
        group = [row for row in rows if (row["tau"], row["difficulty"]) == (tau, difficulty)]
        sizes = group[0]["sizes"]
        teacher = group[0]["teacher_test_accuracy"]
        lines.append(f"### τ = {tau}, difficulty = {difficulty} (teacher {100 * teacher:.2f}%)\n")
        lines.append(
            "| student | method | "
            + " | ".join(_size_label(n) for n in sizes)
            + " | gain at smallest n | gain at largest n | κ (risk ∝ n^-κ) | drops |"
        )
        lines.append("|---|---|" + "---:|" * (len(sizes) + 4))
        for row in group:
            cells = [
                f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if row["seeds"] > 1 else "")
                for mean, std in zip(row["accuracy"], row["accuracy_std"], strict=True)
            ]
            gains = [
                "" if row["method"] == "student" or row.get(name) is None else f"{100 * row[name]:+.2f}"
                for name in ("gain_first", "gain_last")
            ]
            exponent = "" if row["exponent"] is None else f"{row['exponent']:.3f}"
            lines.append(
                f"| {row['student_model']} | {row['method']} | "
                + " | ".join(cells)
                + f" | {gains[0]} | {gains[1]} | {exponent} | {row['drops']} |"
            )
        lines.append("")
    return "\n".join(lines)


def _size_label(size: int) -> str:
    return f"{size // 1000}K" if size >= 1000 and size % 1000 == 0 else str(size)


def write_data_efficiency(output_dir: str, records: Sequence[dict], header: str = "") -> dict:
    """Writes `data_efficiency.csv` (one row per cell), `results.json`, `results.md` and the PNG."""
    os.makedirs(output_dir, exist_ok=True)
    _write_csv(os.path.join(output_dir, DATA_EFFICIENCY_CSV), records, DATA_EFFICIENCY_FIELDS)
    rows = summarize_data_efficiency(records)
    figure = plots.learning_curves(rows, os.path.join(output_dir, "data_efficiency.png"))
    text = (
        "# Data efficiency of distillation (Phuong & Lampert 2019)\n\n"
        + header
        + "Test accuracy (%) of students trained on the first n examples of one pool, each for the same "
        "number of steps; κ is the fitted exponent of the transfer risk (disagreement with the teacher), "
        "gains are over the hard-label Student, drops count falls of > 0.5 points as n grows.\n\n"
        + format_data_efficiency(rows)
    )
    atomic_write_text(os.path.join(output_dir, experiment.RESULTS_MARKDOWN), text)
    atomic_write_text(
        os.path.join(output_dir, experiment.RESULTS_JSON),
        json.dumps({"records": list(records), "summary": rows}, indent=2) + "\n",
    )
    return {"rows": rows, "figure": figure}


def _write_csv(path: str, records: Sequence[dict], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: record.get(name) for name in fields})
    atomic_write_text(path, buffer.getvalue())


# The teacher's sweet spot.


@dataclasses.dataclass
class SweetSpotConfig:
    """Teachers on a grid `batch_sizes` × `epoch_grid`, each distilled into a `method` student.

    For one seed and batch size a single teacher is trained for `max(epoch_grid)` epochs at a constant
    learning rate, and its weights after each epoch count of the grid are that cell's teacher: the same
    weights separate runs of those lengths would end with (same seed, same batches).
    """

    batch_sizes: Sequence[int]
    epoch_grid: Sequence[int]
    seeds: Sequence[int]
    data_options: dict
    teacher_model: str
    teacher_model_options: dict
    student_model: str
    student_model_options: dict
    teacher_train: training.TrainConfig
    student_train: training.TrainConfig
    method: str
    hyperparameters: dict
    method_overrides: dict
    analysis_temperature: float = 1.0
    precision: str = "float32"

    def __post_init__(self):
        for name in ("batch_sizes", "epoch_grid"):
            values = list(getattr(self, name))
            if not values or any(value <= 0 for value in values) or len(set(values)) != len(values):
                raise ValueError(f"`{name}` must be distinct positive integers. Received: {values}")
        train_examples = self.data_options.get("train_examples", 0)
        if max(self.batch_sizes) > train_examples:
            raise ValueError(
                "Every teacher batch size must be at most the training examples. Received: "
                f"batch_sizes={list(self.batch_sizes)}, train_examples={train_examples}"
            )
        if self.teacher_train.lr_schedule != "constant":
            raise ValueError(
                "The sweet-spot grid reads every epoch count off one run, which needs a constant learning "
                f"rate. Received: lr_schedule={self.teacher_train.lr_schedule!r}"
            )
        if not self.analysis_temperature > 0:
            raise ValueError(f"`analysis_temperature` must be > 0. Received: {self.analysis_temperature!r}")

    def cells(self) -> list[dict]:
        return [
            {"seed": seed, "teacher_batch_size": batch_size, "teacher_epochs": epochs}
            for seed in self.seeds
            for batch_size in sorted(self.batch_sizes)
            for epochs in sorted(self.epoch_grid)
        ]


class _Snapshots(keras.callbacks.Callback):
    """Saves the model after each epoch count in `paths` (epoch count -> teacher directory)."""

    def __init__(self, model_to_save: keras.Model, paths: dict, info: dict):
        super().__init__()
        self.model_to_save, self.paths, self.info = model_to_save, paths, info

    def on_epoch_end(self, epoch, logs=None):
        directory = self.paths.get(epoch + 1)
        if directory is not None:
            experiment.save_teacher(self.model_to_save, directory, {**self.info, "epochs": epoch + 1})


def nontarget_entropy(probabilities, labels) -> float:
    """Mean entropy of the non-target distribution, normalised to [0, 1] by `log(M − 1)`.

    For each example the probabilities of the `M − 1` classes other than its label are renormalised to sum
    to one; a teacher whose non-target mass is spread evenly scores 1, one that puts it all on one class 0.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or probabilities.shape[1] < 3:
        raise ValueError(f"`probabilities` must be [N, M] with M >= 3. Received: shape={probabilities.shape}")
    if labels.shape != probabilities.shape[:1]:
        raise ValueError(f"`labels` must be [N]. Received: {labels.shape} for {probabilities.shape}")
    rest = probabilities.copy()
    rest[np.arange(len(labels)), labels] = 0.0
    total = rest.sum(axis=1, keepdims=True)
    rest = np.divide(rest, total, out=np.zeros_like(rest), where=total > 0)
    entropy = -np.sum(rest * np.log(np.where(rest > 0, rest, 1.0)), axis=1)
    return float(np.mean(entropy) / math.log(probabilities.shape[1] - 1))


def teacher_information(logits, labels, class_parents, temperature: float = 1.0) -> dict:
    """What a teacher's outputs say beyond the label: super-class structure and non-target spread.

    `similarity_within`/`_across` are the mean Pearson correlations of class-mean output distributions
    (Figure 1's matrix) for class pairs inside one super-class and across super-classes;
    `similarity_contrast` is their difference, `similarity_ratio` their ratio (or `None`, see
    `analysis.block_contrast`).
    """
    probabilities = analysis.softmax(logits, temperature)
    contrast = analysis.block_contrast(
        analysis.class_correlation_matrix(probabilities, labels), class_parents
    )
    return {
        "teacher_test_accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels)),
        "similarity_within": contrast["within"],
        "similarity_across": contrast["across"],
        "similarity_contrast": contrast["difference"],
        "similarity_ratio": contrast["ratio"],
        "nontarget_entropy": nontarget_entropy(probabilities, labels),
    }


def _train_sweet_spot_teachers(
    config: SweetSpotConfig, seed: int, batch_size: int, seed_dir: str, log
) -> None:
    """Trains the teacher of one (seed, batch size) row, saving it after each epoch count of the grid."""
    paths = {
        epochs: os.path.join(seed_dir, f"batch={batch_size}", f"epochs={epochs}", "teacher")
        for epochs in config.epoch_grid
    }
    if all(os.path.exists(os.path.join(path, experiment.TEACHER_INFO)) for path in paths.values()):
        return
    run_dir = os.path.join(seed_dir, f"batch={batch_size}", "training")
    finished = checkpoint.finished_epochs(os.path.join(run_dir, "backup"))
    if any(
        epochs <= finished and not os.path.exists(os.path.join(path, experiment.TEACHER_INFO))
        for epochs, path in paths.items()
    ):
        # Stopped between a checkpoint and a snapshot: that snapshot cannot be recovered, so start over.
        shutil.rmtree(run_dir)
    data_options = {**config.data_options, "batch_size": batch_size}
    # The global seed enters tf.data's shuffle order too: set it first, so a resumed sweep sees the same batches.
    keras.utils.set_random_seed(seed)
    splits = synthetic.load(**data_options, seed=seed)
    teacher = experiment.build_model(
        config.teacher_model,
        splits.num_classes,
        experiment.input_shape_of(splits),
        config.teacher_model_options,
        config.teacher_train.weight_decay,
    )
    info = {
        "dataset": "synthetic",
        "num_classes": splits.num_classes,
        "data_options": experiment._jsonable(config.data_options),
        "seed": seed,
        "model": config.teacher_model,
        "label_smoothing": 0.0,
        "batch_size": batch_size,
    }
    train_config = dataclasses.replace(
        config.teacher_train, batch_size=batch_size, epochs=max(config.epoch_grid)
    )
    log(f"teacher seed={seed} batch={batch_size}: {train_config.epochs} epochs")
    training.train(
        student=teacher,
        teacher=None,
        loss=losses.get("student"),
        splits=splits,
        config=train_config,
        precision=config.precision,
        run_dir=run_dir,
        callbacks=[_Snapshots(teacher, paths, info)],
    )
    shutil.rmtree(run_dir, ignore_errors=True)


def _sweet_spot_student(config: SweetSpotConfig, splits, method: str, teacher, seed: int, directory: str):

    def train_it() -> dict:
        _, result, hyperparameters = experiment.distil_as(config, method, teacher, splits, seed, directory)
        return {**result, "method": method, "hyperparameters": hyperparameters}

    return store.reuse_or_train(directory, train_it, drop_resume_state=True)


def run_sweet_spot(
    config: SweetSpotConfig,
    output_dir: str,
    *,
    log: Callable[[str], None] = _print_now,
    header: str = "",
    jobs: int = 1,
    deterministic: bool = False,
) -> list[dict]:
    """Runs (or resumes) the grid and writes its CSV, JSON, markdown summary and heatmaps.

    The cells of one seed share a baseline student; with `jobs > 1` the seeds train in that many worker
    processes (`kd_tf.parallel`), each printing its own progress lines.
    """
    cells = config.cells()
    groups: dict = {}
    for index, cell in enumerate(cells, start=1):
        groups.setdefault(cell["seed"], _Group(config, output_dir, len(cells), [])).members.append(
            (index, cell)
        )
    found = _run_groups(_sweet_spot_group, list(groups.values()), log, jobs, deterministic, config.precision)
    records = [found[index] for index in range(1, len(cells) + 1)]
    write_sweet_spot(output_dir, records, header)
    return records


def _sweet_spot_group(group: _Group, log: Callable[[str], None] = _print_now) -> dict:
    """Trains (or reuses) one seed's teachers and students; returns {cell index: record}."""
    config, output_dir, records = group.config, group.output_dir, {}
    for index, cell in group.members:
        seed, batch_size, epochs = cell["seed"], cell["teacher_batch_size"], cell["teacher_epochs"]
        seed_dir = os.path.join(output_dir, "runs", f"seed={seed}")
        cell_dir = os.path.join(seed_dir, f"batch={batch_size}", f"epochs={epochs}")
        train_cell = functools.partial(_sweet_spot_cell, config, cell, seed_dir, cell_dir, log)
        record = store.reuse_or_train(cell_dir, train_cell, drop_resume_state=True)
        records[index] = record
        log(
            f"[{index:>3}/{group.total}] seed={seed} batch={batch_size:<5} epochs={epochs:<4} teacher "
            f"{100 * record['teacher_test_accuracy']:.2f}%  contrast {record['similarity_contrast']:.3f}  "
            f"non-target entropy {record['nontarget_entropy']:.3f}  {config.method} student "
            f"{100 * record['student_test_accuracy']:.2f}% ({100 * record['kd_gain']:+.2f})"
        )
    return records


def _sweet_spot_cell(config, cell: dict, seed_dir: str, cell_dir: str, log) -> dict:
    """One cell of the sweet spot: its teachers (shared by the cells of its batch size), the baseline
    student, the teacher's information and its distilled student."""
    seed, batch_size, epochs = cell["seed"], cell["teacher_batch_size"], cell["teacher_epochs"]
    start = time.perf_counter()
    _train_sweet_spot_teachers(config, seed, batch_size, seed_dir, log)
    arrays = synthetic.arrays(**config.data_options, seed=seed)
    keras.utils.set_random_seed(seed)  # before the pipeline: the seed enters its shuffle order
    splits = synthetic.splits(arrays, config.student_train.batch_size, seed)
    baseline = _sweet_spot_student(
        config, splits, "student", None, seed, os.path.join(seed_dir, "baseline_student")
    )
    teacher, _ = experiment.load_teacher(os.path.join(cell_dir, "teacher"), "synthetic", splits.num_classes)
    logits = _logits(teacher, arrays.x_test)
    information = teacher_information(
        logits, arrays.y_test, arrays.class_parents, config.analysis_temperature
    )
    student = _sweet_spot_student(
        config, splits, config.method, teacher, seed, os.path.join(cell_dir, config.method)
    )
    steps_per_epoch = config.data_options["train_examples"] // batch_size
    return {
        "tau": config.data_options.get("tau"),
        **cell,
        "teacher_steps": steps_per_epoch * epochs,
        **information,
        "student_method": config.method,
        "student_test_accuracy": student["test_accuracy"],
        "student_best_validation_accuracy": student["best_validation_accuracy"],
        "baseline_test_accuracy": baseline["test_accuracy"],
        "kd_gain": student["test_accuracy"] - baseline["test_accuracy"],
        "wall_time_s": time.perf_counter() - start,
        "hyperparameters": student["hyperparameters"],
    }


def grid_means(records: Sequence[dict], quantity: str) -> tuple[list[int], list[int], np.ndarray]:
    """`(batch_sizes, epochs, [len(batch_sizes), len(epochs)] mean of quantity over seeds)`."""
    batch_sizes = sorted({record["teacher_batch_size"] for record in records})
    epochs = sorted({record["teacher_epochs"] for record in records})
    sums = np.zeros((len(batch_sizes), len(epochs)))
    counts = np.zeros_like(sums)
    for record in records:
        value = record.get(quantity)
        if value is None:
            continue
        row, column = batch_sizes.index(record["teacher_batch_size"]), epochs.index(record["teacher_epochs"])
        sums[row, column] += value
        counts[row, column] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return batch_sizes, epochs, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# What the predictors are related to: the KD student's accuracy, and how far it lands above its teacher
# (similarity information should matter beyond the teacher's accuracy, which the student largely tracks).
SWEET_SPOT_OUTCOMES = ("student_test_accuracy", "student_over_teacher")


def with_derived(records: Sequence[dict]) -> list[dict]:
    """The records with `student_over_teacher` (KD student minus teacher test accuracy) filled in."""
    return [
        {**record, "student_over_teacher": record["student_test_accuracy"] - record["teacher_test_accuracy"]}
        for record in records
    ]


def sweet_spot_correlations(records: Sequence[dict]) -> dict:
    """`{outcome: {predictor: {pearson, spearman, cells}}}` over grid cells (means over seeds)."""
    records = with_derived(records)
    correlations = {}
    for outcome in SWEET_SPOT_OUTCOMES:
        _, _, target = grid_means(records, outcome)
        correlations[outcome] = {}
        for predictor in SWEET_SPOT_PREDICTORS:
            _, _, values = grid_means(records, predictor)
            keep = np.isfinite(values) & np.isfinite(target)
            correlations[outcome][predictor] = {
                "pearson": analysis.pearson(values[keep], target[keep]),
                "spearman": analysis.spearman(values[keep], target[keep]),
                "cells": int(keep.sum()),
            }
    return correlations


_HEATMAPS = {
    "teacher_test_accuracy": ("teacher test accuracy (%)", 100.0),
    "similarity_contrast": ("class-similarity contrast (within − across)", 1.0),
    "nontarget_entropy": ("non-target entropy / log(M−1)", 1.0),
    "student_test_accuracy": ("KD student test accuracy (%)", 100.0),
    "kd_gain": ("KD student − hard-label student (points)", 100.0),
    "student_over_teacher": ("KD student − its teacher (points)", 100.0),
}


def format_sweet_spot(records: Sequence[dict], correlations: dict) -> str:
    records = with_derived(records)
    lines = []
    for quantity, (title, scale) in _HEATMAPS.items():
        batch_sizes, epochs, means = grid_means(records, quantity)
        lines.append(f"### {title}\n")
        lines.append("| batch size \\ epochs | " + " | ".join(str(e) for e in epochs) + " |")
        lines.append("|---|" + "---:|" * len(epochs))
        digits = 2 if scale == 100.0 else 3
        for row, batch_size in enumerate(batch_sizes):
            lines.append(
                f"| {batch_size} | "
                + " | ".join(f"{scale * value:.{digits}f}" for value in means[row])
                + " |"
            )
        lines.append("")
    lines.append("### Correlations over grid cells (means over seeds)\n")
    lines.append(
        "| quantity | r with student accuracy | ρ with student accuracy | r with student − teacher "
        "| ρ with student − teacher | cells |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for predictor in SWEET_SPOT_PREDICTORS:
        numbers = [
            correlations[outcome][predictor][name]
            for outcome in SWEET_SPOT_OUTCOMES
            for name in ("pearson", "spearman")
        ]
        cells = correlations[SWEET_SPOT_OUTCOMES[0]][predictor]["cells"]
        lines.append(
            f"| {predictor} | "
            + " | ".join("–" if value is None else f"{value:+.3f}" for value in numbers)
            + f" | {cells} |"
        )
    best = _best_cells(records)
    lines.append(
        f"\nBest teacher (test accuracy): batch {best['teacher'][0]}, {best['teacher'][1]} epochs. "
        f"Best teacher to distil from (KD student accuracy): batch {best['student'][0]}, "
        f"{best['student'][1]} epochs.\n"
    )
    return "\n".join(lines)


def _best_cells(records) -> dict:
    best = {}
    for name, quantity in (("teacher", "teacher_test_accuracy"), ("student", "student_test_accuracy")):
        batch_sizes, epochs, means = grid_means(records, quantity)
        row, column = np.unravel_index(np.nanargmax(means), means.shape)
        best[name] = (batch_sizes[row], epochs[column])
    return best


def write_sweet_spot(output_dir: str, records: Sequence[dict], header: str = "") -> dict:
    """Writes `sweet_spot.csv`, `results.json`, `results.md`, a heatmap PNG per quantity and a scatter."""
    os.makedirs(output_dir, exist_ok=True)
    records = with_derived(records)
    _write_csv(os.path.join(output_dir, SWEET_SPOT_CSV), records, SWEET_SPOT_FIELDS)
    correlations = sweet_spot_correlations(records)
    figures = []
    for quantity, (title, scale) in _HEATMAPS.items():
        batch_sizes, epochs, means = grid_means(records, quantity)
        figures.append(
            plots.grid_heatmap(
                scale * means,
                row_labels=batch_sizes,
                column_labels=epochs,
                path=os.path.join(output_dir, f"sweet_spot_{quantity}.png"),
                title=title,
                xlabel="teacher epochs",
                ylabel="teacher batch size",
            )
        )
    panels = []
    for predictor in SWEET_SPOT_PREDICTORS:
        _, _, values = grid_means(records, predictor)
        panels.append((_HEATMAPS[predictor][0], values.ravel() * _HEATMAPS[predictor][1]))
    for outcome, name in zip(
        SWEET_SPOT_OUTCOMES, ("sweet_spot_scatter", "sweet_spot_scatter_over_teacher"), strict=True
    ):
        _, _, target = grid_means(records, outcome)
        figures.append(
            plots.predictor_scatter(
                panels,
                100.0 * target.ravel(),
                os.path.join(output_dir, f"{name}.png"),
                ylabel=_HEATMAPS[outcome][0],
            )
        )
    text = (
        "# The teacher's sweet spot (batch size × epochs)\n\n"
        + header
        + "Means over seeds per grid cell; the similarity measures are of the teacher's test-set outputs.\n\n"
        + format_sweet_spot(records, correlations)
    )
    atomic_write_text(os.path.join(output_dir, experiment.RESULTS_MARKDOWN), text)
    atomic_write_text(
        os.path.join(output_dir, experiment.RESULTS_JSON),
        json.dumps({"records": list(records), "correlations": correlations}, indent=2) + "\n",
    )
    return {"correlations": correlations, "figures": figures}
