"""The run store: one directory per trained model, finished when its `record.json` exists.

Every table, sweep and figure cell trains through `reuse_or_train`, so a rerun of an interrupted command
trains only what has no record yet, whichever study it belongs to.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable

import tensorflow as tf

from kd_tf import runtime
from kd_tf.io import atomic_write_text, read_json

RECORD = "record.json"
# What a finished cell no longer needs: its epoch checkpoints and best-so-far state (`training.train`).
_RESUME_STATE = ("backup", "best.json", "best.npz")


def finished(directory: str) -> dict | None:
    """The record of a finished run in `directory`, or `None`; across workers, only one every worker holds
    (otherwise all train it again together: a collective needs every worker)."""
    path = os.path.join(directory, RECORD)
    held = os.path.exists(path)
    if runtime.agreed_minimum(tf.distribute.get_strategy(), int(held)) == 0:
        return None
    return read_json(path)


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
