"""The readings a record transmits, as one `signals` map (`{path: {"v": value, "t": ms}}`).

A telemetry snapshot carries them under `signals`. A vehicle event carries the readings it is about in
fields of its own (tcu.telemetry): a `door` or `lock` event one signal's new value (`path`, `value`,
`changed_at`), a `parked_position` event the position (`position`), a `service_call` the readings that
made the service due (`readings`). Each is a value the vehicle transmitted, so the store takes it as a
last value like a snapshot's (CarData serves "the last transmitted values", seed `cardata.de.txt`), in
the vehicle's own order: a door event newer than the last snapshot holds the door's value until a newer
record says otherwise. What is not a reading is left to `storable.usable_signals` to name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["event_signals", "record_signals"]

# event type → the body field holding its readings as a `signals` map
_READINGS_FIELD = {"parked_position": "position", "service_call": "readings"}
_ONE_SIGNAL_EVENTS = ("door", "lock")


def event_signals(body: Mapping[str, Any]) -> object:
    """The readings an event body (`type` …) transmits as a `signals` map; None when it carries none.
    Not checked here: what comes back is foreign input, for `usable_signals` (store) or a key's
    conversion (CarData) to judge."""
    event = body.get("type")
    if event in _ONE_SIGNAL_EVENTS:
        path = body.get("path")
        return {path: {"v": body.get("value"), "t": body.get("changed_at")}} if isinstance(path, str) else None
    field = _READINGS_FIELD.get(event) if isinstance(event, str) else None
    return None if field is None else body.get(field)


def record_signals(body: Mapping[str, Any]) -> object:
    """The readings of a telemetry or event record's body: its `signals`, else its event's."""
    signals = body.get("signals")
    return signals if signals is not None else event_signals(body)
