"""Files for their owner's eyes only: private keys, a config holding a password, the databases.

Reading a secret: a file that group or others may access is refused, with the commands to run,
because the vehicle's identity (its key) and its broker account (the password) rest on it.

Creating: directories 0700 and files 0600 from the first byte, whatever the umask. SQLite creates a
database 0644 and gives its `-wal` and `-shm` files the database's mode, so a database is created
here, 0600, before SQLite opens it. The agent and the backend share these rules (the backend's
database holds every vehicle's decrypted positions; the agent's queue its sealed records).
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from pathlib import Path

from tcu.errors import TcuError

_LOGGER = logging.getLogger(__name__)

_GROUP_OR_OTHERS = stat.S_IRWXG | stat.S_IRWXO
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def refuse_exposed(path: Path, info: os.stat_result, what: str, error: type[TcuError]) -> None:
    """Raise `error` when group or others may access `path` (`info` is its stat), naming the fix."""
    if not info.st_mode & _GROUP_OR_OTHERS:
        return
    fix = f"chmod 600 {path}"
    if info.st_uid != os.geteuid():
        # chmod alone would lock out this process, which reads it through the group today.
        fix = f"chown {_user_name(os.geteuid())} {path} && {fix}"
    mode = stat.S_IMODE(info.st_mode)
    raise error(f"{what} {path} is accessible by group/others (mode {mode:04o}); run: {fix}")


def private_directory(path: Path) -> None:
    """Create `path` 0700 if it does not exist (missing parents get the usual mode).

    An existing directory is left as it is: it may be a systemd StateDirectory, or the folder the
    operator keeps the database in beside other things.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def private_database(path: Path) -> None:
    """Make sure the SQLite database `path` and its existing sidecar files are 0600, creating it if missing.

    Call before `sqlite3.connect`. A file made before this rule (0644) is narrowed, and the log says so.
    Raises OSError when the file can be neither opened nor created. SQLite's in-memory name is left alone.
    """
    if str(path) == ":memory:":
        return
    private_directory(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        _narrow(path, fd)
    finally:
        os.close(fd)
    for suffix in SQLITE_SIDECARS:
        sidecar = path.with_name(path.name + suffix)
        try:
            fd = os.open(sidecar, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            continue
        try:
            _narrow(sidecar, fd)
        finally:
            os.close(fd)


def _narrow(path: Path, fd: int) -> None:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if not mode & _GROUP_OR_OTHERS:
        return
    try:
        os.fchmod(fd, mode & ~_GROUP_OR_OTHERS)
    except PermissionError as exc:  # not ours: say so, and go on with what the owner allows
        _LOGGER.error("%s is accessible by group/others (mode %04o) and cannot be narrowed: %s", path, mode, exc)
        return
    _LOGGER.warning("%s was accessible by group/others (mode %04o); narrowed to owner only", path, mode)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
