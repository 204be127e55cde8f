"""The paper's figures as small PNG files, drawn from `kd_tf.analysis` results."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from kd_tf.analysis import pearson

# Modest resolution keeps every figure well under 200 KB.
_DPI = 100


def _new_figure(width: float, height: float) -> Figure:
    # A bare Figure on the Agg canvas: no pyplot global state, no GUI backend, safe in threads.
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path) -> str:
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"`path` must end in .png. Received: path={path!r}")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    buffer.seek(0)
    # A 256-colour palette (no dithering) stores a noisy 100-class heatmap in a quarter of RGBA's bytes.
    with Image.open(buffer) as image:
        palette_image = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    palette_image.save(path, format="PNG", optimize=True)
    return path


def _subsample(max_points: int, *arrays):
    # Tens of thousands of markers add nothing visible but bytes; a fixed seed keeps figures stable.
    size = len(arrays[0])
    if size <= max_points:
        return arrays
    chosen = np.sort(np.random.default_rng(0).choice(size, max_points, replace=False))
    return tuple(np.asarray(array)[chosen] for array in arrays)


def _off_diagonal_range(matrix) -> tuple[float | None, float | None]:
    values = np.asarray(matrix, dtype=np.float64)[~np.eye(len(matrix), dtype=bool)]
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return None, None
    return float(values.min()), float(values.max())


def correlation_heatmaps(
    matrices: Mapping[str, np.ndarray],
    path,
    boundaries: Sequence[int] = (),
    title: str | None = None,
    value_range: tuple[float, float] | str | None = "off_diagonal",
    colorbar_label: str = "Pearson correlation",
) -> str:
    """Figures 1 and 4: class-by-class heatmaps side by side, each with its colour bar.

    Args:
        matrices: panel title -> `[M, M]` matrix (already sorted by super-class).
        path: PNG file to write.
        boundaries: class positions where a new super-class starts, marked by ticks on the axes
            (lines across the panel would hide the blocks the figure is meant to show).
        title: optional title over all panels.
        value_range: `"off_diagonal"` (default) scales each panel's colours to its off-diagonal
            entries, so that the diagonal (always 1) saturates instead of flattening the rest;
            `"off_diagonal_shared"` uses one range over the off-diagonal entries of all panels
            (for comparing teachers, Figure 4); a `(low, high)` pair fixes the range; `None`
            scales each panel to all of its entries.
        colorbar_label: colour-bar label; panels whose title contains "cosine" are labelled
            "cosine similarity".
    """
    if not matrices:
        raise ValueError("`matrices` must hold at least one matrix. Received: {}")
    for name, matrix in matrices.items():
        if np.ndim(matrix) != 2 or np.shape(matrix)[0] != np.shape(matrix)[1]:
            raise ValueError(f"Every matrix must be square. Received: {name!r} of shape {np.shape(matrix)}")
    if isinstance(value_range, str) and value_range not in ("off_diagonal", "off_diagonal_shared"):
        raise ValueError(
            "`value_range` must be 'off_diagonal', 'off_diagonal_shared', a (low, high) pair or "
            "None. "
            f"Received: value_range={value_range!r}"
        )
    if value_range == "off_diagonal_shared":
        ranges = [_off_diagonal_range(matrix) for matrix in matrices.values()]
        lows = [low for low, _ in ranges if low is not None]
        highs = [high for _, high in ranges if high is not None]
        value_range = (min(lows), max(highs)) if lows else None
    figure = _new_figure(3.6 * len(matrices), 3.4)
    axes = figure.subplots(1, len(matrices), squeeze=False)[0]
    for index, (axis, (name, matrix)) in enumerate(zip(axes, matrices.items(), strict=True)):
        matrix = np.asarray(matrix, dtype=np.float64)
        if value_range == "off_diagonal":
            vmin, vmax = _off_diagonal_range(matrix)
        elif value_range is None:
            vmin, vmax = None, None
        else:
            vmin, vmax = value_range
        image = axis.imshow(matrix, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        if boundaries:
            positions = [boundary - 0.5 for boundary in boundaries]
            axis.set_xticks(positions, minor=True)
            axis.set_yticks(positions, minor=True)
            axis.tick_params(which="minor", length=2, width=0.5)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("class (sorted by super-class)", fontsize=8)
        if index == 0:
            axis.set_ylabel("class (sorted by super-class)", fontsize=8)
        axis.tick_params(labelsize=7)
        label = "cosine similarity" if "cosine" in name.lower() else colorbar_label
        colorbar = figure.colorbar(image, ax=axis, fraction=0.046, pad=0.03)
        colorbar.set_label(label, fontsize=8)
        colorbar.ax.tick_params(labelsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def rescaling_scatter(
    teacher_probs,
    w,
    path,
    title: str = "Gradient rescaling against teacher confidence",
    max_points: int = 5000,
) -> str:
    """Figure 2: per-example rescaling factor `w` against the teacher's `q^T_t`, with Pearson r."""
    teacher_probs = np.asarray(teacher_probs, dtype=np.float64).ravel()
    w = np.asarray(w, dtype=np.float64).ravel()
    if teacher_probs.shape != w.shape or teacher_probs.size == 0:
        raise ValueError(
            "`teacher_probs` and `w` must be non-empty and equally long. "
            f"Received: {teacher_probs.size} and {w.size}"
        )
    correlation = pearson(teacher_probs, w)
    shown_probs, shown_w = _subsample(max_points, teacher_probs, w)
    figure = _new_figure(4.5, 3.5)
    axis = figure.subplots()
    axis.scatter(shown_probs, shown_w, s=3, alpha=0.3, linewidths=0, rasterized=True)
    axis.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    # w explodes where the student is already sure (CE's gradient 2(1 - p_t) -> 0).
    positive = w[w > 0]
    if positive.size and positive.max() / positive.min() > 100:
        axis.set_yscale("log")
    axis.set_xlabel("teacher probability of the true class $q^T_t$")
    axis.set_ylabel("rescaling factor $w$ (ℓ1 grad. ratio to CE)")
    suffix = f" (Pearson r = {correlation:.3f})" if correlation is not None else ""
    axis.set_title(title + suffix, fontsize=9)
    return _save(figure, path)


