"""Atomic file replacement: after a power cut the file holds either the old or the new bytes, never a mix.

Write a temporary file in the same directory (all of it: a short write is continued, never renamed
into place), fsync it, rename it over the target, fsync the directory (so the rename itself is
durable). Every OS failure, the clean-up's included, is a StorageError.

`write_atomic` blocks for two fsyncs plus the directory's (unbounded on a slow SD card); the agent's
owners of a state file use `AtomicFile`, which does the same on a worker thread of its own, so the
event loop (the eCall's included) runs on while the disk works.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from concurrent.futures import Future, ThreadPoolExecutor
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


class AtomicFile:
    """One state file and its writer: `await file.write(data)` replaces the file as `write_atomic` does,
    on this file's own worker thread, and returns once the bytes are durable; a failure raises the same
    StorageError the blocking call raises.

    Writes run one at a time in the order they were handed over (one worker per file: two never share
    the temporary file, and the last one handed over is what the file holds). A write handed over is
    carried out even if its caller stops waiting (is cancelled): what is on disk then is the old or the
    new bytes, as after a power cut, and never a write overtaken by a later one.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self._durable = durable
        # An idle worker ends when the file object is collected; at interpreter exit it finishes its writes.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"atomic-file {path.name}")

    def submit(self, data: bytes) -> Future[None]:
        """Hand `data` over without waiting, for callers that cannot await (signal subscribers, which may
        run without an event loop); the future tells the outcome, and its holder must look at it (a failure
        is theirs to log; a done-callback runs on the worker thread)."""
        return self._worker.submit(write_atomic, self.path, data, durable=self._durable)

    async def write(self, data: bytes) -> None:
        # Shielded: a cancelled caller does not withdraw a write the worker may have begun (see the class).
        await asyncio.shield(asyncio.wrap_future(self.submit(data)))

    async def settled(self) -> None:
        """Return once every write handed over before this call has finished, whatever its outcome."""
        await asyncio.wrap_future(self._worker.submit(_nothing))


def _nothing() -> None:
    """A job that marks a place in a worker's order (AtomicFile.settled)."""


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
