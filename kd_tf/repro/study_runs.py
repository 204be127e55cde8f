"""`run.py --mode=data_efficiency | sweet_spot | regime_map`: the sweeps, configured from the run's `Config`."""

from __future__ import annotations

import dataclasses
import os

from kd_tf.repro import data_efficiency, experiment, regime_map, sweet_spot

# The default class similarity of each sweep when --taus is not given: the data-efficiency sweep compares
# well-separated classes with near-duplicate ones; the sweet spot needs super-class structure to measure.
DEFAULT_TAUS = {"data_efficiency": (0.0, 0.9), "sweet_spot": (0.5,)}
# The sweet spot's seeds when --seeds is not given: its correlations are over grid cells, each a mean.
SWEET_SPOT_SEEDS = (0, 1, 2)

# The data-efficiency teacher when --teacher_model is not given. The synthetic task's labels are nearly a
# linear function of the input (its sine terms bend the boundaries little), and a linear classifier trained
# on the teacher's 50K examples is far more accurate than the residual MLP, which overfits them.
DATA_EFFICIENCY_TEACHER = "linear"

# `--quick`: a task and grid small enough to run in seconds, for checking the bookkeeping.
QUICK_DATA = {
    "num_classes": 8,
    "num_superclasses": 2,
    "dim": 16,
    "difficulty": 1,
    "train_examples": 256,
    "validation_examples": 128,
    "test_examples": 128,
}
QUICK_DATA_EFFICIENCY = {
    "train_sizes": (64, 128),
    "student_models": ("mlp", "linear"),
    "methods": ("student", "kd"),
    "taus": (0.5,),
    "teacher_examples": 256,
    "student_steps": 8,
    "evaluations": 2,
}
QUICK_SWEET_SPOT = {"batch_sizes": (32, 128), "epoch_grid": (1, 2), "taus": (0.5,)}
QUICK_REGIME_MAP = {
    "train_sizes": (128, 256),
    "student_widths": (4,),
    "difficulties": (1,),
    "taus": (0.0, 0.8),
    "seeds": (0,),
    "methods": ("kd", "kd_pt", "kd_sim"),
    "temperatures": (1.0, 4.0),
    "alphas": (0.9,),
    "student_steps": 8,
    "evaluations": 2,
}
QUICK_TRAIN = {"batch_size": 32, "epochs": 2, "jit_compile": False, "steps_per_execution": 1, "verbose": 0}
QUICK_WIDTHS = {"teacher": 16, "student": 4}


def run(options) -> None:
    header = f"Command: `{options.config.command}`\n\n"
    parallel_options = {"deterministic": options.config.runtime.deterministic}
    if options.config.mode == "data_efficiency":
        config = data_efficiency_config(options)
        # One group of cells per setting and seed (they share a teacher), `--jobs` groups at a time.
        parallel_options["jobs"] = _jobs(options, len(config.settings or [{}]) * len(config.seeds))
        data_efficiency.run_data_efficiency(config, options.output_dir, header=header, **parallel_options)
    elif options.config.mode == "regime_map":
        config = regime_map_config(options)
        # One group of cells per (size, difficulty, τ, seed): they share a teacher and its cache.
        groups = len(config.train_sizes) * len(config.difficulties) * len(config.taus) * len(config.seeds)
        parallel_options["jobs"] = _jobs(options, groups)
        print(
            f"Regime map: {groups} teachers, {len(config.cells())} students -> {options.output_dir}",
            flush=True,
        )
        regime_map.run_regime_map(config, options.output_dir, header=header, **parallel_options)
    else:
        config = sweet_spot_config(options)
        # One group of cells per seed (they share a baseline student), `--jobs` groups at a time.
        parallel_options["jobs"] = _jobs(options, len(config.seeds))
        sweet_spot.run_sweet_spot(config, options.output_dir, header=header, **parallel_options)
    # The summary the sweep just wrote (a bad value in the grid flags was a ValueError before any work,
    # which `modes.run` turns into a one-line error).
    with open(os.path.join(options.output_dir, experiment.RESULTS_MARKDOWN), encoding="utf-8") as handle:
        print("\n" + handle.read())


def _taus(options) -> list[float]:
    config = options.config
    if config.sweeps.quick:
        return list(
            QUICK_DATA_EFFICIENCY["taus"] if config.mode == "data_efficiency" else QUICK_SWEET_SPOT["taus"]
        )
    if config.was_set("taus"):
        return list(config.taus)
    return list(DEFAULT_TAUS[config.mode])


def _data_options(options) -> dict:
    data_options = options.data_options()
    if options.config.sweeps.quick:
        data_options.update(QUICK_DATA)
    return data_options


def _train_configs(options):
    # Hundreds of small cells: each keeps its record and history.csv, without TensorBoard logs.
    teacher = dataclasses.replace(options.train_config("teacher", verbose=0), tensorboard=False)
    student = dataclasses.replace(options.train_config("student", verbose=0), tensorboard=False)
    if options.config.sweeps.quick:
        teacher = dataclasses.replace(teacher, **QUICK_TRAIN)
        student = dataclasses.replace(student, **QUICK_TRAIN)
    return teacher, student


