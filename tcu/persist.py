"""Atomic file replacement: after a power cut the file holds either the old or the new bytes, never a mix.

Write a temporary file in the same directory (all of it: a short write is continued, never renamed
into place), fsync it, rename it over the target, fsync the directory (so the rename itself is
durable). Every OS failure, the clean-up's included, is a StorageError.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from tcu.errors import StorageError


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; `durable=False` skips the fsyncs, for files a power cut
    may lose (status), never for state (provisioning, personal data, journals)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):  # the disk that failed the write may fail this too
            tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (a nearly full disk does): a file cut short must never
    replace the target, so write the rest or fail."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, "no progress writing (disk full?)")
        view = view[written:]


def read_optional(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
