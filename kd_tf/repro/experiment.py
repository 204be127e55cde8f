"""Experiments: build data, models and a method from a config; train teachers and students; write results."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Callable, Sequence

import keras
import numpy as np

import data as datasets
import models
from kd_tf import losses, offline
from kd_tf.distiller import class_vectors
from kd_tf.io import atomic_write_text, read_json, replaced_atomically  # noqa: F401 (read_json is re-exported)
from kd_tf.repro import paper as paper_numbers
from kd_tf.repro import store
from kd_tf.repro.outputs import print_now
from kd_tf.training import TrainConfig, load_model, save_model, train

TEACHER_FILE = "teacher.keras"
TEACHER_INFO = "teacher.json"
RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
RESULTS_MARKDOWN = "results.md"


def load_splits(dataset: str, data_options: dict, batch_size: int, seed: int) -> datasets.Splits:
    return datasets.module(dataset).load(batch_size=batch_size, seed=seed, **data_options)


def build_model(name: str, num_classes: int, input_shape, model_options: dict, weight_decay: float):
    return models.builder(name)(
        num_classes=num_classes, input_shape=tuple(input_shape), weight_decay=weight_decay, **model_options
    )


def input_shape_of(splits: datasets.Splits):
    inputs_spec = splits.train.element_spec[0]
    return tuple(inputs_spec.shape[1:])


def method_loss(method: str, hyperparameters: dict, teacher: keras.Model | None, splits: datasets.Splits):
    """Builds the method's loss, filling in what it needs from the teacher and the data."""
    arguments = dict(hyperparameters)
    needs = losses.registered()[method].needs
    if "class_vectors" in needs:
        if teacher is None:
            raise ValueError(f"`method={method}` needs a teacher (its logit-layer weights).")
        arguments["class_vectors"] = class_vectors(teacher)
    if "class_parents" in needs:
        if splits.class_parents is None:
            raise ValueError(f"`method={method}` needs a class hierarchy, which this dataset does not have.")
        arguments["class_parents"] = splits.class_parents
    return losses.get(method, **arguments)


def save_teacher(teacher: keras.Model, directory: str, info: dict) -> None:
    """Writes the teacher as a `.keras` file beside a JSON of what it was trained on."""
    save_model(teacher, os.path.join(directory, TEACHER_FILE))
    atomic_write_text(os.path.join(directory, TEACHER_INFO), json.dumps(info, indent=2, sort_keys=True))


class TeacherMismatchError(ValueError):
    """A saved teacher does not fit the requested run."""


def load_teacher(directory: str, dataset: str, num_classes: int, data_options: dict | None = None):
    """Loads a teacher saved by `save_teacher` in Keras safe mode, refusing one for another task."""
    model_path = os.path.join(directory, TEACHER_FILE)
    info_path = os.path.join(directory, TEACHER_INFO)
    if not (os.path.exists(model_path) and os.path.exists(info_path)):
        raise TeacherMismatchError(
            f"`teacher_dir` {directory!r} holds no trained teacher ({TEACHER_FILE} and {TEACHER_INFO}). "
            "Train one first with --mode=teacher and the same --dataset."
        )
    info = read_json(info_path)
    if info.get("dataset") != dataset:
        raise TeacherMismatchError(
            f"The teacher in `teacher_dir` {directory!r} was trained on dataset {info.get('dataset')!r}, "
            f"not {dataset!r}."
        )
    if info.get("num_classes") != num_classes:
        raise TeacherMismatchError(
            f"The teacher in `teacher_dir` {directory!r} predicts {info.get('num_classes')} classes; "
            f"this run has {num_classes}."
        )
    if data_options is not None:
        trained_on = info.get("data_options", {})
        differing = {
            key: (trained_on.get(key), value)
            for key, value in data_options.items()
            if key in trained_on and trained_on[key] != value
        }
        if differing:
            details = ", ".join(
                f"{key}: teacher {old!r}, now {new!r}" for key, (old, new) in differing.items()
            )
            raise TeacherMismatchError(
                f"The teacher in `teacher_dir` {directory!r} was trained on other data ({details})."
            )
    teacher = load_model(model_path)
    teacher.trainable = False
    return teacher, info