def _model_options(options, role: str, model: str) -> dict:
    model_options = options.model_options(role, model)
    if options.config.sweeps.quick and "width" in model_options:
        model_options["width"] = QUICK_WIDTHS[role]
    return model_options


def data_efficiency_config(options) -> data_efficiency.DataEfficiencyConfig:
    sweeps = options.config.sweeps
    data_options = _data_options(options)
    difficulties = list(sweeps.difficulties) or [data_options["difficulty"]]
    if sweeps.quick:
        difficulties = [QUICK_DATA["difficulty"]]
        grid = QUICK_DATA_EFFICIENCY
    else:
        grid = {
            "train_sizes": list(sweeps.train_sizes),
            "student_models": list(sweeps.student_models),
            "methods": options.methods,
            "teacher_examples": sweeps.teacher_examples,
            "student_steps": sweeps.student_steps,
            "evaluations": sweeps.evaluations,
        }
    teacher_train, student_train = _train_configs(options)
    teacher_model = (
        options.teacher_model if options.config.was_set("teacher_model") else DATA_EFFICIENCY_TEACHER
    )
    return data_efficiency.DataEfficiencyConfig(
        settings=[
            {"tau": tau, "difficulty": difficulty} for tau in _taus(options) for difficulty in difficulties
        ],
        train_sizes=grid["train_sizes"],
        student_models=grid["student_models"],
        methods=grid["methods"],
        seeds=options.seeds,
        data_options=data_options,
        teacher_examples=grid["teacher_examples"],
        teacher_model=teacher_model,
        teacher_model_options=_model_options(options, "teacher", teacher_model),
        student_model_options={
            model: _model_options(options, "student", model) for model in grid["student_models"]
        },
        teacher_train=teacher_train,
        student_train=student_train,
        student_steps=grid["student_steps"],
        evaluations=grid["evaluations"],
        hyperparameters=options.hyperparameters(),
        method_overrides=options.method_overrides,
        precision=options.config.runtime.precision,
    )


def sweet_spot_config(options) -> sweet_spot.SweetSpotConfig:
    config = options.config
    data_options = {**_data_options(options), "tau": _taus(options)[0]}
    if config.sweeps.quick:
        batch_sizes, epoch_grid = QUICK_SWEET_SPOT["batch_sizes"], QUICK_SWEET_SPOT["epoch_grid"]
    else:
        batch_sizes = list(config.sweeps.teacher_batch_sizes)
        epoch_grid = list(config.sweeps.teacher_epoch_grid)
    return sweet_spot.SweetSpotConfig(
        batch_sizes=batch_sizes,
        epoch_grid=epoch_grid,
        seeds=options.seeds if config.was_set("seeds") or config.sweeps.quick else list(SWEET_SPOT_SEEDS),
        data_options=data_options,
        method=config.method,
        **_models_and_training(options),
    )


def _models_and_training(options) -> dict:
    """The sweep configs' teacher and student (architecture, options, training), method values, precision."""
    teacher_train, student_train = _train_configs(options)
    return {
        "teacher_model": options.teacher_model,
        "teacher_model_options": _model_options(options, "teacher", options.teacher_model),
        "student_model": options.student_model,
        "student_model_options": _model_options(options, "student", options.student_model),
        "teacher_train": teacher_train,
        "student_train": student_train,
        "hyperparameters": options.hyperparameters(),
        "method_overrides": options.method_overrides,
        "precision": options.config.runtime.precision,
    }


def _jobs(options, groups: int) -> int:
    jobs = options.jobs(groups)
    if jobs > 1:
        from kd_tf import parallel

        print(f"{jobs} jobs at a time, {parallel.threads_per_job(jobs)} thread(s) each (--jobs).", flush=True)
    return jobs


def regime_map_config(options) -> regime_map.RegimeMapConfig:
    config = options.config
    sweeps = config.sweeps
    if sweeps.quick:
        grid = QUICK_REGIME_MAP
    else:
        grid = {
            "train_sizes": sweeps.train_sizes,
            "student_widths": sweeps.student_widths,
            "difficulties": sweeps.difficulties or (config.data_options["difficulty"],),
            "taus": config.taus,
            "seeds": config.seeds,
            "methods": config.methods,
            "temperatures": sweeps.grid_temperatures,
            "alphas": sweeps.grid_alphas,
            "student_steps": sweeps.student_steps,
            "evaluations": sweeps.evaluations,
        }
    return regime_map.RegimeMapConfig(
        train_sizes=list(grid["train_sizes"]),
        student_widths=list(grid["student_widths"]),
        difficulties=list(grid["difficulties"]),
        taus=list(grid["taus"]),
        seeds=list(grid["seeds"]),
        methods=list(grid["methods"]),
        temperatures=list(grid["temperatures"]),
        alphas=list(grid["alphas"]),
        data_options=_data_options(options),
        student_steps=grid["student_steps"],
        evaluations=grid["evaluations"],
        **_models_and_training(options),
    )
