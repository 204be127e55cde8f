"""Epoch checkpoints that a kill at any moment cannot damage, and the lock that keeps one run per directory.

Keras' `BackupAndRestore` rewrites `latest.weights.h5` in place and its epoch counter in a second file: a
kill inside either write leaves a run that cannot resume, or one that resumes weights of one epoch with the
counter of another. `EpochCheckpoint` writes each epoch's weights to a new file under a temporary name, renames
it into place, and only then moves the pointer (`latest.json`, itself replaced atomically) to it. The file the
pointer names is therefore always complete; the previous epoch's file is kept until the next one is in place,
so a checkpoint damaged by something else (a full disk, a copy) falls back one epoch instead of crashing.

A checkpoint is one `.npz` of every weight of the model and every optimizer variable, in their fixed order:
a few milliseconds for the small models of a table, where Keras' `save_weights` walks the model's object
graph into HDF5 at about 50 ms an epoch. Checkpoints written as `.weights.h5` still restore.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import re
import zipfile

import keras
import numpy as np
from absl import logging

from kd_tf.io import atomic_write_text, read_json, replaced_atomically

POINTER = "latest.json"
_WEIGHTS = re.compile(r"^epoch-(\d+)\.weights\.(npz|h5)$")


def _weights_name(epoch: int) -> str:
    return f"epoch-{epoch:05d}.weights.npz"


def _state(model: keras.Model) -> list:
    """What a checkpoint holds: the model's weights, then its optimizer's variables (step count, moments).

    For a `Distiller`, its student's weights: the frozen teacher is no state of the run (and a run resumed
    with its teacher's outputs cached, without a teacher, holds the same state).
    """
    optimizer = getattr(model, "optimizer", None)
    weights = getattr(model, "student", model).weights
    return [*weights, *(optimizer.variables if optimizer is not None else ())]


def _opens(path: str) -> None:
    """Raises `OSError`, `ValueError`, `EOFError` or `zipfile.BadZipFile` unless the checkpoint file at `path`
    reads whole."""
    if path.endswith(".h5"):
        import h5py

        with h5py.File(path, "r"):
            return
    with np.load(path) as stored:
        for name in stored.files:
            stored[name]  # noqa: B018 (reads and checks every array)


def _pointer(directory: str) -> tuple[int, str] | None:
    """(epoch, weights file) that `latest.json` names, or `None` without a readable pointer."""
    try:
        named = read_json(os.path.join(directory, POINTER))
        return int(named["epoch"]), str(named["weights"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def finished_epochs(directory: str) -> int:
    """Epochs the newest checkpoint in `directory` claims to hold (0 for none); opens no weights file."""
    pointer = _pointer(directory)
    return pointer[0] if pointer else 0


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the model (with its optimizer state) after every epoch; restores the last good epoch on resume.

    Use `restorable_epoch()` before `fit` to learn how many epochs are done (pass it as `initial_epoch`); the
    callback loads that epoch's weights when training begins.

    Args:
        directory: where the checkpoints live; created on the first save.
    """

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory
        self._restore = None  # (epoch, file name) chosen by `restorable_epoch`

    def _candidates(self) -> list[tuple[int, str]]:
        """(epoch, file name) of every complete weights file, newest first, the pointer's first of all."""
        found = []
        for path in glob.glob(os.path.join(self.directory, "epoch-*.weights.*")):
            match = _WEIGHTS.match(os.path.basename(path))
            if match:
                found.append((int(match.group(1)), os.path.basename(path)))
        found.sort(reverse=True)
        first = _pointer(self.directory)
        if first is None:
            return found  # no pointer yet (or an unreadable one): the files alone
        return [first, *(entry for entry in found if entry != first and entry[0] < first[0])]

    def restorable_epoch(self, at_most: int | None = None) -> int:
        """Epochs finished by the newest checkpoint that opens; 0 when there is none (a fresh start).

        A damaged file is reported and skipped: the run falls back to the previous epoch's file, or starts
        over when no file opens. `at_most` skips newer checkpoints (workers resuming where all of them can).
        """
        self._restore = None
        for epoch, name in self._candidates():
            if at_most is not None and epoch > at_most:
                continue
            path = os.path.join(self.directory, name)
            try:
                _opens(path)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                logging.warning("Checkpoint %s is damaged (%s); trying an earlier one.", path, error)
                print(f"Warning: checkpoint {path} is damaged; falling back to an earlier one.", flush=True)
                continue
            self._restore = (epoch, name)
            return epoch
        if at_most is None and os.path.isdir(self.directory) and os.listdir(self.directory):
            print(f"Warning: no usable checkpoint in {self.directory}; training starts over.", flush=True)
        return 0

    def on_train_begin(self, logs=None):
        if self._restore is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        path = os.path.join(self.directory, self._restore[1])
        if path.endswith(".h5"):
            self.model.load_weights(path)
            return
        variables = _state(self.model)
        with np.load(path) as stored:
            if len(stored.files) != len(variables):
                raise ValueError(
                    f"Checkpoint {path} holds {len(stored.files)} variables; this model and optimizer have "
                    f"{len(variables)}. It belongs to another run: rerun with --overwrite."
                )
            for index, variable in enumerate(variables):
                value = stored[f"v{index}"]
                if tuple(value.shape) != tuple(variable.shape):
                    raise ValueError(
                        f"Checkpoint {path}: variable {index} ({variable.path}) has shape {value.shape} there "
                        f"and {tuple(variable.shape)} here. It belongs to another run: rerun with --overwrite."
                    )
                variable.assign(value)

    def on_epoch_end(self, epoch, logs=None):
        finished = epoch + 1
        name = _weights_name(finished)
        values = {f"v{index}": keras.ops.convert_to_numpy(v) for index, v in enumerate(_state(self.model))}
        with replaced_atomically(os.path.join(self.directory, name)) as temporary:
            with open(temporary, "wb") as handle:  # a handle: np.savez would append ".npz" to a name
                np.savez(handle, **values)
        atomic_write_text(
            os.path.join(self.directory, POINTER), json.dumps({"epoch": finished, "weights": name}) + "\n"
        )
        # Keep this epoch's file and the one before it; leftovers of killed writes go too.
        for old_epoch, old_name in self._candidates()[2:]:
            if old_epoch < finished:
                _remove_quietly(os.path.join(self.directory, old_name))
        for leftover in glob.glob(os.path.join(self.directory, ".tmp-*")):
            _remove_quietly(leftover)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class DirectoryInUseError(RuntimeError):
    """Another live process holds the output directory."""


class DirectoryLock:
    """An exclusive lock on a run's output directory, held for the life of the run.

    It is an `flock` on `<directory>/.lock`: the kernel releases it when the holding process exits, however
    it exits, so a lock left by a killed run is taken over by the next one without any clean-up.
    """

    NAME = ".lock"

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, self.NAME)
        self._handle = None

    def acquire(self) -> DirectoryLock:
        os.makedirs(self.directory, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                handle.close()
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DirectoryInUseError(
                f"--output_dir={self.directory} is in use by a run still going ({holder}). Wait for it to "
                "finish, stop it, or choose another --output_dir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
