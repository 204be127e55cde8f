"""The paper's Figures 1-5 and Proposition 1 from a finished table run: PNGs, CSV and JSON."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import keras

from kd_tf.io import atomic_write_text
from kd_tf.repro import figure_measures, figure_outputs
from kd_tf.repro.figure_cells import Cell, cell_key, check_same_data, find_cells
from kd_tf.repro.figure_request import AnalysisRequest

FIGURES_DIR = "figures"
SWEEP_CSV = "topk_sweep.csv"
SUMMARY_JSON = "summary.json"
BLOCK_CONTRAST_CSV = "block_contrast.csv"
STUDENTS_CSV = "students.csv"
UPLIFT_CSV = "topk_uplift.csv"


def analyze_run(request: AnalysisRequest, log: Callable[[str], None] = print) -> dict:
    """Draws Figures 1-5 and Proposition 1's geometry for a finished table run and writes their numbers.

    For each cell (column value, seed) of `request.run_dir` the data is regenerated from the teacher's
    `teacher.json`; the teacher and every saved student are loaded in Keras safe mode. Written to
    `request.figures_dir` (default `run_dir/figures`):

    - `figure1_<cell>.png`: class-correlation heatmaps of the teacher at each temperature, of KD-topk's
      target at the highest, and the cosines of the teacher's logit-layer class vectors;
      `figure1_high_temperature_seed=<s>.png`: the highest-temperature matrix of every column side by side.
    - `figure2_<cell>.png`: the KD student's gradient rescaling `w` against `q^T_t` at the end of training
      (on `rescaling_split`), and `figure2_start_<cell>.png` for a freshly initialised student.
    - `geometry_<cell>.png`: Proposition 1, the KD student's distance to each wrong class's vector
      against the teacher's probability of that class.
    - `figure3_<column>.png`: KD-topk's uplift over KD against `k`, from `sweep_csv` (default
      `figures_dir/topk_sweep.csv` when it exists, as written by `topk_sweep`).
    - `figure4_<cell>.png`, `figure5_<cell>.png`: with `ls_run_dir`, a table run on the same data whose
      teachers were trained with label smoothing: both teachers' heatmaps at the highest temperature
      (one shared colour scale) and histograms of their `q^T_t` at the lowest.
    - `summary.json` (every number), `block_contrast.csv`, `students.csv`, `topk_uplift.csv`.

    Args:
        request: the run, the cells and the figures' settings.
        log: progress messages.

    Returns:
        The summary written to `summary.json`.
    """
    figures_dir = (
        os.fspath(request.figures_dir)
        if request.figures_dir
        else os.path.join(os.fspath(request.run_dir), FIGURES_DIR)
    )
    cells = find_cells(request.run_dir, request.columns, request.seeds)
    ls_cells = _ls_cells(request, cells)
    os.makedirs(figures_dir, exist_ok=True)
    results = _Results(_new_summary(request))
    for cell in cells:
        log(f"Analysing {cell.name}")
        _analyze_cell(cell, ls_cells.get(cell_key(cell)), request, figures_dir, results, log)
        keras.backend.clear_session()
    _draw_across_cells(results, request, figures_dir)
    _write_numbers(results, figures_dir)
    log(f"Figures and numbers: {figures_dir}")
    return results.summary


@dataclasses.dataclass
class _Results:
    """What the cells add up to: the summary, the rows of the CSV tables, and by seed the boundaries and
    the highest-temperature teacher matrix of each column."""

    summary: dict
    contrast_rows: list[dict] = dataclasses.field(default_factory=list)
    student_rows: list[dict] = dataclasses.field(default_factory=list)
    uplift_rows: list[dict] = dataclasses.field(default_factory=list)
    high_temperature: dict[int, tuple[list, dict]] = dataclasses.field(default_factory=dict)


def _ls_cells(request: AnalysisRequest, cells: list[Cell]) -> dict:
    """The cells of `request.ls_run_dir` by `cell_key`, each checked to hold the data of its match."""
    if not request.ls_run_dir:
        return {}
    ls_cells = {
        cell_key(cell): cell for cell in find_cells(request.ls_run_dir, request.columns, request.seeds)
    }
    for cell in cells:
        if cell_key(cell) in ls_cells:
            check_same_data(cell, ls_cells[cell_key(cell)])
    return ls_cells


def _new_summary(request: AnalysisRequest) -> dict:
    return {
        "run_dir": os.path.abspath(request.run_dir),
        "ls_run_dir": os.path.abspath(request.ls_run_dir) if request.ls_run_dir else None,
        "split": request.split,
        "rescaling_split": request.rescaling_split,
        "temperatures": list(request.temperatures),
        "topk": int(request.topk) if request.topk else None,
        "cells": {},
        "label_smoothing": {},
        "figures": [],
    }


def _analyze_cell(
    cell: Cell,
    ls_cell: Cell | None,
    request: AnalysisRequest,
    figures_dir: str,
    results: _Results,
    log: Callable[[str], None],
) -> None:
    """Measures and draws one cell (and its comparison with `ls_cell`), adding to `results`."""
    summary = results.summary
    measures = figure_measures.measure_cell(cell, request, log)
    summary["figures"].extend(figure_outputs.draw_cell(cell, measures, figures_dir))
    summary["cells"][cell.name] = measures.summary
    high = f"T={max(request.temperatures):g}"
    boundaries, matrices = results.high_temperature.setdefault(cell.seed, (measures.boundaries, {}))
    matrices[f"{cell.label}, teacher {high}"] = measures.matrices[f"teacher {high}"]
    for title, values in measures.summary["teacher"].get("block_contrast", {}).items():
        results.contrast_rows.append(figure_outputs.contrast_row(cell, "teacher", title, values))
    for method, values in measures.summary["students"].items():
        results.student_rows.append(figure_outputs.student_row(cell, method, values))
    if ls_cell is None:
        return
    comparison = figure_measures.compare_with_ls(cell, ls_cell, measures.teacher, request.temperatures)
    summary["figures"].extend(figure_outputs.draw_ls_comparison(cell, comparison, figures_dir))
    summary["label_smoothing"][cell.name] = comparison.summary
    for teacher_name, values in comparison.summary["heatmap"].items():
        if "block_contrast" in values:
            row = figure_outputs.contrast_row(cell, teacher_name, high, values["block_contrast"])
            results.contrast_rows.append(row)


def _draw_across_cells(results: _Results, request: AnalysisRequest, figures_dir: str) -> None:
    """Each seed's columns side by side at the highest temperature, and Figure 3 from the sweep's CSV."""
    summary = results.summary
    for seed, (boundaries, matrices) in results.high_temperature.items():
        if len(matrices) > 1:
            summary["figures"].append(
                figure_outputs.draw_high_temperature(
                    seed, matrices, boundaries, max(request.temperatures), figures_dir
                )
            )
    sweep_csv = os.fspath(request.sweep_csv) if request.sweep_csv else os.path.join(figures_dir, SWEEP_CSV)
    if os.path.exists(sweep_csv):
        summary["topk_uplift"], results.uplift_rows, written = figure_outputs.figure3(sweep_csv, figures_dir)
        summary["figures"].extend(written)
    summary["figures"] = sorted(set(summary["figures"]))


def _write_numbers(results: _Results, figures_dir: str) -> None:
    figure_outputs.write_csv(os.path.join(figures_dir, BLOCK_CONTRAST_CSV), results.contrast_rows)
    figure_outputs.write_csv(os.path.join(figures_dir, STUDENTS_CSV), results.student_rows)
    if results.uplift_rows:
        figure_outputs.write_csv(os.path.join(figures_dir, UPLIFT_CSV), results.uplift_rows)
    atomic_write_text(
        os.path.join(figures_dir, SUMMARY_JSON), json.dumps(results.summary, indent=2, allow_nan=False) + "\n"
    )
