"""What the companion-paper sweeps share: groups of cells trained in worker processes, progress lines,
CSV files and a model's logits over arrays."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

import keras
import numpy as np

from kd_tf.io import atomic_write_text


def print_now(line: str) -> None:
    print(line, flush=True)


def logits_of(model: keras.Model, inputs: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    # Eager calls: `predict` would trace a new function for every one of the sweep's many models.
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(inputs[start : start + batch_size], training=False))
            for start in range(0, len(inputs), batch_size)
        ]
    )


@dataclasses.dataclass(frozen=True)
class Group:
    """Cells of a sweep that share a teacher (plain values, so that a worker process can take them)."""

    config: object
    output_dir: str
    total: int
    members: list  # (1-based index in the sweep, cell)


def run_groups(function, groups, log, jobs, deterministic, precision) -> dict:
    """`function(group, log)` for every group, here or in `jobs` worker processes (which print their own
    progress); returns {cell index: record}."""
    found = {}
    if jobs > 1 and len(groups) > 1:
        from kd_tf import parallel

        for _, records in parallel.run_unordered(
            function, groups, min(jobs, len(groups)), deterministic=deterministic, precision=precision
        ):
            found.update(records)
    else:
        for group in groups:
            found.update(function(group, log))
    return found


def write_csv(path: str, records: Sequence[dict], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: record.get(name) for name in fields})
    atomic_write_text(path, buffer.getvalue())
