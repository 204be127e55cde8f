"""Results as a person reads them: the markdown table of a run (mean ± std over seeds, the teacher–student gap,
the paper's column), its JSON, CSV and bar chart, and the lines describing each column's data."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

import numpy as np

import data as datasets
from kd_tf import losses
from kd_tf.io import atomic_write_text
from kd_tf.repro import paper as paper_numbers

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
RESULTS_MARKDOWN = "results.md"
RESULTS_FIGURE = "results.png"


def format_table(
    records: Sequence[dict],
    column_key: str = "tau",
    metric: str = "test_accuracy",
    paper: dict[str, tuple] | None = None,
) -> str:
    """Markdown table: one row per method (teacher first, the paper's labels), one column per `column_key`
    value, mean ± std over seeds; then the teacher–student gap and KD's share of it. `paper` (row label ->
    the paper's (mean, spread or `None`)) adds a column with the paper's numbers."""
    rows, columns, means, spreads = table_cells(records, column_key, metric)
    header = "| method | " + " | ".join(f"{column_key} = {value}" for value in columns)
    header += " | paper |" if paper else " |"
    width = len(columns) + 1 + bool(paper)
    lines = [header, "|---" * width + "|"]
    for i, name in enumerate(rows):
        cells = [_cell(mean, std) for mean, std in zip(means[i], spreads[i], strict=True)]
        if paper:
            cells.append(_cell(*paper.get(name, (np.nan, None))))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    per_column = [
        paper_numbers.gap_rows(dict(zip(rows, means[:, j], strict=True))) for j in range(len(columns))
    ]
    if paper:
        per_column.append(paper_numbers.gap_rows({row: mean for row, (mean, _) in paper.items()}))
    names = list(dict.fromkeys(name for column in per_column for name, _ in column))
    for name in names:
        cells = [dict(column).get(name, "") for column in per_column]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(mean: float, spread: float | None) -> str:
    """A table cell: `mean`, or `mean ± spread`; empty without a mean."""
    if not np.isfinite(mean):
        return ""
    if spread is None or not np.isfinite(spread):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {spread:.2f}"


def table_cells(records: Sequence[dict], column_key: str, metric: str = "test_accuracy"):
    """(row names, column values, mean %, std % over seeds) of a table's cells; `nan` where there is none
    (a single seed has no spread)."""
    columns = sorted({record[column_key] for record in records})
    rows = list(dict.fromkeys(row_label(record) for record in records))
    means = np.full((len(rows), len(columns)), np.nan)
    spreads = np.full_like(means, np.nan)
    for i, name in enumerate(rows):
        for j, value in enumerate(columns):
            scores = [100.0 * r[metric] for r in records if r[column_key] == value and row_label(r) == name]
            if scores:
                means[i, j] = np.mean(scores)
                if len(scores) > 1:
                    spreads[i, j] = np.std(scores, ddof=1)
    return rows, columns, means, spreads


def write_results_figure(output_dir: str, records: Sequence[dict], column_key: str, title: str) -> str:
    """`results.png` beside `results.md`: accuracy per method and column, seed spread as error bars."""
    from kd_tf import plots

    rows, columns, means, spreads = table_cells(records, column_key)
    labels = [f"τ = {value}" if column_key == "tau" else str(value) for value in columns]
    return plots.accuracy_bars(rows, labels, means, spreads, os.path.join(output_dir, RESULTS_FIGURE), title)


def row_label(record: dict) -> str:
    """A table row's name: "Teacher", or the method's name in the paper ("KD-pt")."""
    return "Teacher" if record["role"] == "teacher" else losses.label(record["method"])


def write_results(output_dir: str, records: Sequence[dict], table: str, header: str = "") -> None:
    """Writes results as JSON, CSV and a markdown table, each atomically."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, RESULTS_JSON), json.dumps(list(records), indent=2) + "\n")
    flat = [_flatten(record) for record in records]
    fields = sorted({key for row in flat for key in row}, key=_field_order)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_text(os.path.join(output_dir, RESULTS_CSV), buffer.getvalue())
    atomic_write_text(os.path.join(output_dir, RESULTS_MARKDOWN), header + table)


_LEADING_FIELDS = ("dataset", "tau", "seed", "role", "method", "model", "test_accuracy")


def _field_order(name: str):
    return (_LEADING_FIELDS.index(name) if name in _LEADING_FIELDS else len(_LEADING_FIELDS), name)


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{prefix}{key}."))
        elif isinstance(value, list | tuple):
            flat[prefix + key] = " ".join(str(item) for item in value)
        else:
            flat[prefix + key] = value
    return flat


def write_summary(output_dir: str, markdown: str, data: dict) -> None:
    """A sweep's `results.md` and `results.json` (NumPy scalars as plain numbers), each atomically."""
    atomic_write_text(os.path.join(output_dir, RESULTS_MARKDOWN), markdown)
    atomic_write_text(
        os.path.join(output_dir, RESULTS_JSON), json.dumps(data, indent=2, default=_numpy_scalar) + "\n"
    )


def _numpy_scalar(value):
    if isinstance(value, np.floating | np.integer):
        return value.item()
    raise TypeError(f"Not JSON serialisable: {type(value).__name__}")


def write_csv(path: str, records: Sequence[dict], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: record.get(name) for name in fields})
    atomic_write_text(path, buffer.getvalue())


def describe_data(records: Sequence[dict], column_key: str) -> list[str]:
    """One line per setting (its column and any data option that varies between the records, e.g. a task
    seed) and seed of `records`, saying what its dataset measures of the data (the synthetic task's label
    non-linearity); none for a dataset that measures nothing."""
    varying = varying_options(records, column_key)
    lines = {}
    for record in records:
        text = datasets.facts(record["dataset"]).describe(record.get("data_measures", {}))
        key = (setting_label(record, column_key, varying), record["seed"])
        if text and key not in lines:
            lines[key] = f"{key[0]} seed={key[1]}: {text}"
    return list(lines.values())


def varying_options(records: Sequence[dict], column_key: str) -> list[str]:
    """The data options besides `column_key` whose value differs between `records` (a table over tasks)."""
    names = sorted({name for record in records for name in record.get("data_options", {})} - {column_key})
    return [name for name in names if len({repr(r.get("data_options", {}).get(name)) for r in records}) > 1]


def setting_label(record: dict, column_key: str, varying: Sequence[str] = ()) -> str:
    """`tau=0.5`, or `tau=0.5 task_seed=2` where `task_seed` is one of the `varying` options."""
    options = record.get("data_options", {})
    setting = {column_key: record.get(column_key), **{name: options.get(name) for name in varying}}
    return f"{column_key}={column_text(column_key, setting)}"


def column_text(column_key: str, setting: dict) -> str:
    """A setting's column value for progress lines, with its other options (`0.5 task_seed=2`)."""
    return f"{setting[column_key]}" + "".join(f" {k}={v}" for k, v in setting.items() if k != column_key)
