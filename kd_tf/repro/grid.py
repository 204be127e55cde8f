"""The grid engine: every table and sweep trains its cells through `run`, in groups that share a teacher.

A grid is a list of cells (plain values); the cells of one group share a teacher (`key(cell)`) and are
trained by the experiment's `train_group(group, log)`, which returns `{index: record}` and reuses each cell
a finished run left in the run store (`store.reuse_or_train`), so a rerun of an interrupted grid resumes
where it stopped. With `jobs > 1` the groups train in worker processes (`kd_tf.parallel`), each printing
its own progress lines; where a group's cells after its first read their teacher from its files (a
table's students), `split` trains the first cell of every group, then each other cell as a task of its
own as soon as its group's first has finished.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence

from kd_tf.repro.outputs import print_now


@dataclasses.dataclass(frozen=True)
class Group:
    """Cells of a grid that share a teacher (plain values, so that a worker process can take them)."""

    config: object
    output_dir: str
    total: int
    members: list  # (1-based index in the grid, cell)


def run(
    config,
    output_dir: str,
    cells: Sequence,
    key: Callable[[object], Hashable],
    train_group: Callable[[Group, Callable[[str], None]], dict],
    *,
    log: Callable[[str], None] = print_now,
    jobs: int = 1,
    deterministic: bool = False,
    split: bool = False,
) -> list[dict]:
    """Trains (or reuses) every cell of `cells`; returns their records in the grid's order.

    `config` (which names its `precision`) and `output_dir` travel with each group to `train_group`;
    `deterministic` is passed on to worker processes.
    """
    groups: dict = {}
    for index, cell in enumerate(cells, start=1):
        groups.setdefault(key(cell), Group(config, output_dir, len(cells), [])).members.append((index, cell))
    found = {}
    if jobs > 1 and (len(groups) > 1 or split):
        from kd_tf import parallel

        tasks, followers = list(groups.values()), {}
        if split:
            tasks = [dataclasses.replace(group, members=group.members[:1]) for group in groups.values()]
            followers = {
                group.members[0][0]: [
                    dataclasses.replace(group, members=[member]) for member in group.members[1:]
                ]
                for group in groups.values()
            }
        for _, records in parallel.run_unordered(
            train_group,
            tasks,
            min(jobs, len(cells)),
            deterministic=deterministic,
            precision=config.precision,
            then=lambda task, records: followers.get(task.members[0][0], []),
        ):
            found.update(records)
    else:
        for group in groups.values():
            found.update(train_group(group, log))
    return [found[index] for index in range(1, len(cells) + 1)]
