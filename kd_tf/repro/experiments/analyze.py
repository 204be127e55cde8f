"""`--mode=analyze`: figures and numbers from a finished table run (Figures 1-5), optionally after the
KD-topk sweep of Figure 3."""

from __future__ import annotations

import os

from absl import flags

from kd_tf.repro.experiments import Experiment, register, table

flags.DEFINE_string(
    "ls_run_dir",
    None,
    "--mode=analyze: a table run on the same data whose "
    "teachers used --teacher_label_smoothing (Figures 4, 5).",
)
flags.DEFINE_list(
    "topk_sweep",
    [],
    "--mode=analyze: first train KD-topk students for these k from the run's teachers (Figure 3).",
)
flags.DEFINE_string("figures_dir", None, "--mode=analyze: where figures go (default <output_dir>/figures).")


@register
class Analyze(Experiment):
    name = "analyze"
    teacher_cache = False  # its students distil from their teachers online
    rank = 4
    help = "figures and numbers from a finished table run"
    writes = False
    group = "analysis"

    def output_dir(self, dataset: str, method: str) -> str:
        return table.Table().output_dir(dataset, method)  # the table it reads

    def trained_methods(self, config) -> list[str]:
        return ["kd_topk"] if config.analysis.topk_sweep else []

    def roles(self, config) -> list[str]:
        return ["student"] if config.analysis.topk_sweep else []

    def run(self, options) -> None:
        """Optionally the KD-topk sweep, then every figure, for `--output_dir`.

        Reads the run's `output_dir`, `temperature` (heatmaps at T=1 and this), `topk`, `taus` and `seeds`
        (only when the user set them), `ls_run_dir`, `figures_dir`, `topk_sweep` (a list of k) and the student
        training values for the sweep.
        """
        from kd_tf.repro import figures, topk_sweep

        config = options.config
        run_dir = options.output_dir
        figures_dir = config.analysis.figures_dir or os.path.join(run_dir, figures.FIGURES_DIR)
        columns = list(config.taus) if config.was_set("taus") else None
        seeds = options.seeds if config.was_set("seeds") else None
        sweep = list(config.analysis.topk_sweep)
        sweep_csv = os.path.join(figures_dir, figures.SWEEP_CSV)
        if sweep:
            train_config = options.train_config("student", options.keras_verbose(single_run=False))
            topk_sweep.run(
                run_dir,
                sweep,
                columns=columns,
                seeds=seeds,
                train_config=train_config,
                epochs=config.student.epochs if config.was_set("epochs") else None,
                output_csv=sweep_csv,
                precision=config.runtime.precision,
            )
        request = figures.AnalysisRequest(
            run_dir,
            ls_run_dir=config.analysis.ls_run_dir,
            figures_dir=figures_dir,
            temperatures=(1.0, config.hyperparameters["temperature"]),
            topk=config.hyperparameters["topk"],
            columns=columns,
            seeds=seeds,
            sweep_csv=sweep_csv,
        )
        figures.analyze_run(request)
