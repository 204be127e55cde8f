"""The analysis's files: each cell's PNGs, Figure 3 from a KD-topk sweep CSV, and the CSV tables."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import numpy as np

from kd_tf import analysis, plots
from kd_tf.io import atomic_write_text
from kd_tf.repro.figure_cells import Cell, column_label, sort_key
from kd_tf.repro.figure_measures import CellMeasures, LsComparison


def _draw(figures_dir: str, name: str, plot, *arrays, **options) -> str:
    """`plot(*arrays, <figures_dir>/<name>, **options)`; returns `name`."""
    plot(*arrays, os.path.join(figures_dir, name), **options)
    return name


def _heatmaps(figures_dir: str, name: str, matrices: dict, boundaries, title: str, **options) -> str:
    """`_draw` of `plots.correlation_heatmaps`."""
    return _draw(
        figures_dir, name, plots.correlation_heatmaps, matrices, boundaries=boundaries, title=title, **options
    )


def draw_cell(cell: Cell, measures: CellMeasures, figures_dir: str) -> list[str]:
    """Figure 1 for the cell and, with a KD student, Figure 2 (end and start) and its geometry figure.

    Returns:
        The names of the files written.
    """
    title = f"Figure 1: {cell.label}, seed {cell.seed}"
    written = [
        _heatmaps(figures_dir, f"figure1_{cell.name}.png", measures.matrices, measures.boundaries, title)
    ]
    kd = measures.kd
    if kd is None:
        return written
    for stage, arrays in (("", kd.rescaling_end), ("start_", kd.rescaling_start)):
        when = "end" if not stage else "start"
        written.append(
            _draw(
                figures_dir,
                f"figure2_{stage}{cell.name}.png",
                plots.rescaling_scatter,
                arrays["teacher_probs"],
                arrays["w"],
                title=f"KD, {cell.label}, {when} of training",
            )
        )
    written.append(
        _draw(
            figures_dir,
            f"geometry_{cell.name}.png",
            plots.geometry_scatter,
            kd.wrong_teacher_probs,
            kd.wrong_distances,
            title=f"KD student, {cell.label}",
        )
    )
    return written


def draw_ls_comparison(cell: Cell, comparison: LsComparison, figures_dir: str) -> list[str]:
    """Figure 4 (both teachers' heatmaps, one colour scale) and Figure 5 (their `q^T_t` histograms).

    Returns:
        The names of the files written.
    """
    high = comparison.summary["heatmap_temperature"]
    low = comparison.summary["histogram_temperature"]
    return [
        _heatmaps(
            figures_dir,
            f"figure4_{cell.name}.png",
            comparison.matrices,
            comparison.boundaries,
            f"Figure 4: teacher class correlations at T={high:g}, {cell.label}",
            value_range="off_diagonal_shared",
        ),
        _draw(
            figures_dir,
            f"figure5_{cell.name}.png",
            plots.probability_histograms,
            comparison.ground_truth_probs,
            title=f"Figure 5: teacher $q_t$ at T={low:g}, {cell.label}",
        ),
    ]


def draw_high_temperature(
    seed: int, matrices: dict, boundaries: Sequence[int], temperature: float, figures_dir: str
) -> str:
    """The highest-temperature teacher matrix of every column of one seed, side by side.

    Returns:
        The name of the file written.
    """
    title = f"Teacher class correlations at T={temperature:g}, by column"
    return _heatmaps(figures_dir, f"figure1_high_temperature_seed={seed}.png", matrices, boundaries, title)


def figure3(sweep_csv: str, figures_dir: str) -> tuple[dict, list[dict], list[str]]:
    """Figure 3 for each column of a `topk_sweep` CSV: KD-topk's uplift over KD of the same seed, against k.

    Returns:
        The series by column, the rows of `topk_uplift.csv`, and the names of the files written.
    """
    with open(sweep_csv, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"`sweep_csv` holds no results. Received: sweep_csv={sweep_csv!r}")
    column_key = rows[0]["column_key"]
    series, uplift_rows, written = {}, [], []
    for column_value in sorted({row["column_value"] for row in rows}, key=sort_key):
        chosen = [row for row in rows if row["column_value"] == column_value]
        kd_runs = {
            int(row["seed"]): 100 * float(row["test_accuracy"]) for row in chosen if row["method"] == "kd"
        }
        topk_runs = [row for row in chosen if row["method"] == "kd_topk"]
        if not kd_runs or not topk_runs:
            continue
        # Each k is compared with KD of its own seed (same teacher and initialisation), then averaged.
        records = [
            (int(row["topk"]), 100 * float(row["test_accuracy"]) - kd_runs[int(row["seed"])])
            for row in topk_runs
            if int(row["seed"]) in kd_runs
        ]
        values = analysis.topk_uplift_series(records, 0.0)
        values["kd_accuracy"] = float(np.mean(list(kd_runs.values())))
        written.append(
            _draw(
                figures_dir,
                f"figure3_{column_key}={column_value}.png",
                plots.topk_uplift,
                values["ks"],
                values["uplift"],
                stds=values["uplift_std"] if max(values["runs"]) > 1 else None,
                title=(
                    f"Figure 3: KD-topk over KD ({values['kd_accuracy']:.2f}%), "
                    f"{column_label(column_key, column_value)}"
                ),
            )
        )
        series[f"{column_key}={column_value}"] = values
        for index, k in enumerate(values["ks"]):
            uplift_rows.append(
                {
                    column_key: column_value,
                    "k": k,
                    "uplift_points": values["uplift"][index],
                    "uplift_std": values["uplift_std"][index],
                    "seeds": values["runs"][index],
                    "kd_accuracy": values["kd_accuracy"],
                }
            )
    return series, uplift_rows, written


# The CSV tables.


def contrast_row(cell: Cell, teacher: str, matrix: str, values: dict) -> dict:
    """A row of `block_contrast.csv`: one matrix of one teacher of a cell."""
    return {
        cell.column_key: cell.column_value,
        "seed": cell.seed,
        "teacher": teacher,
        "matrix": matrix,
        **{name: values[name] for name in ("within", "across", "difference", "ratio")},
    }


def student_row(cell: Cell, method: str, values: dict) -> dict:
    """A row of `students.csv`: one student's rescaling and geometry correlations."""
    row = {
        cell.column_key: cell.column_value,
        "seed": cell.seed,
        "method": method,
        "recorded_test_accuracy": values["recorded_test_accuracy"],
    }
    for stage in ("rescaling_end", "rescaling_start"):
        if stage in values:
            for name in ("pearson", "spearman", "w_mean", "w_median"):
                row[f"{stage}.{name}"] = values[stage][name]
    row["geometry.pearson"] = values["geometry"]["pearson_distance_vs_teacher_prob"]
    row["geometry.pearson_log_gap"] = values["geometry"]["pearson_squared_gap_vs_log_teacher_prob"]
    return row


def write_csv(path: str, rows: Sequence[dict]) -> None:
    """Writes `rows` with a header of every field in the order first seen."""
    fields = []
    for row in rows:
        fields.extend(name for name in row if name not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