def format_table(
    records: Sequence[dict],
    column_key: str = "tau",
    metric: str = "test_accuracy",
    paper: dict[str, tuple] | None = None,
) -> str:
    """Markdown table: one row per method (teacher first, the paper's labels), one column per `column_key`
    value, mean ± std over seeds; then the teacher–student gap and KD's share of it. `paper` (row label ->
    the paper's (mean, spread or `None`)) adds a column with the paper's numbers."""
    rows, columns, means, spreads = table_cells(records, column_key, metric)
    header = "| method | " + " | ".join(f"{column_key} = {value}" for value in columns)
    header += " | paper |" if paper else " |"
    width = len(columns) + 1 + bool(paper)
    lines = [header, "|---" * width + "|"]
    for i, name in enumerate(rows):
        cells = [_cell(mean, std) for mean, std in zip(means[i], spreads[i], strict=True)]
        if paper:
            cells.append(_cell(*paper.get(name, (np.nan, None))))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    per_column = [
        paper_numbers.gap_rows(dict(zip(rows, means[:, j], strict=True))) for j in range(len(columns))
    ]
    if paper:
        per_column.append(paper_numbers.gap_rows({row: mean for row, (mean, _) in paper.items()}))
    names = list(dict.fromkeys(name for column in per_column for name, _ in column))
    for name in names:
        cells = [dict(column).get(name, "") for column in per_column]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(mean: float, spread: float | None) -> str:
    """A table cell: `mean`, or `mean ± spread`; empty without a mean."""
    if not np.isfinite(mean):
        return ""
    if spread is None or not np.isfinite(spread):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {spread:.2f}"


RESULTS_FIGURE = "results.png"


def table_cells(records: Sequence[dict], column_key: str, metric: str = "test_accuracy"):
    """(row names, column values, mean %, std % over seeds) of a table's cells; `nan` where there is none
    (a single seed has no spread)."""
    columns = sorted({record[column_key] for record in records})
    rows = list(dict.fromkeys(row_label(record) for record in records))
    means = np.full((len(rows), len(columns)), np.nan)
    spreads = np.full_like(means, np.nan)
    for i, name in enumerate(rows):
        for j, value in enumerate(columns):
            scores = [100.0 * r[metric] for r in records if r[column_key] == value and row_label(r) == name]
            if scores:
                means[i, j] = np.mean(scores)
                if len(scores) > 1:
                    spreads[i, j] = np.std(scores, ddof=1)
    return rows, columns, means, spreads


def write_results_figure(output_dir: str, records: Sequence[dict], column_key: str, title: str) -> str:
    """`results.png` beside `results.md`: accuracy per method and column, seed spread as error bars."""
    from kd_tf import plots

    rows, columns, means, spreads = table_cells(records, column_key)
    labels = [f"τ = {value}" if column_key == "tau" else str(value) for value in columns]
    return plots.accuracy_bars(rows, labels, means, spreads, os.path.join(output_dir, RESULTS_FIGURE), title)


def row_label(record: dict) -> str:
    """A table row's name: "Teacher", or the method's name in the paper ("KD-pt")."""
    return "Teacher" if record["role"] == "teacher" else losses.label(record["method"])


