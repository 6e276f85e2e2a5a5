"""What the Markdown report, the plot and its lanes say alike: the verdict, the eCall's words for the
vehicle's states and notices, its rows in milliseconds from each session's trigger, and a Markdown table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hil.backend_series import MSD_AT_PSAP, trigger_ms
from hil.timeline import EcallMark

ECALL_LABELS = {  # the eCall table's words for the vehicle's states and notices
    "triggered": "triggered",
    "dialling": "dialling 112",
    "call_established": "call established",
    "msd_sent": "MSD sent",
    "ll_ack": "MSD received by the PSAP's modem (LL-ACK)",
    "msd_acknowledged": "MSD acknowledged (AL-ACK)",
    "voice": "voice",
    "cleared": "cleared down",
    "callback_window": "callback window",
    MSD_AT_PSAP: "MSD decoded at the PSAP",
}
_RULES = {"l": "---", "r": "---:"}


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def ecall_rows(marks: Sequence[EcallMark]) -> list[tuple[int, int, EcallMark]]:
    """(session, ms after the session's trigger, mark) for every mark, in time order."""
    rows = []
    for mark in marks:
        start = trigger_ms(marks, mark.session)
        rows.append((mark.session, mark.at_ms - (mark.at_ms if start is None else start), mark))
    return rows


def cell(text: str) -> str:
    """Text for one Markdown table cell: no line break, no column separator."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip()


def table(header: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> list[str]:
    """A Markdown table: `align` one letter per column, `l`eft or `r`ight; the cells as they are."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(_RULES[a] for a in align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
