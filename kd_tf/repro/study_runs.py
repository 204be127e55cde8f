"""`run.py --mode=data_efficiency | sweet_spot | regime_map`: the sweeps, configured from the run's `Config`."""

from __future__ import annotations

import dataclasses
import os

from kd_tf.repro import data_efficiency, experiment, regime_map, sweet_spot


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


def _train_configs(options):
    # Hundreds of small cells: each keeps its record and history.csv, without TensorBoard logs.
    teacher = dataclasses.replace(options.train_config("teacher", verbose=0), tensorboard=False)
    student = dataclasses.replace(options.train_config("student", verbose=0), tensorboard=False)
    return teacher, student


def data_efficiency_config(options) -> data_efficiency.DataEfficiencyConfig:
    config = options.config
    sweeps = config.sweeps
    data_options = options.data_options()
    difficulties = list(sweeps.difficulties) or [data_options["difficulty"]]
    teacher_train, student_train = _train_configs(options)
    return data_efficiency.DataEfficiencyConfig(
        settings=[
            {"tau": tau, "difficulty": difficulty} for tau in config.taus for difficulty in difficulties
        ],
        train_sizes=list(sweeps.train_sizes),
        student_models=list(sweeps.student_models),
        methods=options.methods,
        seeds=options.seeds,
        data_options=data_options,
        teacher_examples=sweeps.teacher_examples,
        teacher_model=options.teacher_model,
        teacher_model_options=options.model_options("teacher", options.teacher_model),
        student_model_options={
            model: options.model_options("student", model) for model in sweeps.student_models
        },
        teacher_train=teacher_train,
        student_train=student_train,
        student_steps=sweeps.student_steps,
        evaluations=sweeps.evaluations,
        hyperparameters=options.hyperparameters(),
        method_overrides=options.method_overrides,
        precision=options.config.runtime.precision,
    )


def sweet_spot_config(options) -> sweet_spot.SweetSpotConfig:
    config = options.config
    return sweet_spot.SweetSpotConfig(
        batch_sizes=list(config.sweeps.teacher_batch_sizes),
        epoch_grid=list(config.sweeps.teacher_epoch_grid),
        seeds=options.seeds,
        data_options={**options.data_options(), "tau": config.taus[0]},
        method=config.method,
        **_models_and_training(options),
    )


def _models_and_training(options) -> dict:
    """The sweep configs' teacher and student (architecture, options, training), method values, precision."""
    teacher_train, student_train = _train_configs(options)
    return {
        "teacher_model": options.teacher_model,
        "teacher_model_options": options.model_options("teacher", options.teacher_model),
        "student_model": options.student_model,
        "student_model_options": options.model_options("student", options.student_model),
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
    return regime_map.RegimeMapConfig(
        train_sizes=list(sweeps.train_sizes),
        student_widths=list(sweeps.student_widths),
        difficulties=list(sweeps.difficulties or (config.data_options["difficulty"],)),
        taus=list(config.taus),
        seeds=list(config.seeds),
        methods=list(config.methods),
        temperatures=list(sweeps.grid_temperatures),
        alphas=list(sweeps.grid_alphas),
        data_options=options.data_options(),
        student_steps=sweeps.student_steps,
        evaluations=sweeps.evaluations,
        **_models_and_training(options),
    )
