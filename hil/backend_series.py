"""What the backend holds after a run, as timeline data: every signal the vehicle sent, the store's
growth record by record, and the eCall with its millisecond time stamps.

What the backend can show, and so the report: a telemetry snapshot carries each signal's latest
reading with the vehicle's own time stamp of it (`{"v": value, "t": ms}`), so a signal appears at most
once per telemetry interval (less often when it is read less often; a reading repeated in later
snapshots, the same `t`, is one reading) — not at the rate the agent reads it. What happens between
two snapshots is seen only where the vehicle sends an event as it happens: a door or lock change
(`door`/`lock` events, at its `changed_at`, with the value it had until then just before) and the eCall
(its transitions and the PSAP's MSDs, in milliseconds). So a door opened and closed between two
snapshots is in the series, as the `signal_edge` check sees it. Pure functions: the sampler hands in
the records and a `to_scenario` converter (the runner's `scenario_seconds`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from backend_stub.store import StoredRecord
from hil.timeline import EcallMark, Point, Scalar

_LOGGER = logging.getLogger(__name__)

ToScenario = Callable[[datetime], float]
MSD_AT_PSAP = "msd_at_psap"
DOOR_EVENTS = frozenset({"door", "lock"})  # tcu.telemetry.door_events: sent as the change happens


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _scalar(value: Any) -> Scalar | None:
    """A value the report can plot and JSON can carry exactly; lists (DTCs), NaN and the like are not."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else None  # beyond that a JSON reader may round it
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def signal_series(records: Iterable[StoredRecord], to_scenario: ToScenario) -> dict[str, list[Point]]:
    """Every signal's distinct readings, by path, in time order: from telemetry snapshots and from
    door/lock events."""
    readings: dict[str, dict[int, Scalar]] = {}
    skipped: dict[str, str] = {}
    for record in records:
        if record.kind == "event" and record.body.get("type") in DOOR_EVENTS:
            _door_event(record.body, readings, skipped)
            continue
        signals = record.body.get("signals") if record.kind == "telemetry" else None
        if not isinstance(signals, Mapping):
            continue
        for path, item in signals.items():
            stamp = item.get("t") if isinstance(item, Mapping) else None
            value = _scalar(item.get("v")) if isinstance(item, Mapping) else None
            if not isinstance(path, str) or isinstance(stamp, bool) or not isinstance(stamp, int) or value is None:
                skipped.setdefault(str(path), f"{type(item).__name__} {str(item)[:60]}")
                continue
            readings.setdefault(path, {})[stamp] = value
    for path, example in sorted(skipped.items()):
        _LOGGER.info("report: signal %s has readings that cannot be plotted (e.g. %s)", path, example)
    return {
        path: [(round(to_scenario(_moment(ms)), 3), by_ms[ms]) for ms in sorted(by_ms)]
        for path, by_ms in sorted(readings.items())
    }


def _door_event(body: Mapping[str, Any], readings: dict[str, dict[int, Scalar]], skipped: dict[str, str]) -> None:
    """A door/lock change at its `changed_at`; the value it had until then (`previous`) 1 ms before,
    unless a reading of that very millisecond says otherwise."""
    path, changed, value = body.get("path"), body.get("changed_at"), _scalar(body.get("value"))
    if not isinstance(path, str) or isinstance(changed, bool) or not isinstance(changed, int) or value is None:
        skipped.setdefault(str(path), f"{body.get('type')} event {str(dict(body))[:60]}")
        return
    by_ms = readings.setdefault(path, {})
    previous = _scalar(body.get("previous"))
    if previous is not None:
        by_ms.setdefault(changed - 1, previous)
    by_ms[changed] = value


def stored_series(records: Iterable[StoredRecord], to_scenario: ToScenario) -> list[tuple[float, int]]:
    """The backend's record count after each record it received (records received in the same
    millisecond make one step)."""
    steps: list[tuple[float, int]] = []
    for count, received in enumerate(sorted(r.received for r in records), start=1):
        t = round(to_scenario(received), 3)
        if steps and steps[-1][0] == t:
            steps[-1] = (t, count)
        else:
            steps.append((t, count))
    return steps


def ecall_marks(
    records: Iterable[StoredRecord], psap_rows: Sequence[Mapping[str, Any]], to_scenario: ToScenario
) -> list[EcallMark]:
    """The vehicle's eCall reports (transitions by the state entered, notices by their name) and the
    PSAP's received MSDs, in millisecond order; an MSD belongs to the session it arrived in."""
    marks: list[EcallMark] = []
    for record in records:
        body = record.body
        at_ms, session = body.get("at_ms"), body.get("session")
        if record.kind != "ecall" or not isinstance(at_ms, int) or not isinstance(session, int):
            continue
        label = str(body.get("to")) if body.get("event") == "transition" else str(body.get("event"))
        marks.append(_mark(at_ms, to_scenario, session=session, label=label, detail=str(body.get("reason", ""))))
    triggers = sorted((m.at_ms, m.session) for m in marks if m.label == "triggered")
    for row in psap_rows:
        received_ms = row.get("received_ms")
        if not isinstance(received_ms, int):
            continue
        session = next((s for at, s in reversed(triggers) if at <= received_ms), 0)
        number = row.get("message_identifier")
        detail = f"call {row.get('call_id')} MSD #{number}" if number is not None else f"call {row.get('call_id')}"
        if row.get("error"):
            detail += f": {row['error']}"
        marks.append(
            _mark(
                received_ms,
                to_scenario,
                session=session,
                label=MSD_AT_PSAP,
                detail=detail,
                source="psap",
                latitude=_float(row.get("latitude_deg")),
                longitude=_float(row.get("longitude_deg")),
            )
        )
    return sorted(marks, key=lambda m: (m.at_ms, m.source != "vehicle"))


def _mark(
    at_ms: int,
    to_scenario: ToScenario,
    *,
    session: int,
    label: str,
    detail: str,
    source: str = "vehicle",
    latitude: float | None = None,
    longitude: float | None = None,
) -> EcallMark:
    """The mark at `at_ms`, placed in scenario seconds like every other mark."""
    return EcallMark(
        t=round(to_scenario(_moment(at_ms)), 3),
        at_ms=at_ms,
        session=session,
        label=label,
        detail=detail,
        source=source,
        latitude=latitude,
        longitude=longitude,
    )


def trigger_ms(marks: Sequence[EcallMark], session: int) -> int | None:
    """The session's trigger: its `triggered` transition, else its first mark."""
    own = [m for m in marks if m.session == session]
    trigger = next((m for m in own if m.label == "triggered"), own[0] if own else None)
    return None if trigger is None else trigger.at_ms
