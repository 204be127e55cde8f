"""The run store: one directory per trained model, finished when its `record.json` exists.

Every table, sweep and figure cell trains through `reuse_or_train`, so a rerun of an interrupted command
trains only what has no record yet, whichever study it belongs to.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable

import tensorflow as tf

from kd_tf import runtime
from kd_tf.io import DamagedFileError, atomic_write_text, read_json

RECORD = "record.json"
# What a finished cell no longer needs: its epoch checkpoints and best-so-far state (`training.train`).
_RESUME_STATE = ("backup", "best.json", "best.npz", "best.pending.npz")


def finished(directory: str) -> dict | None:
    """The record of a finished run in `directory`, or `None`; across workers, only one every worker holds
    (otherwise all train it again together: a collective needs every worker)."""
    path = os.path.join(directory, RECORD)
    record = _readable_record(path)
    if runtime.agreed_minimum(tf.distribute.get_strategy(), int(record is not None)) == 0:
        return None
    return record


def _readable_record(path: str) -> dict | None:
    """The record at `path`; `None` when there is none, or, with one warning naming it, when it is damaged
    (then the cell is unfinished: it trains again and its new record replaces the damaged one)."""
    if not os.path.exists(path):
        return None
    try:
        record = read_json(path)
        if not isinstance(record, dict):
            raise DamagedFileError(path, "it holds no record object")
    except DamagedFileError as error:
        print(f"Warning: {error}; its cell is trained again.", file=sys.stderr, flush=True)
        return None
    return record


def keep(directory: str, record: dict, drop_resume_state: bool = False) -> None:
    """Marks the run in `directory` finished with `record`; with `drop_resume_state`, then removes its
    checkpoints (a finished cell is never resumed; its `history.csv` stays)."""
    os.makedirs(directory, exist_ok=True)
    atomic_write_text(os.path.join(directory, RECORD), json.dumps(record, indent=2) + "\n")
    if drop_resume_state:
        for name in _RESUME_STATE:
            path = os.path.join(directory, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.remove(path)


def reuse_or_train(directory: str, train: Callable[[], dict], drop_resume_state: bool = False) -> dict:
    """The record of the run in `directory`: the finished one, or `train()`'s, kept once it returns."""
    record = finished(directory)
    if record is None:
        record = train()
        keep(directory, record, drop_resume_state)
    return record
