"""What one analysis of a finished table run is asked to draw and measure, checked when it is built."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from kd_tf.repro.figure_cells import SPLITS


@dataclasses.dataclass(frozen=True)
class AnalysisRequest:
    """The inputs of `figures.analyze_run`.

    Attributes:
        run_dir: output directory of a `--mode=table` run.
        ls_run_dir: optional second table run whose teachers used `--teacher_label_smoothing`.
        figures_dir: where to write (default `run_dir/figures`).
        temperatures: temperatures of the teacher heatmaps; Figure 4 uses the highest, Figure 5 the lowest.
            Kept sorted and without repeats.
        topk: `k` of Figure 1's KD-topk panel (0 skips it).
        columns, seeds: restrict the cells analysed (default: all).
        sweep_csv: a `topk_sweep` CSV for Figure 3 (default `figures_dir/topk_sweep.csv`, when it exists).
        split: examples of the heatmaps, histograms and geometry (`test`, `train`, `validation`).
        rescaling_split: examples of Figure 2 (`train`: the gradients the student was trained with).
        max_examples: cap on the examples taken from each split.
    """

    run_dir: str | os.PathLike
    ls_run_dir: str | os.PathLike | None = None
    figures_dir: str | os.PathLike | None = None
    temperatures: Sequence[float] = (1.0, 4.0)
    topk: int = 5
    columns: Sequence | None = None
    seeds: Sequence[int] | None = None
    sweep_csv: str | os.PathLike | None = None
    split: str = "test"
    rescaling_split: str = "train"
    max_examples: int | None = None

    def __post_init__(self):
        checked = tuple(sorted({float(value) for value in self.temperatures}))
        if not checked or checked[0] <= 0:
            raise ValueError(
                f"`temperatures` must be one or more values > 0. "
                f"Received: temperatures={list(self.temperatures)}"
            )
        object.__setattr__(self, "temperatures", checked)
        for name, value in (("split", self.split), ("rescaling_split", self.rescaling_split)):
            if value not in SPLITS:
                raise ValueError(f"`{name}` must be one of {', '.join(SPLITS)}. Received: {name}={value!r}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"`max_examples` must be >= 1. Received: max_examples={self.max_examples}")
