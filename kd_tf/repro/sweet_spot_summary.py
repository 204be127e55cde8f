"""The sweet spot's results: per grid cell (teacher batch size × epochs) the means over seeds of what the teacher's outputs say and of the KD student it gives, their correlations, and the CSV, markdown, heatmaps and scatter plots."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from kd_tf import analysis, plots
from kd_tf.repro import tables

SWEET_SPOT_CSV = "sweet_spot.csv"


SWEET_SPOT_FIELDS = (
    "tau",
    "seed",
    "teacher_batch_size",
    "teacher_epochs",
    "teacher_steps",
    "teacher_test_accuracy",
    "similarity_within",
    "similarity_across",
    "similarity_contrast",
    "similarity_ratio",
    "nontarget_entropy",
    "student_method",
    "student_test_accuracy",
    "student_best_validation_accuracy",
    "baseline_test_accuracy",
    "kd_gain",
    "student_over_teacher",
    "wall_time_s",
)


# What the sweet-spot summary relates to the student's accuracy.
SWEET_SPOT_PREDICTORS = ("teacher_test_accuracy", "similarity_contrast", "nontarget_entropy")


def grid_means(records: Sequence[dict], quantity: str) -> tuple[list[int], list[int], np.ndarray]:
    """`(batch_sizes, epochs, [len(batch_sizes), len(epochs)] mean of quantity over seeds)`."""
    batch_sizes = sorted({record["teacher_batch_size"] for record in records})
    epochs = sorted({record["teacher_epochs"] for record in records})
    sums = np.zeros((len(batch_sizes), len(epochs)))
    counts = np.zeros_like(sums)
    for record in records:
        value = record.get(quantity)
        if value is None:
            continue
        row, column = batch_sizes.index(record["teacher_batch_size"]), epochs.index(record["teacher_epochs"])
        sums[row, column] += value
        counts[row, column] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return batch_sizes, epochs, np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


# What the predictors are related to: the KD student's accuracy, and how far it lands above its teacher
# (similarity information should matter beyond the teacher's accuracy, which the student largely tracks).
SWEET_SPOT_OUTCOMES = ("student_test_accuracy", "student_over_teacher")


def with_derived(records: Sequence[dict]) -> list[dict]:
    """The records with `student_over_teacher` (KD student minus teacher test accuracy) filled in."""
    return [
        {**record, "student_over_teacher": record["student_test_accuracy"] - record["teacher_test_accuracy"]}
        for record in records
    ]


def sweet_spot_correlations(records: Sequence[dict]) -> dict:
    """`{outcome: {predictor: {pearson, spearman, cells}}}` over grid cells (means over seeds)."""
    records = with_derived(records)
    correlations = {}
    for outcome in SWEET_SPOT_OUTCOMES:
        _, _, target = grid_means(records, outcome)
        correlations[outcome] = {}
        for predictor in SWEET_SPOT_PREDICTORS:
            _, _, values = grid_means(records, predictor)
            keep = np.isfinite(values) & np.isfinite(target)
            correlations[outcome][predictor] = {
                "pearson": analysis.pearson(values[keep], target[keep]),
                "spearman": analysis.spearman(values[keep], target[keep]),
                "cells": int(keep.sum()),
            }
    return correlations


_HEATMAPS = {
    "teacher_test_accuracy": ("teacher test accuracy (%)", 100.0),
    "similarity_contrast": ("class-similarity contrast (within − across)", 1.0),
    "nontarget_entropy": ("non-target entropy / log(M−1)", 1.0),
    "student_test_accuracy": ("KD student test accuracy (%)", 100.0),
    "kd_gain": ("KD student − hard-label student (points)", 100.0),
    "student_over_teacher": ("KD student − its teacher (points)", 100.0),
}


def format_sweet_spot(records: Sequence[dict], correlations: dict) -> str:
    records = with_derived(records)
    lines = []
    for quantity, (title, scale) in _HEATMAPS.items():
        batch_sizes, epochs, means = grid_means(records, quantity)
        lines.append(f"### {title}\n")
        lines.append("| batch size \\ epochs | " + " | ".join(str(e) for e in epochs) + " |")
        lines.append("|---|" + "---:|" * len(epochs))
        digits = 2 if scale == 100.0 else 3
        for row, batch_size in enumerate(batch_sizes):
            lines.append(
                f"| {batch_size} | "
                + " | ".join(f"{scale * value:.{digits}f}" for value in means[row])
                + " |"
            )
        lines.append("")
    lines.append("### Correlations over grid cells (means over seeds)\n")
    lines.append(
        "| quantity | r with student accuracy | ρ with student accuracy | r with student − teacher "
        "| ρ with student − teacher | cells |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for predictor in SWEET_SPOT_PREDICTORS:
        numbers = [
            correlations[outcome][predictor][name]
            for outcome in SWEET_SPOT_OUTCOMES
            for name in ("pearson", "spearman")
        ]
        cells = correlations[SWEET_SPOT_OUTCOMES[0]][predictor]["cells"]
        lines.append(
            f"| {predictor} | "
            + " | ".join("–" if value is None else f"{value:+.3f}" for value in numbers)
            + f" | {cells} |"
        )
    best = _best_cells(records)
    lines.append(
        f"\nBest teacher (test accuracy): batch {best['teacher'][0]}, {best['teacher'][1]} epochs. "
        f"Best teacher to distil from (KD student accuracy): batch {best['student'][0]}, "
        f"{best['student'][1]} epochs.\n"
    )
    return "\n".join(lines)


def _best_cells(records) -> dict:
    best = {}
    for name, quantity in (("teacher", "teacher_test_accuracy"), ("student", "student_test_accuracy")):
        batch_sizes, epochs, means = grid_means(records, quantity)
        row, column = np.unravel_index(np.nanargmax(means), means.shape)
        best[name] = (batch_sizes[row], epochs[column])
    return best


def write_sweet_spot(output_dir: str, records: Sequence[dict], header: str = "") -> dict:
    """Writes `sweet_spot.csv`, `results.json`, `results.md`, a heatmap PNG per quantity and a scatter."""
    os.makedirs(output_dir, exist_ok=True)
    records = with_derived(records)
    tables.write_csv(os.path.join(output_dir, SWEET_SPOT_CSV), records, SWEET_SPOT_FIELDS)
    correlations = sweet_spot_correlations(records)
    figures = []
    for quantity, (title, scale) in _HEATMAPS.items():
        batch_sizes, epochs, means = grid_means(records, quantity)
        figures.append(
            plots.grid_heatmap(
                scale * means,
                row_labels=batch_sizes,
                column_labels=epochs,
                path=os.path.join(output_dir, f"sweet_spot_{quantity}.png"),
                title=title,
                xlabel="teacher epochs",
                ylabel="teacher batch size",
            )
        )
    panels = []
    for predictor in SWEET_SPOT_PREDICTORS:
        _, _, values = grid_means(records, predictor)
        panels.append((_HEATMAPS[predictor][0], values.ravel() * _HEATMAPS[predictor][1]))
    for outcome, name in zip(
        SWEET_SPOT_OUTCOMES, ("sweet_spot_scatter", "sweet_spot_scatter_over_teacher"), strict=True
    ):
        _, _, target = grid_means(records, outcome)
        figures.append(
            plots.predictor_scatter(
                panels,
                100.0 * target.ravel(),
                os.path.join(output_dir, f"{name}.png"),
                ylabel=_HEATMAPS[outcome][0],
            )
        )
    text = (
        "# The teacher's sweet spot (batch size × epochs)\n\n"
        + header
        + "Means over seeds per grid cell; the similarity measures are of the teacher's test-set outputs.\n\n"
        + format_sweet_spot(records, correlations)
    )
    tables.write_summary(output_dir, text, {"records": list(records), "correlations": correlations})
    return {"correlations": correlations, "figures": figures}
