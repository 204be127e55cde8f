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

import dataclasses
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

from kd_tf import runtime
from kd_tf.io import (
    DamagedFileError,
    atomic_write_text,
    read_json,
    replaced_atomically,
    sha256_of_file,
    verify_sha256,
)

POINTER = "latest.json"
_WEIGHTS = re.compile(r"^epoch-(\d+)(?:-step-(\d+))?\.weights\.(npz|h5)$")
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def _weights_name(epoch: int, step: int = 0) -> str:
    """`epoch-E.weights.npz` after E whole epochs; `epoch-E-step-S.weights.npz` S steps into the next one."""
    if step:
        return f"epoch-{epoch:05d}-step-{step:07d}.weights.npz"
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


@dataclasses.dataclass(frozen=True)
class _Pointer:
    epoch: int
    step: int
    name: str
    sha256: str | None


def _pointer(directory: str) -> _Pointer | None:
    """What `latest.json` names, or `None` without a readable pointer."""
    try:
        named = read_json(os.path.join(directory, POINTER))
        return _Pointer(
            int(named["epoch"]), int(named.get("step", 0)), str(named["weights"]), named.get("sha256")
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def finished_epochs(directory: str) -> int:
    """Epochs the newest checkpoint in `directory` claims to hold whole (0 for none); opens no weights file."""
    pointer = _pointer(directory)
    return pointer.epoch if pointer else 0


def position_code(epoch: int, step: int) -> int:
    """(epoch, step) as one integer that orders as the pair does (for the workers' agreement on a minimum)."""
    return epoch * 2**32 + step


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the model (with its optimizer state) after every epoch, every `every_steps` steps, and at the
    step where a SIGTERM stops training; restores the last good checkpoint on resume.

    Use `restorable_position()` before `fit` to learn where training stands: `(epochs, steps)`, whole epochs
    done and steps done into the next. Train the rest of that epoch (its remaining batches) with
    `resume_inside(epochs, steps)` called first; the callback loads the checkpoint when training begins. A
    checkpoint written with a SHA-256 in the pointer is verified before it is trusted.

    Args:
        directory: where the checkpoints live; created on the first save.
        every_steps: also save every this many steps of an epoch (0: at the epoch ends only).
    """

    def __init__(self, directory: str, every_steps: int = 0):
        super().__init__()
        self.directory = directory
        self.every_steps = every_steps
        self._restore = None  # (epoch, step, file name) chosen by `restorable_position`
        self._inside = None  # (epoch index, steps already done in it) of a run resumed mid-epoch
        self._epoch, self._offset, self._saved_at = 0, 0, None

    def _candidates(self) -> list[tuple[int, int, str]]:
        """(epoch, step, file name) of every weights file, newest first, the pointer's first of all."""
        found = []
        for path in glob.glob(os.path.join(self.directory, "epoch-*.weights.*")):
            match = _WEIGHTS.match(os.path.basename(path))
            if match:
                found.append((int(match.group(1)), int(match.group(2) or 0), os.path.basename(path)))
        found.sort(reverse=True)
        first = _pointer(self.directory)
        if first is None:
            return found  # no pointer yet (or an unreadable one): the files alone
        head = (first.epoch, first.step, first.name)
        return [head, *(entry for entry in found if entry != head and entry[:2] < head[:2])]

    def restorable_position(self, at_most: tuple[int, int] | None = None) -> tuple[int, int]:
        """(whole epochs, steps into the next) of the newest checkpoint that opens (and, where the pointer
        recorded its checksum, matches it); (0, 0) when there is none (a fresh start).

        A damaged file is reported by name and skipped: the run falls back to the previous checkpoint, or
        starts over when none opens. `at_most` skips newer checkpoints (workers resuming where all can).
        """
        self._restore = None
        pointer = _pointer(self.directory)
        for epoch, step, name in self._candidates():
            if at_most is not None and (epoch, step) > tuple(at_most):
                continue
            path = os.path.join(self.directory, name)
            try:
                if pointer is not None and name == pointer.name:
                    verify_sha256(path, pointer.sha256)
                _opens(path)
            except _DAMAGED as error:
                logging.warning("Checkpoint %s is damaged (%s); trying an earlier one.", path, error)
                print(
                    f"Warning: checkpoint {path} is damaged ({error}); falling back to an earlier one.",
                    flush=True,
                )
                continue
            self._restore = (epoch, step, name)
            return epoch, step
        if at_most is None and os.path.isdir(self.directory) and os.listdir(self.directory):
            print(f"Warning: no usable checkpoint in {self.directory}; training starts over.", flush=True)
        return 0, 0

    def restorable_epoch(self, at_most: int | None = None) -> int:
        """Whole epochs of the newest checkpoint that opens (see `restorable_position`)."""
        return self.restorable_position(None if at_most is None else (at_most, 2**31))[0]

    def clear(self) -> None:
        """Removes every checkpoint (a run that must start over keeps none it could fall back to)."""
        self._restore = None
        for _, _, name in self._candidates():
            _remove_quietly(os.path.join(self.directory, name))
        _remove_quietly(os.path.join(self.directory, POINTER))

    def resume_inside(self, epoch: int, step: int) -> None:
        """The next `fit` starts `step` steps into epoch index `epoch` (its `steps_per_epoch` the rest)."""
        self._inside = (epoch, step) if step else None

    def on_train_begin(self, logs=None):
        if self._restore is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        path = os.path.join(self.directory, self._restore[2])
        self._restore = None  # a second `fit` (the epochs after a resumed one) continues from memory
        if path.endswith(".h5"):
            self.model.load_weights(path)
            return
        variables = _state(self.model)
        try:
            with np.load(path) as stored:
                names = [name for name in stored.files if name.startswith("v")]
                if len(names) != len(variables):
                    raise ValueError(
                        f"Checkpoint {path} holds {len(names)} variables; this model and optimizer have "
                        f"{len(variables)}. It belongs to another run: rerun with --overwrite."
                    )
                for index, variable in enumerate(variables):
                    value = stored[f"v{index}"]
                    if tuple(value.shape) != tuple(variable.shape):
                        raise ValueError(
                            f"Checkpoint {path}: variable {index} ({variable.path}) has shape {value.shape} "
                            f"there and {tuple(variable.shape)} here. It belongs to another run: rerun with "
                            "--overwrite."
                        )
                    variable.assign(value)
                self._metrics = [stored[name] for name in sorted(stored.files) if name.startswith("m")]
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise DamagedFileError(path, f"it does not read ({error})") from error

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._offset, self._saved_at = epoch, 0, None
        if self._inside is not None and self._inside[0] == epoch:
            self._offset = self._inside[1]
            self._inside = None
            # The epoch's running means go on from the steps before the stop (Keras reset them just now).
            metrics = getattr(self, "_metrics", None)
            variables = self.model.metrics_variables
            if metrics and len(metrics) == len(variables):
                for variable, value in zip(variables, metrics, strict=True):
                    variable.assign(np.reshape(value, variable.shape))
        self._metrics = None

    def on_train_batch_end(self, batch, logs=None):
        done = self._offset + batch + 1  # steps of this epoch done (`batch`: the last step of the call)
        at_epoch_end = batch + 1 >= self.params.get("steps", 0)
        if (
            self.every_steps
            and not at_epoch_end
            and done // self.every_steps > (done - self._steps_per_call()) // self.every_steps
        ):
            self.save(self._epoch, done)
        if not at_epoch_end and runtime.terminated_everywhere():
            if self._saved_at != (self._epoch, done):
                self.save(self._epoch, done)
            raise runtime.Terminated(runtime.stopped_message(self._epoch + 1, done))

    def _steps_per_call(self) -> int:
        return max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, 0)
        if runtime.terminated_everywhere():
            raise runtime.Terminated(
                runtime.stopped_message(epoch + 1, self._offset + self.params.get("steps", 0))
            )

    def save(self, epoch: int, step: int = 0) -> None:
        """Writes the state after `epoch` whole epochs and `step` steps into the next, then points to it."""
        name = _weights_name(epoch, step)
        values = {f"v{index}": keras.ops.convert_to_numpy(v) for index, v in enumerate(_state(self.model))}
        if step:
            for index, variable in enumerate(self.model.metrics_variables):
                values[f"m{index:04d}"] = keras.ops.convert_to_numpy(variable)
        path = os.path.join(self.directory, name)
        with replaced_atomically(path, sum(value.nbytes for value in values.values())) as temporary:
            with open(temporary, "wb") as handle:  # a handle: np.savez would append ".npz" to a name
                np.savez(handle, **values)
            digest = sha256_of_file(temporary)
        pointer = {"epoch": epoch, "step": step, "weights": name, "sha256": digest}
        atomic_write_text(os.path.join(self.directory, POINTER), json.dumps(pointer) + "\n")
        self._saved_at = (epoch, step)
        # Keep this checkpoint and the one before it; leftovers of killed writes go too.
        for old_epoch, old_step, old_name in self._candidates()[2:]:
            if (old_epoch, old_step) < (epoch, step):
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
