"""The data-efficiency sweep's results: accuracy against training-set size per setting, student and method (means over seeds), the gain over the hard-label Student, the learning-curve exponent, and the CSV, markdown and figures."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from kd_tf import plots
from kd_tf.repro import tables

DATA_EFFICIENCY_CSV = "data_efficiency.csv"


DATA_EFFICIENCY_FIELDS = (
    "tau",
    "difficulty",
    "seed",
    "student_model",
    "method",
    "train_examples",
    "test_accuracy",
    "test_agreement",
    "best_validation_accuracy",
    "best_evaluation",
    "steps",
    "teacher_test_accuracy",
    "wall_time_s",
)


def learning_curve_exponent(sizes, errors) -> float | None:
    """The slope `κ` of `log error ≈ c − κ log n` by least squares: how fast the error falls with data.

    Phuong & Lampert bound a distilled linear classifier's transfer risk by `O(n^-κ)` with `κ` set by the
    data geometry; a larger fitted `κ` is faster learning. Points with zero error are left out (their log
    is unbounded); `None` when fewer than two points remain.
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    if sizes.shape != errors.shape:
        raise ValueError(f"`sizes` and `errors` must match. Received: {sizes.shape} and {errors.shape}")
    keep = errors > 0
    if keep.sum() < 2 or np.unique(sizes[keep]).size < 2:
        return None
    slope, _ = np.polyfit(np.log(sizes[keep]), np.log(errors[keep]), 1)
    return float(-slope)


def monotonicity_drops(values, tolerance: float = 0.0) -> int:
    """How many times a curve (ordered by training-set size) falls by more than `tolerance`."""
    values = np.asarray(values, dtype=np.float64)
    return int(np.sum(np.diff(values) < -tolerance))


def summarize_data_efficiency(records: Sequence[dict]) -> list[dict]:
    """One row per (setting, student model, method): accuracies by size (mean over seeds) and speed.

    `gain_first`/`gain_last` are the method's accuracy minus the hard-label Student's at the smallest and
    the largest size; `exponent` is `learning_curve_exponent` of the transfer risk `1 − agreement`;
    `drops` counts falls of the mean accuracy curve by more than 0.5 points as `n` grows.
    """
    groups: dict = {}
    model_order = list(dict.fromkeys(record["student_model"] for record in records))
    for record in records:
        key = (record["tau"], record["difficulty"], record["student_model"], record["method"])
        groups.setdefault(key, {}).setdefault(record["train_examples"], []).append(record)
    rows = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], model_order.index(k[2]), _method_order(k[3]))):
        by_size = groups[key]
        sizes = sorted(by_size)
        accuracy = [float(np.mean([r["test_accuracy"] for r in by_size[n]])) for n in sizes]
        agreement = [float(np.mean([r["test_agreement"] for r in by_size[n]])) for n in sizes]
        rows.append(
            {
                "tau": key[0],
                "difficulty": key[1],
                "student_model": key[2],
                "method": key[3],
                "sizes": sizes,
                "accuracy": accuracy,
                "accuracy_std": [float(np.std([r["test_accuracy"] for r in by_size[n]])) for n in sizes],
                "agreement": agreement,
                "seeds": len(by_size[sizes[0]]),
                "exponent": learning_curve_exponent(sizes, 1.0 - np.asarray(agreement)),
                "drops": monotonicity_drops(accuracy, tolerance=0.005),
                "teacher_test_accuracy": float(
                    np.mean([r["teacher_test_accuracy"] for r in by_size[sizes[0]]])
                ),
            }
        )
    baselines = {
        (row["tau"], row["difficulty"], row["student_model"]): row
        for row in rows
        if row["method"] == "student"
    }
    for row in rows:
        baseline = baselines.get((row["tau"], row["difficulty"], row["student_model"]))
        if baseline is not None and baseline["sizes"] == row["sizes"]:
            row["gain_first"] = row["accuracy"][0] - baseline["accuracy"][0]
            row["gain_last"] = row["accuracy"][-1] - baseline["accuracy"][-1]
    return rows


def _method_order(method: str) -> tuple:
    order = ("student", "kd", "kd_pt", "kd_sim", "kd_topk", "kd_rel")
    return (order.index(method) if method in order else len(order), method)


def format_data_efficiency(rows: Sequence[dict]) -> str:
    """Markdown: per setting, accuracy by size for every student model and method, then its speed."""
    lines = []
    settings = sorted({(row["tau"], row["difficulty"]) for row in rows})
    for tau, difficulty in settings:
        group = [row for row in rows if (row["tau"], row["difficulty"]) == (tau, difficulty)]
        sizes = group[0]["sizes"]
        teacher = group[0]["teacher_test_accuracy"]
        lines.append(f"### τ = {tau}, difficulty = {difficulty} (teacher {100 * teacher:.2f}%)\n")
        lines.append(
            "| student | method | "
            + " | ".join(_size_label(n) for n in sizes)
            + " | gain at smallest n | gain at largest n | κ (risk ∝ n^-κ) | drops |"
        )
        lines.append("|---|---|" + "---:|" * (len(sizes) + 4))
        for row in group:
            cells = [
                f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if row["seeds"] > 1 else "")
                for mean, std in zip(row["accuracy"], row["accuracy_std"], strict=True)
            ]
            gains = [
                "" if row["method"] == "student" or row.get(name) is None else f"{100 * row[name]:+.2f}"
                for name in ("gain_first", "gain_last")
            ]
            exponent = "" if row["exponent"] is None else f"{row['exponent']:.3f}"
            lines.append(
                f"| {row['student_model']} | {row['method']} | "
                + " | ".join(cells)
                + f" | {gains[0]} | {gains[1]} | {exponent} | {row['drops']} |"
            )
        lines.append("")
    return "\n".join(lines)


def _size_label(size: int) -> str:
    return f"{size // 1000}K" if size >= 1000 and size % 1000 == 0 else str(size)


def write_data_efficiency(output_dir: str, records: Sequence[dict], header: str = "") -> dict:
    """Writes `data_efficiency.csv` (one row per cell), `results.json`, `results.md` and the PNG."""
    os.makedirs(output_dir, exist_ok=True)
    tables.write_csv(os.path.join(output_dir, DATA_EFFICIENCY_CSV), records, DATA_EFFICIENCY_FIELDS)
    rows = summarize_data_efficiency(records)
    figure = plots.learning_curves(rows, os.path.join(output_dir, "data_efficiency.png"))
    text = (
        "# Data efficiency of distillation (Phuong & Lampert 2019)\n\n"
        + header
        + "Test accuracy (%) of students trained on the first n examples of one pool, each for the same "
        "number of steps; κ is the fitted exponent of the transfer risk (disagreement with the teacher), "
        "gains are over the hard-label Student, drops count falls of > 0.5 points as n grows.\n\n"
        + format_data_efficiency(rows)
    )
    tables.write_summary(output_dir, text, {"records": list(records), "summary": rows})
    return {"rows": rows, "figure": figure}
