"""`--mode=regime_map`: where the paper's three synthetic claims hold, over training-set size × student
width × task difficulty × τ × task seed (the grid, its claims and figures: `repro.regime_map`)."""

from __future__ import annotations

from absl import flags

from kd_tf.repro import sweeps
from kd_tf.repro.config import UserError
from kd_tf.repro.experiments import QUICK_TASK, register

flags.DEFINE_list(
    "student_widths", ["8", "32", "128"], "regime_map: student widths (8 is capacity-bound at M = 40)."
)
flags.DEFINE_list(
    "grid_temperatures",
    ["1", "4"],
    "regime_map: temperatures T searched per method and cell (with --grid_alphas; best validation wins).",
)
flags.DEFINE_list(
    "grid_alphas", ["0.3", "0.9"], "regime_map: soft-loss weights λ (alpha) searched per method and cell."
)
flags.register_validator(
    "student_widths", sweeps.positive_integers, "--student_widths must be a list of positive integers"
)
flags.register_validator(
    "grid_temperatures",
    sweeps.numbers_within(0.0, float("inf"), low_open=True),
    "--grid_temperatures must be a list of positive numbers",
)
flags.register_validator(
    "grid_alphas", sweeps.numbers_within(0.0, 1.0), "--grid_alphas must be a list of numbers in [0, 1]"
)


@register
class RegimeMap(sweeps.SweepExperiment):
    name = "regime_map"
    rank = 7
    help = (
        "where the paper's synthetic claims hold, over training-set size x student width x task difficulty "
        "x τ x task seed"
    )
    # The grid of BUILD.md, "The regime map".
    presets = {
        "train_sizes": ["5000", "50000"],
        "difficulties": ["1", "4"],
        "task_kind": "per_class_sine",
        "taus": ["0.0", "0.9"],
        "seeds": ["0", "1", "2"],
        "methods": ["kd", "kd_pt", "kd_sim", "kd_topk"],
        "student_steps": 2000,
    }
    quick = {
        **QUICK_TASK,
        "train_sizes": ["128", "256"],
        "student_widths": ["4"],
        "difficulties": ["1"],
        "taus": ["0.0", "0.8"],
        "seeds": ["0"],
        "methods": ["kd", "kd_pt", "kd_sim"],
        "grid_temperatures": ["1.0", "4.0"],
        "grid_alphas": ["0.9"],
        "student_steps": 8,
        "evaluations": 2,
    }

    def check(self, config, missing) -> None:
        del missing
        if "student" in config.methods:
            raise UserError(
                "--mode=regime_map always trains the hard-label Student: give only distilled methods in "
                f"--methods. Received: --methods={','.join(config.methods)}"
            )
        self.check_fixed_steps(config)

    def grid_config(self, options):
        from kd_tf.repro import regime_map

        config, sweep = options.config, options.config.sweeps
        return regime_map.RegimeMapConfig(
            train_sizes=list(sweep.train_sizes),
            student_widths=list(sweep.student_widths),
            difficulties=list(sweep.difficulties or (config.data_options["difficulty"],)),
            taus=list(config.taus),
            seeds=list(config.seeds),
            methods=list(config.methods),
            temperatures=list(sweep.grid_temperatures),
            alphas=list(sweep.grid_alphas),
            data_options=options.data_options(),
            student_steps=sweep.student_steps,
            evaluations=sweep.evaluations,
            teacher_cache=options.teacher_cache(),
            teacher_cache_max_mb=config.runtime.teacher_cache_max_mb,
            **sweeps.models_and_training(options),
        )

    def announce(self, teachers: int, cells: int, output_dir: str) -> str:
        return f"Regime map: {teachers} teachers, {cells} students -> {output_dir}"

    def write(self, grid_config, output_dir: str, records: list[dict], header: str) -> None:
        from kd_tf.repro import regime_map_summary

        regime_map_summary.write_regime_map(output_dir, records, grid_config, header)
