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


def run_grouped(config, output_dir: str, key, function, log, jobs: int, deterministic: bool) -> list[dict]:
    """Every cell of `config.cells()`, grouped by `key(cell)` (the cells that share a teacher), each group
    trained by `function(group, log)` here or in `jobs` worker processes (which print their own progress);
    returns the cells' records in the sweep's order."""
    cells = config.cells()
    groups: dict = {}
    for index, cell in enumerate(cells, start=1):
        groups.setdefault(key(cell), Group(config, output_dir, len(cells), [])).members.append((index, cell))
    found = {}
    if jobs > 1 and len(groups) > 1:
        from kd_tf import parallel

        for _, records in parallel.run_unordered(
            function,
            list(groups.values()),
            min(jobs, len(groups)),
            deterministic=deterministic,
            precision=config.precision,
        ):
            found.update(records)
    else:
        for group in groups.values():
            found.update(function(group, log))
    return [found[index] for index in range(1, len(cells) + 1)]


def write_csv(path: str, records: Sequence[dict], fields: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({name: record.get(name) for name in fields})
    atomic_write_text(path, buffer.getvalue())
