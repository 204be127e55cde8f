"""Files that are written whole or not at all (a crash never leaves a half-written result behind), read with
errors that name them, and checked against the checksum they were written with."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator


class DamagedFileError(ValueError):
    """A file that exists but does not read as what it should be (truncated, altered, not JSON)."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path} is damaged: {problem}")
        self.path = path
        self.problem = problem


@contextlib.contextmanager
def naming(path: str, needed_bytes: int | None = None) -> Iterator[None]:
    """Re-raises an `OSError` of the block that names no file (a write through a handle: `ENOSPC` from
    `np.save(handle)`) as the same error naming `path`, so that whoever reports it can say where; with
    `needed_bytes`, the error carries what the write needed (`error.needed_bytes`) for a full disk's report."""
    try:
        yield
    except OSError as error:
        if error.errno is None:
            raise
        if error.filename is None:
            named = type(error)(error.errno, error.strerror, path)
            named.needed_bytes = needed_bytes
            raise named from error
        if needed_bytes and getattr(error, "needed_bytes", None) is None:
            error.needed_bytes = needed_bytes
        raise


@contextlib.contextmanager
def replaced_atomically(path: str, needed_bytes: int | None = None) -> Iterator[str]:
    """Yields a temporary path beside `path` (same name, so writers that check suffixes accept it); when the
    block ends normally it is renamed onto `path`, otherwise removed. `path` is whole or untouched. An
    `OSError` names `path` (and carries `needed_bytes`, see `naming`)."""
    directory = os.path.dirname(os.path.abspath(path))
    with naming(path):
        os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with naming(path, needed_bytes):
            yield temporary
            os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            with contextlib.suppress(OSError):
                os.remove(temporary)


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file in the same directory and an atomic rename."""
    directory = os.path.dirname(os.path.abspath(path))
    with naming(path):
        os.makedirs(directory, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with naming(path):
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would make results private
            os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            with contextlib.suppress(OSError):
                os.remove(temporary)
        raise


def read_json(path: str):
    """The JSON value in `path`; `DamagedFileError` (a `ValueError`) naming the file if it is not JSON."""
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except (ValueError, UnicodeDecodeError) as error:
            raise DamagedFileError(path, f"not valid JSON ({error})") from error


def sha256_of_file(path: str) -> str:
    """SHA-256 of the bytes of `path` (streamed: the file never has to fit in memory)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_sha256(path: str, expected: str | None) -> None:
    """Raises `DamagedFileError` unless `path`'s bytes have the SHA-256 `expected` (`None`: nothing
    recorded, nothing to check)."""
    if expected is None:
        return
    found = sha256_of_file(path)
    if found != expected:
        raise DamagedFileError(
            path,
            f"its bytes have SHA-256 {found[:12]}…, and {expected[:12]}… was recorded when it was written",
        )
