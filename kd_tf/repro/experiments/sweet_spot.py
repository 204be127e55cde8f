"""`--mode=sweet_spot`: teachers over batch size × epochs, what their outputs say beyond the label, and the KD
students they give (the grid and its records: `repro.sweet_spot`)."""

from __future__ import annotations

from absl import flags

from kd_tf.repro import sweeps
from kd_tf.repro.config import UserError
from kd_tf.repro.experiments import QUICK_TASK, register

flags.DEFINE_list(
    "teacher_batch_sizes", ["16", "64", "256", "1024", "4096"], "sweet_spot: teacher batch sizes."
)
flags.DEFINE_list(
    "teacher_epoch_grid", ["1", "2", "5", "10", "20", "50"], "sweet_spot: teacher epoch counts."
)
for _name in ("teacher_batch_sizes", "teacher_epoch_grid"):
    flags.register_validator(
        _name, sweeps.positive_integers, f"--{_name} must be a list of positive integers"
    )


@register
class SweetSpot(sweeps.SweepExperiment):
    name = "sweet_spot"
    teacher_cache = False  # its students distil from their teachers online
    rank = 6
    help = "teachers over batch size x epochs and the KD students they give"
    # It needs super-class structure to measure, and its correlations are over grid cells, each a mean over
    # three seeds.
    presets = {"taus": ["0.5"], "seeds": ["0", "1", "2"]}
    quick = {
        **QUICK_TASK,
        "teacher_batch_sizes": ["32", "128"],
        "teacher_epoch_grid": ["1", "2"],
        "taus": ["0.5"],
        "seeds": ["0"],
    }

    def check(self, config, missing) -> None:
        del missing
        if config.was_set("taus") and len(config.taus) != 1:
            raise UserError(
                f"--mode=sweet_spot studies one task: give one --taus value. Received: {config.taus}"
            )
        if config.student.lr_schedule != "constant":
            raise UserError(
                "--mode=sweet_spot reads every epoch count off one teacher run, which needs "
                f"--lr_schedule=constant. Received: --lr_schedule={config.student.lr_schedule}"
            )
        largest = max(int(size) for size in config.sweeps.teacher_batch_sizes)
        if largest > config.data_options["train_examples"]:
            raise UserError(
                f"--teacher_batch_sizes go up to {largest}, more than "
                f"--train_examples={config.data_options['train_examples']}."
            )

    def trained_methods(self, config) -> list[str]:
        return [config.method]

    def grid_trained(self, config) -> dict:
        """One teacher per seed and batch size for the grid's largest epoch count, a snapshot at each count."""
        sweep, sources = config.sweeps, config.sources
        return {
            "epochs": f"{max(sweep.teacher_epoch_grid)} (the largest of teacher_epoch_grid, a snapshot at each) "
            f"[{sources['teacher_epoch_grid']}]",
            "batch_size": f"each of teacher_batch_sizes {sweep.teacher_batch_sizes} "
            f"[{sources['teacher_batch_sizes']}]",
        }

    def grid_config(self, options):
        from kd_tf.repro import sweet_spot

        config = options.config
        return sweet_spot.SweetSpotConfig(
            batch_sizes=list(config.sweeps.teacher_batch_sizes),
            epoch_grid=list(config.sweeps.teacher_epoch_grid),
            seeds=options.seeds,
            data_options={**options.data_options(), "tau": config.taus[0]},
            method=config.method,
            **sweeps.models_and_training(options),
        )

    def write(self, grid_config, output_dir: str, records: list[dict], header: str) -> None:
        from kd_tf.repro import sweet_spot_summary

        sweet_spot_summary.write_sweet_spot(output_dir, records, header)
