"""The grid engine: every table and sweep trains its cells through `run`, in groups that share a teacher.

A grid is a list of cells (plain values) and a `Cells` object that says what is the grid's own: which
cells share a teacher (`key`), where each is kept, how the group's shared part (its teacher) is prepared,
how one cell trains and how its progress line reads. The engine does the rest: it reuses each cell a
finished run left in the run store (`store.reuse_or_train`), so a rerun of an interrupted grid resumes where
it stopped, prints a progress line per cell, and with `jobs > 1` trains the groups in worker processes
(`kd_tf.parallel`), each printing its own lines; where a group's cells after its first read their teacher
from its files (a table's students), `split` trains the first cell of every group, then each other cell as
a task of its own as soon as its group's first has finished.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Sequence

from kd_tf.repro import store
from kd_tf.repro.outputs import print_now


@dataclasses.dataclass(frozen=True)
class Group:
    """Cells of a grid that share a teacher (plain values, so that a worker process can take them)."""

    config: object
    output_dir: str
    total: int
    members: list  # (1-based index in the grid, cell)


class Cells:
    """What a grid's module says of its cells (an instance goes to worker processes: plain values only)."""

    index_width = 3  # of the progress lines' `[index/total]`
    split = False

    def key(self, cell) -> Hashable:
        """Cells with one key share a teacher (one group)."""
        raise NotImplementedError

    def directory(self, output_dir: str, cell) -> str:
        """Where the cell's run is kept (its `record.json` marks it finished)."""
        raise NotImplementedError

    def prepare(self, group: Group, cell, log: Callable[[str], None]):
        """What the group's cells share (their teacher), made when its first unfinished cell needs it."""
        del group, cell, log

    def train(self, group: Group, shared, cell, directory: str, log: Callable[[str], None]) -> dict:
        """Trains one cell in `directory`; returns its record."""
        raise NotImplementedError

    def describe(self, cell, record: dict) -> str:
        """The cell's progress line after its `[index/total]`."""
        raise NotImplementedError

    def train_group(self, group: Group, log: Callable[[str], None] = print_now) -> dict:
        """The group's cells in order, each reused where a finished run left its record (its checkpoints
        dropped once it has finished), else trained; returns `{index: record}`."""
        records, shared = {}, []
        for index, cell in group.members:
            directory = self.directory(group.output_dir, cell)

            def train(cell=cell, directory=directory) -> dict:
                if not shared:
                    shared.append(self.prepare(group, cell, log))
                return self.train(group, shared[0], cell, directory, log)

            records[index] = store.reuse_or_train(directory, train, drop_resume_state=True)
            log(f"[{index:>{self.index_width}}/{group.total}] {self.describe(cell, records[index])}")
        return records


def run(
    config,
    output_dir: str,
    cells: Sequence,
    grid: Cells,
    *,
    log: Callable[[str], None] = print_now,
    jobs: int = 1,
    deterministic: bool = False,
) -> list[dict]:
    """Trains (or reuses) every cell of `cells`; returns their records in the grid's order.

    `config` (which names its `precision`) and `output_dir` travel with each group to `grid.train_group`;
    `deterministic` is passed on to worker processes.
    """
    split, train_group = grid.split, grid.train_group
    groups: dict = {}
    for index, cell in enumerate(cells, start=1):
        groups.setdefault(grid.key(cell), Group(config, output_dir, len(cells), [])).members.append(
            (index, cell)
        )
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
