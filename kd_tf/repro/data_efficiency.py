"""The data efficiency of distillation (Phuong & Lampert 2019): a fixed teacher per task setting; students
of several kinds (residual MLP, linear, deep-linear) learn from the first `n` examples of one pool, for
growing `n`, with hard labels (Student) or with the teacher's outputs (KD and the partial methods).

Every finished cell is a `record.json` under `<output_dir>/runs/`; a rerun reuses them, so an interrupted
sweep resumes where it stopped. The summary files (CSV, markdown, PNGs) are rewritten from the records.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np

from data import synthetic
from kd_tf import plots, training
from kd_tf.io import atomic_write_text
from kd_tf.repro import grid, outputs, store, sweeps, tables, trainers

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
    student, result, hyperparameters = trainers.distil(
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
    student_logits = sweeps.logits_of(student, task.arrays.x_test)
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
        "data_measures": task.measures,
    }


def _group_key(config):
    """The cells of one setting and seed share a teacher."""

    def key(cell: dict) -> tuple:
        setting = {name: cell[name] for name in config.settings[0]} if config.settings else {}
        return _setting_name(setting), cell["seed"]

    return key


def run_data_efficiency(
    config: DataEfficiencyConfig,
    output_dir: str,
    *,
    log: Callable[[str], None] = outputs.print_now,
    header: str = "",
    jobs: int = 1,
    deterministic: bool = False,
) -> list[dict]:
    """Runs (or resumes) the whole grid and writes its CSV, JSON, markdown summary and figure.

    The cells of one setting and seed share a teacher; with `jobs > 1` those groups train in that many
    worker processes (`kd_tf.parallel`), each printing its own progress lines.
    """
    records = grid.run(
        config,
        output_dir,
        config.cells(),
        _group_key(config),
        _data_efficiency_group,
        log=log,
        jobs=jobs,
        deterministic=deterministic,
    )
    write_data_efficiency(output_dir, records, header)
    return records


def _data_efficiency_group(group: grid.Group, log: Callable[[str], None] = outputs.print_now) -> dict:
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
                data = synthetic.describe_measures(task.measures)
                log(
                    f"teacher {_setting_name(setting)} seed={cell['seed']}: test accuracy "
                    f"{100 * task.teacher_record['test_accuracy']:.2f}%; {data}"
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
    tables.write_csv(os.path.join(output_dir, DATA_EFFICIENCY_CSV), records, DATA_EFFICIENCY_FIELDS)
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
    atomic_write_text(os.path.join(output_dir, tables.RESULTS_MARKDOWN), text)
    atomic_write_text(
        os.path.join(output_dir, tables.RESULTS_JSON),
        json.dumps({"records": list(records), "summary": rows}, indent=2) + "\n",
    )
    return {"rows": rows, "figure": figure}
