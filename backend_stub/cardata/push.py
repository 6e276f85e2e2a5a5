"""Push: the vehicle events a consenting client hears of at once (seed: "Automatische Benachrichtigung per
Push bei auftretenden Ereignissen im Fahrzeug").

Which keys an event sends is catalogue data (`CardataKey.push`): a door opened or closed (`door`), the
car locked or unlocked (`lock`), the service due (`service_call`), the position when the car was parked
(`parked_position`), and that an emergency call happened (`ecall`). Push messages go out on the same
topic as the stream (`<gcid>/<vin>`, the one topic BMW's clients subscribe to), in the same message
shape, never held back by a key's minimum interval.

An eCall is pushed as the time it began and nothing else: of an `ecall` record only its session start is
read, never the MSD, the position it carried, or anything the PSAP received.
"""

from __future__ import annotations

from backend_stub.cardata.catalogue import CardataCatalogue, CardataKey
from backend_stub.cardata.stream_message import Reading, iso_timestamp, moment_of, readings_from_signals
from backend_stub.event_readings import event_signals
from telematics_wire.records import ReceivedRecord, RecordKind

_ECALL = "ecall"
_ECALL_START = "idle"  # a session's first transition leaves the idle state: the call happened


class PushMap:
    """The push keys of each event type, read once from the catalogue."""

    def __init__(self, catalogue: CardataCatalogue) -> None:
        self._catalogue = catalogue
        self._keys: dict[str, tuple[CardataKey, ...]] = {}
        for entry in catalogue.entries.values():
            for event in entry.push:
                self._keys[event] = (*self._keys.get(event, ()), entry)

    def readings(self, record: ReceivedRecord) -> dict[str, Reading]:
        """What `record` pushes, by key; empty when it is no push event (or carries nothing usable)."""
        event = _event_of(record)
        keys = () if event is None else self._keys.get(event, ())
        if event is None or not keys:
            return {}
        if event == _ECALL:
            started = moment_of(record.body.get("session_started_ms"), record.created)
            ecall: dict[str, Reading] = {}
            for entry in keys:
                value = entry.wire_value(iso_timestamp(started)) if entry.event == _ECALL else None
                if value is not None:
                    ecall[entry.key] = Reading(value=value, timestamp=started)
            return ecall
        names = {entry.key for entry in keys}
        found = readings_from_signals(
            event_signals(record.body), self._catalogue, record.created, streamable_only=False
        )
        return {key: reading for key, reading in found.items() if key in names}


def _event_of(record: ReceivedRecord) -> str | None:
    body = record.body
    if record.kind is RecordKind.ECALL:
        started = body.get("event") == "transition" and body.get("from") == _ECALL_START
        return _ECALL if started else None
    if record.kind is RecordKind.EVENT:
        event = body.get("type")
        return event if isinstance(event, str) else None
    return None
