"""`run.py --mode=regime_map`: where the paper's three synthetic claims hold.

The grid is training-set size × student width × task difficulty (`--task_kind=per_class_sine`, its label
non-linearity measured) × τ × task seed. Each (size, difficulty, τ, seed) trains one teacher on its `n`
examples and caches its outputs (as `--teacher_cache` and `--teacher_cache_max_mb` allow: `auto`, the default,
caches; `off` distils online); every student of that group distils from the cache: the hard-label
Student, then each method at every (T, λ) of a small grid, the one with the best validation accuracy standing
for the method in that cell. The claims, each a heatmap over (difficulty, size) × width, mean over seeds:

1. KD-pt ≥ KD at τ = 0 (gradient rescaling is all there is): `KD-pt − KD` at the lowest τ.
2. KD-sim gains as τ grows: `(KD-sim − Student)` at the highest τ minus at the lowest.
3. KD closes most of the teacher–student gap: `(KD − Student) / (Teacher − Student)` at each τ.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import keras

from data import synthetic
from kd_tf import offline, training
from kd_tf.repro import grid, sweeps, trainers


@dataclasses.dataclass
class RegimeMapConfig:
    """The grid and how each of its models is trained.

    `data_options` are the synthetic task's options shared by every cell (sizes of the validation and test
    splits, the geometry, `task_kind`); a cell sets `train_examples`, `difficulty`, `tau` and `task_seed`
    (the seed: each seed is its own task, and its own data and initialisations). Every student trains for
    `student_steps` steps whatever `n`, with `evaluations` validation checks (the best is kept). Students
    distil from a cache of their teacher's logits where `teacher_cache` and `teacher_cache_max_mb` allow
    (`kd_tf.offline.wanted`), else from the teacher online.
    """

    train_sizes: Sequence[int]
    student_widths: Sequence[int]
    difficulties: Sequence[int]
    taus: Sequence[float]
    seeds: Sequence[int]
    methods: Sequence[str]
    temperatures: Sequence[float]
    alphas: Sequence[float]
    data_options: dict
    teacher_model: str
    teacher_model_options: dict
    student_model: str
    student_model_options: dict
    teacher_train: training.TrainConfig
    student_train: training.TrainConfig
    student_steps: int
    evaluations: int
    hyperparameters: dict
    method_overrides: dict
    precision: str = "float32"
    teacher_cache: str = "auto"
    teacher_cache_max_mb: float = float("inf")

    def __post_init__(self):
        if "student" in self.methods:
            raise ValueError("`methods` are the distilled methods; the hard-label Student is always trained.")
        sweeps.check_steps(self.student_steps, self.evaluations)
        smallest = min(self.train_sizes)
        for role, config in (("teacher", self.teacher_train), ("student", self.student_train)):
            if config.batch_size > smallest:
                raise ValueError(
                    f"The {role}'s batch size must not exceed the smallest training-set size. Received: "
                    f"batch_size={config.batch_size}, train_sizes={list(self.train_sizes)}"
                )

    def grid(self, method: str) -> list[tuple[float | None, float | None]]:
        """The (T, λ) pairs `method` is trained at: the grid, or `(None, None)` for the Student."""
        if method == "student":
            return [(None, None)]
        return [(t, a) for t in self.temperatures for a in self.alphas]

    def cells(self) -> list[dict]:
        """Every student of the map, once, in the order they are trained (a group's widths, then methods)."""
        return [
            {
                "train_examples": size,
                "difficulty": difficulty,
                "tau": tau,
                "seed": seed,
                "width": width,
                "method": method,
                "temperature": temperature,
                "alpha": alpha,
            }
            for size in self.train_sizes
            for difficulty in self.difficulties
            for tau in self.taus
            for seed in self.seeds
            for width in self.student_widths
            for method in ("student", *self.methods)
            for temperature, alpha in self.grid(method)
        ]

    def grid_cells(self) -> grid.Cells:
        """What the grid engine needs of this grid's cells (`grid.run(self, output_dir, self.cells(), ...)`)."""
        return _Cells()


def _setting_dir(output_dir: str, cell: dict) -> str:
    return os.path.join(
        output_dir,
        "runs",
        f"n={cell['train_examples']}",
        f"difficulty={cell['difficulty']}",
        f"tau={cell['tau']}",
        f"seed={cell['seed']}",
    )


def _cell_dir(output_dir: str, cell: dict) -> str:
    grid = "default" if cell["temperature"] is None else f"T={cell['temperature']:g},alpha={cell['alpha']:g}"
    return os.path.join(_setting_dir(output_dir, cell), f"width={cell['width']}", cell["method"], grid)


@dataclasses.dataclass
class _Teacher:
    arrays: synthetic.SyntheticArrays
    model: object
    record: dict
    cache_dirs: list[str] | None  # where its students read its cached outputs; `None`: they distil online
    measures: dict


def _data_options(config: RegimeMapConfig, cell: dict) -> dict:
    return {
        **config.data_options,
        "train_examples": cell["train_examples"],
        "difficulty": cell["difficulty"],
        "tau": cell["tau"],
        "task_seed": cell["seed"],
    }


def _prepare_teacher(config: RegimeMapConfig, cell: dict, directory: str) -> _Teacher:
    """Trains (or reuses) the group's teacher on its `n` examples, its outputs cached for the students where
    the config's cache policy allows."""
    data_options = _data_options(config, cell)
    seed = cell["seed"]
    arrays = synthetic.arrays(**data_options, seed=seed)
    keras.utils.set_random_seed(seed)  # before the pipeline: the seed enters its shuffle order
    splits = synthetic.splits(arrays, config.teacher_train.batch_size, seed)
    study = sweeps.teacher_spec(config, config.teacher_cache, config.teacher_cache_max_mb)
    record, model = trainers.train_teacher(study, splits, data_options, seed, directory)
    cached = offline.wanted(config.teacher_cache, splits, config.teacher_cache_max_mb)
    return _Teacher(
        arrays=arrays,
        model=model,
        record=record,
        cache_dirs=[os.path.join(directory, offline.CACHE_DIR)] if cached else None,
        measures=synthetic.measures(data_options, seed),
    )


def _train_cell(config: RegimeMapConfig, teacher: _Teacher, cell: dict, directory: str) -> dict:
    values = {**config.hyperparameters, **config.method_overrides.get(cell["method"], {})}
    if cell["temperature"] is not None:
        values.update(temperature=cell["temperature"], alpha=cell["alpha"])
    _, result, hyperparameters = sweeps.train_for_steps(
        config,
        cell,
        directory,
        arrays=teacher.arrays,
        teacher=teacher.model,
        values=values,
        model=config.student_model,
        model_options={**config.student_model_options, "width": cell["width"]},
        cache_dirs=teacher.cache_dirs,
    )
    return {
        **cell,
        "test_accuracy": result["test_accuracy"],
        "best_validation_accuracy": result["best_validation_accuracy"],
        "best_evaluation": result["best_epoch"],
        "teacher_test_accuracy": teacher.record["test_accuracy"],
        "teacher_cache": result["teacher_cache"],
        "hyperparameters": hyperparameters,
        "data_measures": teacher.measures,
        "wall_time_s": result["wall_time_s"],
    }


class _Cells(grid.Cells):
    """The map's cells: one group per (size, difficulty, τ, seed), sharing a teacher and its cache."""

    index_width = 4

    def key(self, cell: dict) -> tuple:
        return cell["train_examples"], cell["difficulty"], cell["tau"], cell["seed"]

    def directory(self, output_dir: str, cell: dict) -> str:
        return _cell_dir(output_dir, cell)

    def prepare(self, group: grid.Group, cell: dict, log) -> _Teacher:
        teacher = _prepare_teacher(
            group.config, cell, os.path.join(_setting_dir(group.output_dir, cell), "teacher")
        )
        label = f"n={cell['train_examples']} difficulty={cell['difficulty']} tau={cell['tau']} seed={cell['seed']}"
        log(sweeps.teacher_line(label, teacher.record, teacher.measures))
        return teacher

    def train(self, group: grid.Group, shared: _Teacher, cell: dict, directory: str, log) -> dict:
        return _train_cell(group.config, shared, cell, directory)

    def describe(self, cell: dict, record: dict) -> str:
        grid_point = "" if cell["temperature"] is None else f" T={cell['temperature']:g} λ={cell['alpha']:g}"
        return (
            f"n={cell['train_examples']} difficulty={cell['difficulty']} "
            f"tau={cell['tau']} seed={cell['seed']} width={cell['width']} {cell['method']}{grid_point}: "
            f"validation {100 * record['best_validation_accuracy']:.2f}%, "
            f"test {100 * record['test_accuracy']:.2f}% ({record['wall_time_s']:.0f} s)"
        )
