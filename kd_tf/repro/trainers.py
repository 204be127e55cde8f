"""Teachers and students: data, models and a method's loss built from a study's configuration; a teacher
trained and saved (with its outputs cached for its students where the data allows); a student distilled."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import keras

import data as datasets
import models
from kd_tf import losses, offline
from kd_tf.distiller import class_vectors
from kd_tf.io import atomic_write_text, read_json
from kd_tf.repro import store
from kd_tf.training import TrainConfig, load_model, save_model, train

TEACHER_FILE = "teacher.keras"
TEACHER_INFO = "teacher.json"


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


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """A teacher to train: its data set, architecture and training, and whether its outputs are cached for
    its students (`offline.MODES`); `column_key` names the data option its record is filed under."""

    dataset: str
    model: str
    model_options: dict
    train: TrainConfig
    label_smoothing: float = 0.0
    precision: str = "float32"
    cache: str = "off"
    cache_max_mb: float = float("inf")
    column_key: str = "tau"


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
    teacher_cache_max_mb: float = float("inf")  # the largest cache they read (`offline.decide`)

    @property
    def teacher(self) -> TeacherSpec:
        """What `train_teacher` needs of the study."""
        return TeacherSpec(
            dataset=self.dataset,
            model=self.teacher_model,
            model_options=self.teacher_model_options,
            train=self.teacher_train,
            label_smoothing=self.teacher_label_smoothing,
            precision=self.precision,
            cache=self.teacher_cache,
            cache_max_mb=self.teacher_cache_max_mb,
            column_key=self.column_key,
        )


def train_teacher(teacher_spec: TeacherSpec, splits, data_options: dict, seed: int, directory: str):
    """Trains and saves a teacher in `directory` (or reuses the one a finished run left there)."""
    spec = teacher_spec
    record = store.finished(directory)
    if record is not None:
        teacher, _ = load_teacher(directory, spec.dataset, splits.num_classes)
        cache_dir = os.path.join(directory, offline.CACHE_DIR)
        if offline.wanted(spec.cache, splits, spec.cache_max_mb) and not offline.present(cache_dir):
            # A teacher from a run without the cache. Whether a cache fits is each student's check (a stale
            # one sends it to build its own): checking it here too would run the same fingerprints twice.
            offline.build(teacher, splits, cache_dir)
        return record, teacher
    keras.utils.set_random_seed(seed)
    teacher = build_model(
        spec.model,
        splits.num_classes,
        input_shape_of(splits),
        spec.model_options,
        spec.train.weight_decay,
    )
    if spec.label_smoothing:
        loss, method = losses.get("ls", label_smoothing=spec.label_smoothing), "teacher_ls"
    else:
        loss, method = losses.get("student"), "teacher"
    result = train(
        student=teacher,
        teacher=None,
        loss=loss,
        splits=splits,
        config=spec.train,
        precision=spec.precision,
        run_dir=directory,
    )
    record = _record(spec.dataset, spec.column_key, seed, data_options, ("teacher", method, spec.model), {})
    record = {**record, "epochs": spec.train.epochs, **result}
    info = {
        "dataset": spec.dataset,
        "num_classes": splits.num_classes,
        "data_options": scalar_options(data_options),
        "seed": seed,
        "model": spec.model,
        "label_smoothing": spec.label_smoothing,
        "test_accuracy": record["test_accuracy"],
    }
    if offline.wanted(spec.cache, splits, spec.cache_max_mb):
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
    if offline.wanted(study.teacher_cache, splits, study.teacher_cache_max_mb):
        cache_dirs = [os.path.join(path, offline.CACHE_DIR) for path in (teacher_dir, directory) if path]

    def train_it() -> dict:
        student, result, hyperparameters = distil_as(
            study, method, teacher, splits, seed, directory, cache_dirs
        )
        save_model(student, os.path.join(directory, "student.keras"))
        kind = ("student", method, study.student_model)
        record = _record(study.dataset, study.column_key, seed, data_options, kind, hyperparameters)
        record = {**record, "epochs": study.student_train.epochs, **result}
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


def cell_splits(study: StudyConfig, data_options: dict, seed: int) -> datasets.Splits:
    """A cell's data, loaded afresh after seeding: every cell (the teacher and each method's student) sees
    the same batches in the same order whatever ran before it, in this process or another."""
    keras.utils.set_random_seed(seed)
    return study.load_splits(data_options, seed)


def scalar_options(values: dict) -> dict:
    """The options of `values` a record keeps: strings, numbers, booleans and `None`."""
    return {key: value for key, value in values.items() if isinstance(value, str | int | float | bool | None)}


def _record(dataset, column_key, seed, data_options, kind, hyperparameters) -> dict:
    """A cell's record up to its training's results, its fields in the order every results file lists
    them; `kind` is `(role, method, model)`."""
    role, method, model = kind
    record = {
        "dataset": dataset,
        column_key: data_options.get(column_key, dataset),
        "seed": seed,
        "role": role,
        "method": method,
        "model": model,
        "hyperparameters": hyperparameters,
        "data_options": scalar_options(data_options),
    }
    measures = datasets.facts(dataset).measure(data_options, seed)
    if measures:
        record["data_measures"] = measures
    return record
