"""The CarData stream message: what a third party receives on `<gcid>/<vin>`.

BMW's streaming clients read one JSON object per MQTT message (the shape their published client and the
integrations built on it parse):

    {"vin": "...", "entityId": "...", "topic": "<gcid>/<vin>", "timestamp": "2025-07-28T05:16:53.000Z",
     "data": {"<cardata key>": {"value": ..., "timestamp": "2025-07-28T05:16:52.000Z"}}}

`timestamp` is when the backend sent the message, each key's `timestamp` when the vehicle measured
the value (ISO 8601, UTC, milliseconds, as BMW's API shows them). `entityId` names this one message
(a UUID), so a client can tell a message it saw twice.

Values come from a vehicle and are foreign input: each goes through its key's `wire_value` (a value of
the key's datatype, or None), and what has no value is left out of the message, never an error that
stops the stream.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backend_stub.cardata.catalogue import CardataCatalogue
from telematics_wire.records import from_millis

WireValue = bool | int | float | str
_USABLE_QUALITY = (None, "good")  # a stale or implausible reading is not streamed as the vehicle's state


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One value of one CarData key, as measured at `timestamp`."""

    value: WireValue
    timestamp: datetime


def stream_topic(gcid: str, vin: str) -> str:
    return f"{gcid}/{vin}"


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and `Z`, the form BMW's CarData uses."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def moment_of(millis: object, fallback: datetime) -> datetime:
    """The datetime of a vehicle's millisecond stamp; `fallback` when it is none or out of range."""
    if type(millis) is not int:
        return fallback
    try:
        return from_millis(millis)
    except (OverflowError, ValueError, OSError):
        return fallback


def readings_from_signals(
    signals: object, catalogue: CardataCatalogue, fallback: datetime, *, streamable_only: bool
) -> dict[str, Reading]:
    """CarData readings of a record's encoded signals (`{path: {"v", "t", "q"}}`), by catalogue key.

    A signal no key maps, a value that cannot go out and a reading of bad quality are left out.
    """
    readings: dict[str, Reading] = {}
    if not isinstance(signals, Mapping):
        return readings
    for path, item in signals.items():
        if not isinstance(path, str) or not isinstance(item, Mapping) or item.get("q") not in _USABLE_QUALITY:
            continue
        for entry in catalogue.for_signal(path):
            value = entry.wire_value(item.get("v"))
            if value is not None and (entry.streamable or not streamable_only):
                readings[entry.key] = Reading(value=value, timestamp=moment_of(item.get("t"), fallback))
    return readings


def encode_message(*, gcid: str, vin: str, readings: Mapping[str, Reading], now: datetime) -> bytes:
    """One stream message carrying `readings`, as UTF-8 JSON."""
    message: dict[str, Any] = {
        "vin": vin,
        "entityId": str(uuid.uuid4()),
        "topic": stream_topic(gcid, vin),
        "timestamp": iso_timestamp(now),
        "data": {
            key: {"value": reading.value, "timestamp": iso_timestamp(reading.timestamp)}
            for key, reading in sorted(readings.items())
        },
    }
    # ASCII escapes: a lone surrogate a vehicle sent still makes valid JSON, never an encoding error.
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