def write_results(output_dir: str, records: Sequence[dict], table: str, header: str = "") -> None:
    """Writes results as JSON, CSV and a markdown table, each atomically."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, RESULTS_JSON), json.dumps(list(records), indent=2) + "\n")
    flat = [_flatten(record) for record in records]
    fields = sorted({key for row in flat for key in row}, key=_field_order)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_text(os.path.join(output_dir, RESULTS_CSV), buffer.getvalue())
    atomic_write_text(os.path.join(output_dir, RESULTS_MARKDOWN), header + table)


_LEADING_FIELDS = ("dataset", "tau", "seed", "role", "method", "model", "test_accuracy")


def _field_order(name: str):
    return (_LEADING_FIELDS.index(name) if name in _LEADING_FIELDS else len(_LEADING_FIELDS), name)


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{prefix}{key}."))
        elif isinstance(value, list | tuple):
            flat[prefix + key] = " ".join(str(item) for item in value)
        else:
            flat[prefix + key] = value
    return flat


@dataclasses.dataclass
class StudyConfig:
    """A whole table: a teacher per setting, then every method, over seeds."""

    dataset: str
    methods: Sequence[str]
    seeds: Sequence[int]
    settings: Sequence[dict]  # data options per table column, e.g. [{"tau": 0.0}, {"tau": 0.5}]
    column_key: str
    data_options: dict
    teacher_model: str
    student_model: str
    teacher_model_options: dict
    student_model_options: dict
    teacher_train: TrainConfig
    student_train: TrainConfig
    hyperparameters: dict  # flag name -> value, shared by every method
    method_overrides: dict  # method -> {flag name -> value}
    teacher_label_smoothing: float = 0.0
    precision: str = "float32"
    load_splits: Callable[[dict, int], datasets.Splits] | None = None
    teacher_cache: str = (
        "off"  # `offline.MODES`: whether students distil from a cache of the teacher's outputs
    )


def train_teacher(study: StudyConfig, splits, data_options: dict, seed: int, directory: str):
    """Trains and saves a teacher in `directory` (or reuses the one a finished run left there)."""
    record = store.finished(directory)
    if record is not None:
        teacher, _ = load_teacher(directory, study.dataset, splits.num_classes)
        cache_dir = os.path.join(directory, offline.CACHE_DIR)
        if offline.wanted(study.teacher_cache, splits) and not offline.present(cache_dir):
            # A teacher from a run without the cache. Whether a cache fits is each student's check (a stale
            # one sends it to build its own): checking it here too would run the same fingerprints twice.
            offline.build(teacher, splits, cache_dir)
        return record, teacher
    keras.utils.set_random_seed(seed)
    teacher = build_model(
        study.teacher_model,
        splits.num_classes,
        input_shape_of(splits),
        study.teacher_model_options,
        study.teacher_train.weight_decay,
    )
    if study.teacher_label_smoothing:
        loss, method = losses.get("ls", label_smoothing=study.teacher_label_smoothing), "teacher_ls"
    else:
        loss, method = losses.get("student"), "teacher"
    result = train(
        student=teacher,
        teacher=None,
        loss=loss,
        splits=splits,
        config=study.teacher_train,
        precision=study.precision,
        run_dir=directory,
    )
    record = _record(study, "teacher", method, seed, data_options, result, {})
    info = {
        "dataset": study.dataset,
        "num_classes": splits.num_classes,
        "data_options": scalar_options(data_options),
        "seed": seed,
        "model": study.teacher_model,
        "label_smoothing": study.teacher_label_smoothing,
        "test_accuracy": record["test_accuracy"],
    }
    if offline.wanted(study.teacher_cache, splits):
        # Before the teacher's files: a saved teacher's students find its outputs cached, and a kill during
        # the build leaves a run that resumes (`teacher.json` marks a finished teacher).
        offline.build(teacher, splits, os.path.join(directory, offline.CACHE_DIR))
    save_teacher(teacher, directory, info)
    store.keep(directory, record)
    return record, teacher


def train_student(
    study, splits, data_options, seed, method, teacher, teacher_record, directory, teacher_dir=None
) -> dict:
    """Distils `method` from `teacher` into a new student in `directory` (or reuses a finished run).

    Where `study.teacher_cache` asks for it, the student trains on the teacher's cached outputs: those in
    `teacher_dir`, or, when it holds none that fit, a cache built in the student's own directory.
    """
    cache_dirs = None
    if offline.wanted(study.teacher_cache, splits):
        cache_dirs = [os.path.join(path, offline.CACHE_DIR) for path in (teacher_dir, directory) if path]

    def train_it() -> dict:
        student, result, hyperparameters = distil_as(
            study, method, teacher, splits, seed, directory, cache_dirs
        )
        save_model(student, os.path.join(directory, "student.keras"))
        record = _record(study, "student", method, seed, data_options, result, hyperparameters)
        return {**record, "teacher_test_accuracy": teacher_record.get("test_accuracy")}

    return store.reuse_or_train(directory, train_it)


def distil(
    method: str,
    values: dict,
    teacher: keras.Model | None,
    splits: datasets.Splits,
    model_name: str,
    model_options: dict,
    config: TrainConfig,
    *,
    precision: str = "float32",
    seed: int = 0,
    run_dir: str | None = None,
    cache_dirs: Sequence[str] | None = None,
    refuse_damaged_cache: bool = False,
):
    """Builds a new `model_name` student (seeded `seed + 1`) and trains it with `method`.

    `values` maps hyperparameter flag names to values; the method takes the ones it accepts. With
    `cache_dirs`, a method that needs the teacher's outputs reads them from the first of those directories
    that holds a fitting cache (`kd_tf.offline`; built in the last one otherwise) instead of running the
    teacher at every step; a damaged cache is rebuilt (with a warning naming the file), or, with
    `refuse_damaged_cache`, refused. Returns `(student, train()'s result, the hyperparameters used)`; the result's
    `teacher_cache` says whether the teacher's outputs came from a cache.
    """
    hyperparameters = losses.hyperparameters_of(method, values)
    loss = method_loss(method, hyperparameters, teacher, splits)
    needs_teacher = bool(loss.payload_size(splits.num_classes))
    cached = needs_teacher and bool(cache_dirs)
    if cached:
        splits = offline.distillation_splits(
            splits, loss, offline.load_or_build(teacher, splits, list(cache_dirs), refuse_damaged_cache)
        )
    keras.utils.set_random_seed(seed + 1)
    student = build_model(
        model_name, splits.num_classes, input_shape_of(splits), model_options, config.weight_decay
    )
    result = train(
        student=student,
        teacher=teacher if needs_teacher and not cached else None,
        loss=loss,
        splits=splits,
        config=config,
        precision=precision,
        run_dir=run_dir,
    )
    return student, result | {"teacher_cache": cached}, hyperparameters


def distil_as(study, method: str, teacher, splits, seed: int, run_dir: str, cache_dirs=None):
    """`distil` with a study's student: its model, options, training, precision and each method's values
    (`study`: any config with the fields of `StudyConfig` that name them)."""
    return distil(
        method,
        {**study.hyperparameters, **study.method_overrides.get(method, {})},
        teacher,
        splits,
        study.student_model,
        study.student_model_options,
        study.student_train,
        precision=study.precision,
        seed=seed,
        run_dir=run_dir,
        cache_dirs=cache_dirs,
        refuse_damaged_cache=getattr(study, "teacher_cache", "auto") == "on",
    )


def run_study(
    study: StudyConfig,
    output_dir: str,
    *,
    log: Callable[[str], None] = print_now,
    jobs: int = 1,
    deterministic: bool = False,
) -> list[dict]:
    """Trains a teacher per (setting, seed) and every method from it; returns the records.

    Finished runs are recorded in `output_dir/runs/<column>/<seed>/<method>/record.json` and reused when the
    study is run again, so an interrupted study resumes where it stopped. With `jobs > 1` the cells train in
    that many worker processes (`kd_tf.parallel`): every teacher first, then every student, each from its
    teacher's saved file; `study.load_splits` must then be picklable, and `deterministic` is passed on.
    """
    if jobs > 1:
        return _run_study_in_parallel(study, output_dir, log, jobs, deterministic)
    total = len(study.settings) * len(study.seeds) * (1 + len(study.methods))
    done = 0
    records = []
    for setting in study.settings:
        column_value = _column_text(study.column_key, setting)
        for seed in study.seeds:
            data_options = {**study.data_options, **setting}
            cell_dir = _cell_dir(output_dir, study.column_key, setting, seed)
            teacher_record, teacher = train_teacher(
                study,
                cell_splits(study, data_options, seed),
                data_options,
                seed,
                os.path.join(cell_dir, "teacher"),
            )
            done += 1
            log(_progress(done, total, study.column_key, column_value, seed, "teacher", teacher_record))
            records.append(teacher_record)
            for method in study.methods:
                record = train_student(
                    study,
                    cell_splits(study, data_options, seed),
                    data_options,
                    seed,
                    method,
                    teacher,
                    teacher_record,
                    os.path.join(cell_dir, method),
                    teacher_dir=os.path.join(cell_dir, "teacher"),
                )
                done += 1
                log(_progress(done, total, study.column_key, column_value, seed, method, record))
                records.append(record)
    return records


def _column_text(column_key: str, setting: dict) -> str:
    """A setting's column value for progress lines, with its other options (`0.5 task_seed=2`)."""
    return f"{setting[column_key]}" + "".join(f" {k}={v}" for k, v in setting.items() if k != column_key)


