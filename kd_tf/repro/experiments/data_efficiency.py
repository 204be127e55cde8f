"""`--mode=data_efficiency`: students of several kinds learn from growing prefixes of one pool, from hard
labels or a fixed teacher's outputs (Phuong & Lampert 2019; the grid and its records: `repro.data_efficiency`)."""

from __future__ import annotations

from absl import flags

import models
from kd_tf.repro import sweeps
from kd_tf.repro.experiments import QUICK_TASK, register

flags.DEFINE_list(
    "student_models", ["mlp", "linear", "deep_linear"], "data_efficiency: student architectures."
)
flags.DEFINE_integer(
    "teacher_examples", 50_000, "data_efficiency: the teacher's own training examples.", lower_bound=1
)
flags.register_validator(
    "student_models",
    lambda values: bool(values) and all(value in models.NAMES for value in values),
    f"--student_models must be names from: {', '.join(models.NAMES)}",
)


@register
class DataEfficiency(sweeps.SweepExperiment):
    name = "data_efficiency"
    teacher_cache = False  # its students distil from their teachers online
    rank = 5
    help = "accuracy against training-set size (Phuong & Lampert 2019)"
    # It compares well-separated classes with near-duplicate ones, and its teacher is linear: the task's
    # labels are nearly a linear function of the input, and a linear classifier trained on the teacher's 50K
    # examples is far more accurate than the residual MLP, which overfits them.
    presets = {
        "taus": ["0.0", "0.9"],
        "teacher_model": "linear",
        "methods": ["student", "kd", "kd_pt", "kd_sim"],
    }
    quick = {
        **QUICK_TASK,
        "train_sizes": ["64", "128"],
        "student_models": ["mlp", "linear"],
        "methods": ["student", "kd"],
        "taus": ["0.5"],
        "difficulties": ["1"],
        "teacher_examples": 256,
        "student_steps": 8,
        "evaluations": 2,
    }

    def check(self, config, missing) -> None:
        del missing
        self.check_fixed_steps(config)

    def grid_config(self, options):
        from kd_tf.repro import data_efficiency

        config, sweep = options.config, options.config.sweeps
        data_options = options.data_options()
        difficulties = list(sweep.difficulties) or [data_options["difficulty"]]
        teacher_train, student_train = sweeps.train_configs(options)
        return data_efficiency.DataEfficiencyConfig(
            settings=[
                {"tau": tau, "difficulty": difficulty} for tau in config.taus for difficulty in difficulties
            ],
            train_sizes=list(sweep.train_sizes),
            student_models=list(sweep.student_models),
            methods=options.methods,
            seeds=options.seeds,
            data_options=data_options,
            teacher_examples=sweep.teacher_examples,
            teacher_model=options.teacher_model,
            teacher_model_options=options.model_options("teacher", options.teacher_model),
            student_model_options={
                model: options.model_options("student", model) for model in sweep.student_models
            },
            teacher_train=teacher_train,
            student_train=student_train,
            student_steps=sweep.student_steps,
            evaluations=sweep.evaluations,
            hyperparameters=options.hyperparameters(),
            method_overrides=options.method_overrides,
            precision=config.runtime.precision,
        )

    def write(self, grid_config, output_dir: str, records: list[dict], header: str) -> None:
        from kd_tf.repro import data_efficiency_summary

        data_efficiency_summary.write_data_efficiency(output_dir, records, header)
