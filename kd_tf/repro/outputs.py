"""A run's output directory: one run at a time, and earlier results kept until new ones replace them.

`claim(path, replace=...)` locks the directory for the life of the run. A run that replaces finished results
(`--overwrite`) trains in `<path>/.overwrite/` beside them; only when it has finished are the old entries moved
aside, the new ones moved in, and the old ones removed. So a refused, failed, interrupted or killed
overwriting run leaves the earlier results where they were, and running the same command again resumes the
replacement from its own checkpoints.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator

from kd_tf.checkpoint import DirectoryLock

STAGING = ".overwrite"  # a replacement being built
PLAN_FILE = "config.json"  # the resolved configuration a run trains with (`plan.write_resolved`)
REPLACED = ".replaced"  # old entries during the swap, removed right after it
_OWN = (DirectoryLock.NAME, STAGING, REPLACED)
_WORKER_PREFIX = "workertemp_"  # a non-chief worker's files, as Keras names them; never swapped


def worker_directory(index: int) -> str:
    """The directory (under the run's output directory) where worker `index`, not the chief, keeps its files."""
    return f"{_WORKER_PREFIX}{index}"


def _owned(name: str) -> bool:
    return name in _OWN or name.startswith(_WORKER_PREFIX)


def check_path(path: str, flag: str = "--output_dir") -> None:
    """Raises `ValueError` when `path` cannot be a directory (it is a file, or lies under one)."""
    probe = _nearest_existing(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        raise ValueError(f"{flag}={path} cannot be a directory: {probe} is a file. Choose another {flag}.")


def unfinished_replacement(path: str) -> bool:
    """Whether an `--overwrite` run into `path` was started and has not finished."""
    return os.path.isdir(os.path.join(path, STAGING))


@contextlib.contextmanager
def claim(path: str, replace: bool) -> Iterator[str]:
    """Locks `path` and yields the directory the run writes into (`path`, or its staging area to replace).

    The lock is taken before anything is changed: a second run into a directory that a live run holds gets
    `checkpoint.DirectoryInUseError` and touches nothing. On a normal exit with `replace`, the staged results
    replace the old ones; on an exception the old results stay and the staged work is kept for a resume.
    """
    created = not os.path.exists(path)
    try:
        with DirectoryLock(path):
            _finish_interrupted_swap(path)
            if not replace:
                yield path
                return
            staging = os.path.join(path, STAGING)
            os.makedirs(staging, exist_ok=True)
            yield staging
            _swap(path, staging)
    except BaseException:
        if created:
            _remove_if_untouched(path)
        raise


def _remove_if_untouched(path: str) -> None:
    """Removes a directory this run created and wrote nothing to but its plan (a run refused by a later
    check)."""
    try:
        if DirectoryLock.NAME in os.listdir(path) and set(os.listdir(path)) <= {
            DirectoryLock.NAME,
            PLAN_FILE,
        }:
            for name in os.listdir(path):
                os.remove(os.path.join(path, name))
            os.rmdir(path)
    except OSError:
        pass


_MOVED_ASIDE = ".all-moved-aside"  # marks the end of the swap's first half


def _swap(path: str, staging: str) -> None:
    """Old entries into `.replaced/`, then the staged ones in, then `.replaced/` removed.

    Each step is a rename; a kill anywhere is completed by `_finish_interrupted_swap` on the next claim.
    """
    replaced = os.path.join(path, REPLACED)
    os.makedirs(replaced, exist_ok=True)
    _move_aside(path, replaced)
    _move_in(path, staging)
    shutil.rmtree(replaced)


def _move_aside(path: str, replaced: str) -> None:
    for name in os.listdir(path):
        if not _owned(name):
            os.replace(os.path.join(path, name), os.path.join(replaced, name))
    open(os.path.join(replaced, _MOVED_ASIDE), "w").close()


def _move_in(path: str, staging: str) -> None:
    for name in os.listdir(staging):
        target = os.path.join(path, name)
        if not os.path.exists(target):
            os.replace(os.path.join(staging, name), target)
    shutil.rmtree(staging)


def _finish_interrupted_swap(path: str) -> None:
    """Completes a swap that a kill stopped half-way (the new results were all finished by then)."""
    replaced = os.path.join(path, REPLACED)
    if not os.path.isdir(replaced):
        return
    staging = os.path.join(path, STAGING)
    if os.path.isdir(staging):
        if not os.path.exists(os.path.join(replaced, _MOVED_ASIDE)):
            _move_aside(path, replaced)  # the kill came while old entries were moved aside
        _move_in(path, staging)
    shutil.rmtree(replaced)


def _nearest_existing(path: str) -> str:
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    return probe


def print_now(line: str) -> None:
    """A progress line, out at once (worker processes and pipes buffer otherwise)."""
    print(line, flush=True)


def megabytes(count: float) -> str:
    return f"{count / 2**20:,.1f} MB"


def free_bytes(path: str) -> int | None:
    """Bytes free to this user on the filesystem that holds `path` (or would hold it), or `None`."""
    try:
        return shutil.disk_usage(_nearest_existing(path)).free
    except OSError:
        return None


_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.EIO: "input/output error",
}


def io_error_message(error: OSError, output_dir: str, run_needs: int | None = None) -> str:
    """One paragraph for a failed read or write: the path, the cause, what to do; for a full disk, what is
    free there, roughly what the write needed (`error.needed_bytes`, where the writer knew it) and what the
    whole run writes (`run_needs`, bytes, where known)."""
    path = error.filename or output_dir
    cause = _CAUSES.get(error.errno, error.strerror or type(error).__name__)
    code = errno.errorcode.get(error.errno, "")
    text = f"{path}: {cause}" + (f" ({code})." if code else ".")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path)
        needed = getattr(error, "needed_bytes", None)
        if free is not None:
            text += f" {megabytes(free)} free on that filesystem"
            text += f"; this write needed about {megabytes(needed)} more" if needed else ""
            text += f", the whole run about {megabytes(run_needs)} in all." if run_needs else "."
        text += (
            " Free some space there (or copy --output_dir to a disk with room and point --output_dir to it)"
        )
    elif error.errno in (errno.EACCES, errno.EPERM):
        text += " Give this user write access to it (or choose another --output_dir)"
    elif error.errno == errno.EROFS:
        text += " The filesystem is mounted read-only: remount it writable or choose another --output_dir"
    elif error.errno == errno.ENOENT:
        text += (
            " It is missing: an input was moved, or a directory the run writes into vanished while it ran. "
            "Restore it (or choose another --output_dir)"
        )
    else:
        text += " Fix the cause"
    return (
        text + ", then run the same command again: every file is written whole or not at all, and the run "
        "resumes from its last checkpoint."
    )
