"""Paired differences between two rows of finished tables, seed by seed: what decides whether a gap between two
methods is more than the spread of seeds.

    python -m kd_tf.repro.paired results/fashion_mnist_table/results.json kd-student kd-ls kd_topk-kd
    python -m kd_tf.repro.paired runs/fashion_mnist_ls_teacher/results.json kd-kd \
        --against results/fashion_mnist_table/results.json

A pair `A-B` is row A minus row B (method names as in `results.json`, `teacher` for the teacher), matched on
the column and the seed; with `--against`, row B is read from the other run (the same seeds: a label-smoothed
teacher's KD against a plain teacher's). Each line gives the mean ± std (n − 1) over the matched seeds, in
points of accuracy, and the per-seed differences.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

from kd_tf.repro import tables

METRICS = ("test_accuracy", "last_epoch_test_accuracy", "best_validation_accuracy")
BASELINE = "student"  # the row a table's paired differences are taken against: hard labels alone


def scores(records: Sequence[dict], method: str, column_key: str, metric: str) -> dict:
    """`(column value, seed) -> 100 × metric` of row `method` (`teacher`: the teacher)."""
    return {
        (record.get(column_key), record["seed"]): 100.0 * record[metric]
        for record in records
        if (record["role"] if method == "teacher" else record["method"]) == method and metric in record
    }


def differences(first: dict, second: dict) -> list[tuple[tuple, float]]:
    """`[(column value, seed), first − second]` over the cells both have, in order."""
    return [(key, first[key] - second[key]) for key in sorted(first, key=str) if key in second]


def describe(name: str, matched: list[tuple[tuple, float]]) -> str:
    """One line: `name: +m ± s (n seeds; per seed ...)`."""
    if not matched:
        return f"{name}: no cell in common"
    values = np.array([value for _, value in matched])
    spread = f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else ""
    per_seed = ", ".join(f"{value:+.2f}" for value in values)
    return f"{name}: {np.mean(values):+.2f}{spread} points ({len(values)} paired; per seed {per_seed})"


def markdown_against(records: Sequence[dict], baseline: str, column_key: str, metric: str) -> str:
    """Every other row minus `baseline`, paired per column and seed, as markdown lines; empty where the table
    has one seed (nothing to pair beyond the table itself) or no `baseline` row."""
    if len({record["seed"] for record in records}) < 2:
        return ""
    reference = scores(records, baseline, column_key, metric)
    if not reference:
        return ""
    rows = list(
        dict.fromkeys(record["method"] if record["role"] != "teacher" else "teacher" for record in records)
    )
    lines = []
    for row in rows:
        if row == baseline:
            continue
        columns = sorted({key[0] for key in reference}, key=str)
        for column in columns:
            matched = [
                (key, value)
                for key, value in differences(scores(records, row, column_key, metric), reference)
                if key[0] == column
            ]
            where = f" ({column_key} = {column})" if len(columns) > 1 else ""
            lines.append("- " + describe(f"{_label(row)} − {_label(baseline)}{where}", matched))
    return "\n".join(lines) + "\n"


def _label(row: str) -> str:
    return "Teacher" if row == "teacher" else tables.row_label({"role": "student", "method": row})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kd_tf.repro.paired", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("results", help="a table's results.json")
    parser.add_argument("pairs", nargs="+", help="A-B: row A minus row B (method names, or teacher)")
    parser.add_argument("--against", help="read row B from this results.json instead")
    parser.add_argument("--metric", default="test_accuracy", choices=METRICS)
    parser.add_argument(
        "--column_key", default="dataset", help="the table's column field (tau for synthetic)"
    )
    arguments = parser.parse_args(argv)
    try:
        first = json.load(open(arguments.results, encoding="utf-8"))
        second = json.load(open(arguments.against, encoding="utf-8")) if arguments.against else first
    except (OSError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    known = {record["method"] for record in first + second} | {"teacher"}
    for pair in arguments.pairs:
        a, _, b = pair.partition("-")
        unknown = [name for name in (a, b) if name not in known]
        if not b or unknown:
            print(f"Error: {pair!r} is not A-B with A and B among {sorted(known)}.", file=sys.stderr)
            return 2
        name = f"{_label(a)} − {_label(b)}" + (" (B from --against)" if arguments.against else "")
        matched = differences(
            scores(first, a, arguments.column_key, arguments.metric),
            scores(second, b, arguments.column_key, arguments.metric),
        )
        print(describe(name, matched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