def topk_uplift(
    ks,
    uplifts,
    path,
    stds=None,
    title: str = "KD-topk uplift over KD",
    ylabel: str = "accuracy uplift over KD (points)",
) -> str:
    """Figure 3: KD-topk's gain over KD against `k` (log-scaled `k` when it spans > 20×)."""
    ks = np.asarray(ks, dtype=np.float64).ravel()
    uplifts = np.asarray(uplifts, dtype=np.float64).ravel()
    if ks.shape != uplifts.shape or ks.size == 0:
        raise ValueError(
            f"`ks` and `uplifts` must be non-empty and equally long. Received: {ks.size} and {uplifts.size}"
        )
    if stds is not None:
        stds = np.asarray(stds, dtype=np.float64).ravel()
        if stds.shape != ks.shape:
            raise ValueError(f"`stds` must match `ks`. Received: {stds.size} and {ks.size}")
    order = np.argsort(ks)
    figure = _new_figure(4.5, 3.2)
    axis = figure.subplots()
    axis.errorbar(
        ks[order],
        uplifts[order],
        yerr=None if stds is None else stds[order],
        marker="o",
        markersize=4,
        capsize=3,
    )
    axis.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    if ks.min() > 0 and ks.max() / ks.min() > 20:
        axis.set_xscale("log")
    axis.set_xlabel("k (teacher classes kept)")
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    return _save(figure, path)


def probability_histograms(
    probabilities: Mapping[str, np.ndarray],
    path,
    bins: int = 40,
    title: str = "Teacher probability of the true class",
) -> str:
    """Figure 5: overlaid histograms of the teacher's `q^T_t`, one per teacher (e.g. without/with LS)."""
    if not probabilities:
        raise ValueError("`probabilities` must hold at least one array. Received: {}")
    if bins < 1:
        raise ValueError(f"`bins` must be >= 1. Received: bins={bins}")
    figure = _new_figure(4.5, 3.2)
    axis = figure.subplots()
    edges = np.linspace(0.0, 1.0, bins + 1)
    for label, values in probabilities.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        axis.hist(values, bins=edges, alpha=0.5, label=f"{label} (mean {values.mean():.2f})")
    axis.set_xlabel("teacher probability of the true class $q^T_t$")
    axis.set_ylabel("number of examples")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    return _save(figure, path)


