"""A real small filesystem for a data directory, and ballast that fills it up.

A `max_bytes` cap on the queue bounds the database file only; a real full disk also refuses the
write-ahead log, the status file and every other write in the data directory. A tmpfs of a fixed size
is the cheapest real one: mounting it needs root (CAP_SYS_ADMIN), so callers skip when it is refused.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

BALLAST = "ballast.bin"


class SmallDiskUnavailableError(OSError):
    """This machine will not mount a tmpfs for us; the message says why."""


def _tool(name: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/bin/{name}") if Path(p).exists()), None)
    if path is None:
        raise SmallDiskUnavailableError(f"`{name}` is not installed")
    return path


@contextlib.contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` on `path` (created if missing) and unmount it afterwards."""
    if os.geteuid() != 0:
        raise SmallDiskUnavailableError(f"mounting a tmpfs needs root (CAP_SYS_ADMIN); running as uid {os.geteuid()}")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [_tool("mount"), "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        raise SmallDiskUnavailableError(
            f"mount -t tmpfs on {path} refused ({mounted.stderr.strip() or mounted.returncode}): "
            "needs CAP_SYS_ADMIN, e.g. a container started without --privileged"
        )
    _LOGGER.info("tmpfs of %d bytes mounted on %s", size_bytes, path)
    try:
        yield path
    finally:
        umount = _tool("umount")
        done = subprocess.run([umount, str(path)], capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:  # a process we lost track of still holds a file: detach it anyway
            _LOGGER.warning("umount %s: %s; detaching lazily", path, done.stderr.strip())
            subprocess.run([umount, "-l", str(path)], capture_output=True, check=False)  # noqa: S603


def fill(directory: Path) -> int:
    """Write ballast until the filesystem refuses another byte; returns the bytes written."""
    written = 0
    with (directory / BALLAST).open("ab", buffering=0) as ballast:
        for chunk in (64 * 1024, 4096, 512, 1):
            block = bytes(chunk)
            while True:
                try:
                    count = ballast.write(block)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break
                written += count or 0
                if not count:
                    break
    return written


def free(directory: Path) -> None:
    """Remove the ballast: the space is back at once."""
    (directory / BALLAST).unlink(missing_ok=True)


def free_bytes(directory: Path) -> int:
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize
