"""One sentence for an error the file system or a database raised under a command line, never a traceback.

The `tcu`, `backend-stub` and `tcu-hil` commands catch their own error roots first; what is left on
the paths a person controls (a directory that is a file, a missing folder, a read-only disk, a
database that cannot be opened) arrives here as `OSError` or `sqlite3.Error`.
"""

from __future__ import annotations

import sqlite3


def os_error_sentence(exc: OSError) -> str:
    """E.g. "cannot use /etc/systemd/system/tcu-agent.service: no such file or directory"."""
    reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
    if exc.filename is None:
        return f"operating system error: {reason}"
    paths = str(exc.filename) if exc.filename2 is None else f"{exc.filename} or {exc.filename2}"
    return f"cannot use {paths}: {reason}"


def database_error_sentence(exc: sqlite3.Error, database: object) -> str:
    """E.g. "the database /srv/backend.sqlite3 cannot be used: unable to open database file"."""
    return f"the database {database} cannot be used: {exc}"