def geometry_scatter(
    teacher_probs,
    distances,
    path,
    title: str = "Logit-layer geometry (Proposition 1)",
    max_points: int = 5000,
) -> str:
    """Distance `‖h - w_i‖` from the student's penultimate activation to each wrong class's weight
    vector, against the teacher's `q^T_i` (log scale), with Pearson r.

    Pass `analysis.logit_geometry(...)`'s arrays restricted to its `wrong_class` mask.
    """
    teacher_probs = np.asarray(teacher_probs, dtype=np.float64).ravel()
    distances = np.asarray(distances, dtype=np.float64).ravel()
    if teacher_probs.shape != distances.shape or teacher_probs.size == 0:
        raise ValueError(
            "`teacher_probs` and `distances` must be non-empty and equally long. "
            f"Received: {teacher_probs.size} and {distances.size}"
        )
    correlation = pearson(teacher_probs, distances)
    shown_probs, shown_distances = _subsample(max_points, teacher_probs, distances)
    figure = _new_figure(4.5, 3.5)
    axis = figure.subplots()
    axis.scatter(
        np.maximum(shown_probs, 1e-12), shown_distances, s=3, alpha=0.3, linewidths=0, rasterized=True
    )
    axis.set_xscale("log")
    axis.set_xlabel("teacher probability of the class $q^T_i$ (wrong classes)")
    axis.set_ylabel("distance $\\|h - w_i\\|$")
    suffix = f" (Pearson r = {correlation:.3f})" if correlation is not None else ""
    axis.set_title(title + suffix, fontsize=9)
    return _save(figure, path)


# The companion-paper sweeps (kd_tf.repro.data_efficiency, kd_tf.repro.sweet_spot).


def learning_curves(rows: Sequence[Mapping], path) -> str:
    """Test accuracy against training-set size (log scale): a panel per (setting, student model), a line per
    method, the teacher's accuracy dashed."""
    if not rows:
        raise ValueError("`rows` must not be empty.")
    settings = sorted({(row["tau"], row["difficulty"]) for row in rows})
    student_models = list(dict.fromkeys(row["student_model"] for row in rows))
    figure = _new_figure(3.2 * len(student_models), 2.6 * len(settings))
    axes = np.asarray(figure.subplots(len(settings), len(student_models), squeeze=False))
    for i, setting in enumerate(settings):
        for j, model in enumerate(student_models):
            axis = axes[i, j]
            group = [
                r for r in rows if (r["tau"], r["difficulty"]) == setting and r["student_model"] == model
            ]
            for row in group:
                axis.errorbar(
                    row["sizes"],
                    100 * np.asarray(row["accuracy"]),
                    yerr=100 * np.asarray(row["accuracy_std"]) if row.get("seeds", 1) > 1 else None,
                    marker="o",
                    markersize=3,
                    capsize=2,
                    label=row["method"],
                )
            if group:
                axis.axhline(
                    100 * group[0]["teacher_test_accuracy"], color="grey", linestyle="--", linewidth=0.8
                )
            axis.set_xscale("log")
            axis.set_title(f"τ={setting[0]}, difficulty {setting[1]}: {model}", fontsize=8)
            axis.set_xlabel("training examples n", fontsize=8)
            axis.set_ylabel("test accuracy (%)", fontsize=8)
            axis.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    return _save(figure, path)


