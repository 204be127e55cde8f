"""The teacher's sweet spot ("Controlling the Quality of Distillation"): teachers trained on a grid of
batch sizes × epochs; for each, its accuracy, how much class-similarity information its outputs carry, and
the accuracy of a KD student distilled from it.

Every finished cell is a `record.json` under `<output_dir>/runs/`; a rerun reuses them, so an interrupted
sweep resumes where it stopped. The summary files (CSV, markdown, PNGs) are rewritten from the records.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from collections.abc import Sequence

import keras
import numpy as np

from data import synthetic
from kd_tf import analysis, checkpoint, losses, training
from kd_tf.repro import grid, store, sweeps, trainers


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

    def grid_cells(self) -> grid.Cells:
        """What the grid engine needs of this grid's cells (`grid.run(self, output_dir, self.cells(), ...)`)."""
        return _Cells()


class _Snapshots(keras.callbacks.Callback):
    """Saves the model after each epoch count in `paths` (epoch count -> teacher directory)."""

    def __init__(self, model_to_save: keras.Model, paths: dict, info: dict):
        super().__init__()
        self.model_to_save, self.paths, self.info = model_to_save, paths, info

    def on_epoch_end(self, epoch, logs=None):
        directory = self.paths.get(epoch + 1)
        if directory is not None:
            trainers.save_teacher(self.model_to_save, directory, {**self.info, "epochs": epoch + 1})


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
    if all(os.path.exists(os.path.join(path, trainers.TEACHER_INFO)) for path in paths.values()):
        return
    run_dir = os.path.join(seed_dir, f"batch={batch_size}", "training")
    finished = checkpoint.finished_epochs(os.path.join(run_dir, "backup"))
    if any(
        epochs <= finished and not os.path.exists(os.path.join(path, trainers.TEACHER_INFO))
        for epochs, path in paths.items()
    ):
        # Stopped between a checkpoint and a snapshot: that snapshot cannot be recovered, so start over.
        shutil.rmtree(run_dir)
    data_options = {**config.data_options, "batch_size": batch_size}
    # The global seed enters tf.data's shuffle order too: set it first, so a resumed sweep sees the same batches.
    keras.utils.set_random_seed(seed)
    splits = synthetic.load(**data_options, seed=seed)
    teacher = trainers.build_model(
        config.teacher_model,
        splits.num_classes,
        trainers.input_shape_of(splits),
        config.teacher_model_options,
        config.teacher_train.weight_decay,
    )
    info = {
        "dataset": "synthetic",
        "num_classes": splits.num_classes,
        "data_options": trainers.scalar_options(config.data_options),
        "seed": seed,
        "model": config.teacher_model,
        "label_smoothing": 0.0,
        "batch_size": batch_size,
    }
    train_config = dataclasses.replace(
        config.teacher_train, batch_size=batch_size, epochs=max(config.epoch_grid)
    )
    data = synthetic.describe_measures(synthetic.measures(config.data_options, seed))
    log(f"teacher seed={seed} batch={batch_size}: {train_config.epochs} epochs; {data}")
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
        _, result, hyperparameters = trainers.distil_as(config, method, teacher, splits, seed, directory)
        return {**result, "method": method, "hyperparameters": hyperparameters}

    return store.reuse_or_train(directory, train_it, drop_resume_state=True)


class _Cells(grid.Cells):
    """The grid's cells: one group per seed, whose cells share a baseline student (and, per batch size, one
    teacher run that snapshots every epoch count)."""

    def key(self, cell: dict) -> int:
        return cell["seed"]

    def directory(self, output_dir: str, cell: dict) -> str:
        seed_dir = os.path.join(output_dir, "runs", f"seed={cell['seed']}")
        return os.path.join(
            seed_dir, f"batch={cell['teacher_batch_size']}", f"epochs={cell['teacher_epochs']}"
        )

    def train(self, group: grid.Group, shared, cell: dict, directory: str, log) -> dict:
        seed_dir = os.path.join(group.output_dir, "runs", f"seed={cell['seed']}")
        return _sweet_spot_cell(group.config, cell, seed_dir, directory, log)

    def describe(self, cell: dict, record: dict) -> str:
        return (
            f"seed={cell['seed']} batch={cell['teacher_batch_size']:<5} epochs={cell['teacher_epochs']:<4} "
            f"teacher {100 * record['teacher_test_accuracy']:.2f}%  contrast {record['similarity_contrast']:.3f}  "
            f"non-target entropy {record['nontarget_entropy']:.3f}  {record['student_method']} student "
            f"{100 * record['student_test_accuracy']:.2f}% ({100 * record['kd_gain']:+.2f})"
        )


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
    teacher, _ = trainers.load_teacher(os.path.join(cell_dir, "teacher"), "synthetic", splits.num_classes)
    logits = sweeps.logits_of(teacher, arrays.x_test)
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
        "data_measures": synthetic.measures(config.data_options, seed),
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