def _cell_dir(output_dir: str, column_key: str, setting: dict, seed: int) -> str:
    """`runs/<column>=<value>[,<option>=<value>...]/seed=<seed>`: a setting's other options (a synthetic
    table's task seeds) name the directory beside its column."""
    others = "".join(f",{key}={value}" for key, value in setting.items() if key != column_key)
    return os.path.join(output_dir, "runs", f"{column_key}={setting[column_key]}{others}", f"seed={seed}")


@dataclasses.dataclass(frozen=True)
class _Cell:
    """One training of a study: the teacher (`method=None`) or one method's student of a (setting, seed)."""

    study: StudyConfig
    column_value: object
    seed: int
    data_options: dict
    directory: str
    method: str | None = None


def cell_splits(study: StudyConfig, data_options: dict, seed: int) -> datasets.Splits:
    """A cell's data, loaded afresh after seeding: every cell (the teacher and each method's student) sees
    the same batches in the same order whatever ran before it, in this process or another."""
    keras.utils.set_random_seed(seed)
    return study.load_splits(data_options, seed)


def _train_cell(cell: _Cell) -> dict:
    """Trains one cell from what is on disk (a student's teacher from its saved file); returns its record."""
    splits = cell_splits(cell.study, cell.data_options, cell.seed)
    if cell.method is None:
        record, _ = train_teacher(cell.study, splits, cell.data_options, cell.seed, cell.directory)
        return record
    teacher_dir = os.path.join(os.path.dirname(cell.directory), "teacher")
    teacher, _ = load_teacher(teacher_dir, cell.study.dataset, splits.num_classes)
    teacher_record = read_json(os.path.join(teacher_dir, "record.json"))
    return train_student(
        cell.study,
        splits,
        cell.data_options,
        cell.seed,
        cell.method,
        teacher,
        teacher_record,
        cell.directory,
        teacher_dir=teacher_dir,
    )