def grid_heatmap(values, row_labels, column_labels, path, title: str, xlabel: str, ylabel: str) -> str:
    """A `[rows, columns]` grid of numbers as a heatmap with each cell's value written in it."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(row_labels), len(column_labels)):
        raise ValueError(
            f"`values` must have shape ({len(row_labels)}, {len(column_labels)}). Received: {values.shape}"
        )
    figure = _new_figure(1.0 + 0.9 * len(column_labels), 1.0 + 0.6 * len(row_labels))
    axis = figure.subplots()
    image = axis.imshow(values, cmap="viridis", aspect="auto")
    figure.colorbar(image, ax=axis, shrink=0.8)
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    digits = 1 if finite.size and np.abs(finite).max() >= 10 else 3
    for (row, column), value in np.ndenumerate(values):
        if np.isfinite(value):
            axis.text(
                column,
                row,
                f"{value:.{digits}f}",
                ha="center",
                va="center",
                fontsize=7,
                color="black" if value > middle else "white",
            )
    axis.set_xticks(range(len(column_labels)), [str(label) for label in column_labels])
    axis.set_yticks(range(len(row_labels)), [str(label) for label in row_labels])
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title, fontsize=9)
    return _save(figure, path)


def claim_heatmaps(panels, row_labels, column_labels, path) -> str:
    """Side-by-side heatmaps of one grid of cells, one per `(title, values, threshold)` panel: a diverging
    colour scale centred on `threshold` (where a claim starts to hold), each cell's value written in it and
    empty cells (NaN) left white."""
    figure = _new_figure(1.6 + 2.4 * len(panels), 1.2 + 0.45 * len(row_labels))
    axes = np.atleast_1d(figure.subplots(1, len(panels), sharey=True))
    for axis, (title, values, threshold) in zip(axes, panels, strict=True):
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(row_labels), len(column_labels)):
            raise ValueError(
                f"Panel {title!r} must have shape ({len(row_labels)}, {len(column_labels)}). "
                f"Received: {values.shape}"
            )
        finite = values[np.isfinite(values)]
        reach = float(np.abs(finite - threshold).max()) if finite.size else 1.0
        reach = reach or 1.0
        axis.imshow(
            np.ma.masked_invalid(values),
            cmap="RdBu",
            vmin=threshold - reach,
            vmax=threshold + reach,
            aspect="auto",
        )
        for (row, column), value in np.ndenumerate(values):
            axis.text(
                column,
                row,
                "–" if not np.isfinite(value) else f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
            )
        axis.set_xticks(range(len(column_labels)), [str(label) for label in column_labels], fontsize=7)
        axis.set_yticks(range(len(row_labels)), [str(label) for label in row_labels], fontsize=7)
        axis.set_title(title, fontsize=8)
    return _save(figure, path)


def predictor_scatter(panels: Sequence[tuple[str, np.ndarray]], outcome, path, ylabel: str) -> str:
    """One scatter panel per `(name, values)` against the same `outcome`, titled with Pearson's r."""
    outcome = np.asarray(outcome, dtype=np.float64).ravel()
    figure = _new_figure(3.2 * len(panels), 3.0)
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    for axis, (name, values) in zip(axes, panels, strict=True):
        values = np.asarray(values, dtype=np.float64).ravel()
        keep = np.isfinite(values) & np.isfinite(outcome)
        axis.scatter(values[keep], outcome[keep], s=14)
        correlation = pearson(values[keep], outcome[keep]) if keep.sum() > 1 else None
        suffix = f"\nPearson r = {correlation:+.3f}" if correlation is not None else ""
        axis.set_title(name + suffix, fontsize=8)
        axis.set_ylabel(ylabel, fontsize=8)
        axis.tick_params(labelsize=7)
    return _save(figure, path)


def accuracy_bars(rows: Sequence[str], columns: Sequence[str], means, spreads, path, title: str) -> str:
    """A table run's result: test accuracy (%) per method (bars) and column (groups), with the spread over
    seeds as error bars where `spreads` has them (`nan` for none).

    Args:
        rows: method labels, teacher first.
        columns: column labels (e.g. "τ = 0.5").
        means: `[len(rows), len(columns)]` accuracies in %, `nan` where a cell has no run.
        spreads: same shape, standard deviations over seeds (`nan` for a single seed).
    """
    means, spreads = np.asarray(means, dtype=float), np.asarray(spreads, dtype=float)
    if means.shape != (len(rows), len(columns)) or spreads.shape != means.shape:
        raise ValueError(
            f"`means` and `spreads` must have shape {(len(rows), len(columns))}. "
            f"Received: {means.shape} and {spreads.shape}"
        )
    figure = _new_figure(max(4.0, 1.2 + 0.45 * len(rows) * len(columns)), 3.0)
    axis = figure.subplots()
    width = 0.8 / len(rows)
    centres = np.arange(len(columns))
    for i, row in enumerate(rows):
        errors = np.where(np.isfinite(spreads[i]), spreads[i], 0.0) if np.isfinite(spreads[i]).any() else None
        axis.bar(
            centres + (i - (len(rows) - 1) / 2) * width, means[i], width, yerr=errors, capsize=2, label=row
        )
    spread = np.where(np.isfinite(spreads), spreads, 0.0)
    finite = np.isfinite(means)
    if finite.any():
        low, high = float((means - spread)[finite].min()), float((means + spread)[finite].max())
        margin = max(1.0, 0.15 * (high - low))
        axis.set_ylim(max(0.0, low - margin), min(100.0, high + margin))
    axis.set_xticks(centres, list(columns), fontsize=8)
    axis.set_ylabel("test accuracy (%)", fontsize=8)
    axis.set_title(title, fontsize=9)
    axis.tick_params(labelsize=7)
    axis.legend(fontsize=7, ncol=min(len(rows), 5), loc="lower center", bbox_to_anchor=(0.5, 1.08))
    return _save(figure, path)
