"""CPU time and resident memory of processes, read from Linux's /proc (no dependency for two numbers).

A fleet run measures its own processes, the backend's and the broker's over one window.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may hold spaces: the fields after it are counted from ")".
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` so far; 0.0 for a process that has gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15 of stat(5))


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of `pid` (this process by default), in MiB."""
    try:
        pages = int((_PROC / str(pid or os.getpid()) / "statm").read_text().split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return pages * _PAGE / 2**20


def children(pid: int, name: str | None = None) -> list[int]:
    """The direct children of `pid` (those named `name`, if given)."""
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or int(fields[1]) != pid:  # field 4 of stat(5): the parent's pid
            continue
        if name is None or (entry / "comm").read_text().strip() == name:
            found.append(int(entry.name))
    return found