def _run_study_in_parallel(study, output_dir, log, jobs, deterministic) -> list[dict]:
    from kd_tf import parallel

    teachers, students_of = [], {}
    for setting in study.settings:
        column_value = _column_text(study.column_key, setting)
        for seed in study.seeds:
            data_options = {**study.data_options, **setting}
            cell_dir = _cell_dir(output_dir, study.column_key, setting, seed)
            teacher = _Cell(study, column_value, seed, data_options, os.path.join(cell_dir, "teacher"))
            teachers.append(teacher)
            students_of[teacher.directory] = [
                dataclasses.replace(teacher, directory=os.path.join(cell_dir, method), method=method)
                for method in study.methods
            ]
    total = len(teachers) + sum(len(students) for students in students_of.values())
    found = {}

    def finish(cell, record):
        found[cell.directory] = record
        method = cell.method or "teacher"
        log(_progress(len(found), total, study.column_key, cell.column_value, cell.seed, method, record))

    def unfinished(cells):
        """The cells still to train; a finished one is reported and reused here, without a worker."""
        pending = []
        for cell in cells:
            record = store.finished(cell.directory)
            if record is None:
                pending.append(cell)
            else:
                finish(cell, record)
        return pending

    def students_after(cell, record):
        del record
        return unfinished(students_of[cell.directory]) if cell.method is None else []

    # Every teacher first; a teacher's students as soon as it has finished (they read it from its file).
    start = unfinished(teachers)
    waiting = {cell.directory for cell in start}
    start += [
        student
        for teacher in teachers
        if teacher.directory not in waiting
        for student in students_after(teacher, None)
    ]
    finished = parallel.run_unordered(
        _train_cell, start, jobs, deterministic=deterministic, precision=study.precision, then=students_after
    )
    for cell, record in finished:
        finish(cell, record)
    # The order of the one-process run: per column and seed, the teacher, then the methods.
    return [
        found[cell.directory] for teacher in teachers for cell in [teacher, *students_of[teacher.directory]]
    ]


