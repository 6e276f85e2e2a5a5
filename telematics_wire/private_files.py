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

_LOGGER = logging.getLogger(__name__)

_GROUP_OR_OTHERS = stat.S_IRWXG | stat.S_IRWXO
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def refuse_exposed(path: Path, info: os.stat_result, what: str, error: type[Exception]) -> None:
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
    Raises OSError when the file can be neither created nor inspected. SQLite's in-memory name is left alone.

    An existing file is never opened here, only stat'ed and chmod'ed by name: SQLite's locks are POSIX
    advisory locks, which a process loses on *every* descriptor of the file the moment it closes any one
    of them (sqlite.org/howtocorrupt.html §2.2). The backend opens several stores on one database, and a
    CLI command beside the running backend did too: an open-and-close here dropped the locks of the
    connections already open, and the next process deleted the live `-wal` as if it were the last user.
    """
    if str(path) == ":memory:":
        return
    private_directory(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)  # a file this call created: no connection can hold a lock on it yet
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDECARS)):
        try:
            mode = stat.S_IMODE(candidate.stat().st_mode)
        except FileNotFoundError:
            continue
        _narrow(candidate, mode)


def _narrow(path: Path, mode: int) -> None:
    if not mode & _GROUP_OR_OTHERS:
        return
    try:
        path.chmod(mode & ~_GROUP_OR_OTHERS)
    except PermissionError as exc:  # not ours: say so, and go on with what the owner allows
        _LOGGER.error("%s is accessible by group/others (mode %04o) and cannot be narrowed: %s", path, mode, exc)
        return
    _LOGGER.warning("%s was accessible by group/others (mode %04o); narrowed to owner only", path, mode)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