def scalar_options(values: dict) -> dict:
    """The options of `values` a record keeps: strings, numbers, booleans and `None`."""
    return {key: value for key, value in values.items() if isinstance(value, str | int | float | bool | None)}


def _record(study, role, method, seed, data_options, result, hyperparameters) -> dict:
    column_value = data_options.get(study.column_key, study.dataset)
    record = {
        "dataset": study.dataset,
        study.column_key: column_value,
        "seed": seed,
        "role": role,
        "method": method,
        "model": study.teacher_model if role == "teacher" else study.student_model,
        "hyperparameters": hyperparameters,
        "data_options": scalar_options(data_options),
    }
    measures = datasets.facts(study.dataset).measure(data_options, seed)
    if measures:
        record["data_measures"] = measures
    return {
        **record,
        "epochs": (study.teacher_train if role == "teacher" else study.student_train).epochs,
        **result,
    }


def describe_data(records: Sequence[dict], column_key: str) -> list[str]:
    """One line per setting (its column and any data option that varies between the records, e.g. a task
    seed) and seed of `records`, saying what its dataset measures of the data (the synthetic task's label
    non-linearity); none for a dataset that measures nothing."""
    varying = varying_options(records, column_key)
    lines = {}
    for record in records:
        text = datasets.facts(record["dataset"]).describe(record.get("data_measures", {}))
        key = (setting_label(record, column_key, varying), record["seed"])
        if text and key not in lines:
            lines[key] = f"{key[0]} seed={key[1]}: {text}"
    return list(lines.values())


def varying_options(records: Sequence[dict], column_key: str) -> list[str]:
    """The data options besides `column_key` whose value differs between `records` (a table over tasks)."""
    names = sorted({name for record in records for name in record.get("data_options", {})} - {column_key})
    return [name for name in names if len({repr(r.get("data_options", {}).get(name)) for r in records}) > 1]


def setting_label(record: dict, column_key: str, varying: Sequence[str] = ()) -> str:
    """`tau=0.5`, or `tau=0.5 task_seed=2` where `task_seed` is one of the `varying` options."""
    options = record.get("data_options", {})
    setting = {column_key: record.get(column_key), **{name: options.get(name) for name in varying}}
    return f"{column_key}={_column_text(column_key, setting)}"


def _progress(done, total, column_key, column_value, seed, method, record) -> str:
    line = (
        f"[{done:>3}/{total}] {column_key}={column_value} seed={seed} {method:<10} "
        f"test accuracy {100 * record['test_accuracy']:.2f}%  "
        f"(best validation {100 * record['best_validation_accuracy']:.2f}% at epoch {record['best_epoch']}, "
        f"{record['wall_time_s']:.0f} s)"
    )
    if record["role"] == "teacher":
        described = datasets.facts(record["dataset"]).describe(record.get("data_measures", {}))
        line += f"\n      data: {described}" if described else ""
    return line
