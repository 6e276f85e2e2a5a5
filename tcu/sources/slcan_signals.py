"""CAN frames → VSS signals, through a CAN database (cantools) and a typed mapping (`tcu.vehicle.can_mapping`).

Decoding sits on the hot path of a busy bus (thousands of frames per second), so everything that
can be worked out once is: a per-frame-id plan holds the cantools message's bound `decode`, the
expected length and, per mapped signal, a `CanTarget` whose conversion (scale, offset, unit, value
table, rounding, plausible range) is folded into a multiply-add or one dict lookup. cantools runs
with `decode_choices=False, scaling=False`: raw integers, no `NamedSignalValue` objects. Unmapped
messages and signals cost one dict lookup, and a payload equal to the previous one of its frame id is
not decoded again.

The database is the packaged fictional car unless `[sources.can] dbc` names files; the mapping is
the packaged `tcu/vehicle/mapping/can.toml` unless `[sources.can] mapping` names one. eCall trigger
rules (`[[ecall.trigger]]`) become targets too, replacing the mapping's entry for their path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tcu.ecall.triggers import TriggerRule
from tcu.errors import ConfigError, ProtocolError
from tcu.sources.slcan import CanFrame
from tcu.vehicle.can_database import PACKAGED_DBC, load_can_database
from tcu.vehicle.can_dbc_lookup import split_key
from tcu.vehicle.can_mapping import resolve_entry
from tcu.vehicle.can_target import CanTarget, ResolvedEntry, convert
from tcu.vehicle.can_trigger import resolve_trigger
from tcu.vehicle.mapping import load_mapping, packaged_mapping_name
from tcu.vehicle.state import Quality, Signal
from telematics_wire.signal_values import SignalValue

_LOGGER = logging.getLogger(__name__)

SOURCE = "can"
MAPPING_TABLES = ("vss", "extension")  # standard VSS paths, then our own


@dataclass(frozen=True, slots=True)
class _Plan:
    message: str
    length: int
    decode: Callable[..., Mapping[str, Any]]
    targets: tuple[CanTarget, ...]


def _plan_key(can_id: int, extended: bool) -> int:
    # 11-bit 0x123 and 29-bit 0x123 are different frames; bit 31 keeps them apart in one int key.
    return can_id | (1 << 31) if extended else can_id


class CanSignalDecoder:
    """Decode frames of one CAN database into VSS signals, through resolved mapping entries."""

    def __init__(
        self,
        database: Any,
        mapping: Mapping[str, str | Mapping[str, Any]] | Sequence[ResolvedEntry],
        *,
        source: str = SOURCE,
    ) -> None:
        self.source = source
        self.database = database
        if isinstance(mapping, Mapping):
            mapping = [
                resolve_entry(database, key, spec, where=f"CAN mapping {key!r}") for key, spec in mapping.items()
            ]
        self.entries: tuple[ResolvedEntry, ...] = tuple(mapping)
        grouped: dict[str, list[CanTarget]] = {}
        for entry in self.entries:
            grouped.setdefault(entry.message, []).append(entry.target)
        self._plans: dict[int, _Plan] = {}
        # The last payload per frame id and what it decoded to: cyclic frames mostly repeat
        # themselves (a door status sent ten times a second), and then decoding is a bytes compare.
        self._last: dict[int, tuple[bytes, tuple[tuple[str, SignalValue, Quality], ...]]] = {}
        self._stamp: tuple[datetime, float | None] | None = None
        self._signals: dict[tuple[str, SignalValue, Quality], Signal] = {}
        for message_name, targets in grouped.items():
            message = database.get_message_by_name(message_name)
            self._plans[_plan_key(message.frame_id, message.is_extended_frame)] = _Plan(
                message=message.name, length=message.length, decode=message.decode, targets=tuple(targets)
            )

    @property
    def paths(self) -> frozenset[str]:
        """The VSS paths this decoder publishes."""
        return frozenset(entry.target.path for entry in self.entries)

    @classmethod
    def from_files(
        cls,
        mapping_path: Path | None = None,
        *,
        dbc_path: Path | None = None,
        dbc_paths: Sequence[Path] = (),
        triggers: Sequence[TriggerRule] = (),
    ) -> CanSignalDecoder:
        """The mapping file (the packaged `can.toml` when None) over the CAN database `dbc_paths` (or the
        mapping's own `dbc`, else the packaged DBC), plus eCall trigger rules. ConfigError says what is wrong."""
        table = load_mapping("can", mapping_path)
        where = str(mapping_path) if mapping_path is not None else packaged_mapping_name("can")
        files = list(dbc_paths) or ([dbc_path] if dbc_path is not None else _mapping_dbc(table, mapping_path, where))
        database = load_can_database(files)
        source = table.get("source", SOURCE)
        if not isinstance(source, str) or not source:
            raise ConfigError(f"CAN mapping {where}: source = {source!r} is not a name")
        entries = {entry.target.path: entry for entry in resolve_mapping(table, database, where=where)}
        for rule in triggers:
            replaced = entries.get(rule.path)
            entries[rule.path] = _rule_entry(database, rule, entries)
            if replaced is not None:
                _LOGGER.info("%s replaces the mapping entry %s → %s", rule.where, replaced.source, rule.path)
        return cls(database, list(entries.values()), source=source)

    @property
    def frame_ids(self) -> frozenset[int]:
        """Identifiers this decoder turns into signals (extended ones with bit 31 set)."""
        return frozenset(self._plans)

    def decode(self, frame: CanFrame, timestamp: datetime, monotonic: float | None = None) -> list[Signal]:
        """The mapped signals of one frame; [] for frames the mapping does not use.

        `timestamp` is the wall time the frame was read, `monotonic` the same moment on the monotonic
        clock (what orders readings in the vehicle state).

        Raises ProtocolError when a known frame is too short for its DBC message.
        """
        plan = self._plans.get(_plan_key(frame.can_id, frame.extended))
        if plan is None or frame.remote:
            return []
        if len(frame.data) < plan.length:
            raise ProtocolError(
                f"frame 0x{frame.can_id:X} has {len(frame.data)} data bytes; "
                f"DBC message {plan.message} needs {plan.length}"
            )
        key = _plan_key(frame.can_id, frame.extended)
        data = frame.data
        cached = self._last.get(key)
        if cached is None or cached[0] != data:
            try:
                values = plan.decode(data, False, False)
                readings = tuple((t.path, *convert(t, values[t.name])) for t in plan.targets if t.name in values)
            except Exception as exc:  # cantools (a multiplexer value the database lacks), a value it cannot hold
                raise ProtocolError(f"frame 0x{frame.can_id:X} ({plan.message}) does not decode: {exc}") from exc
            cached = (data, readings)
            self._last[key] = cached
        # Frames read in one chunk share one timestamp, so an identical reading (a door still closed in
        # the next frame) is the same immutable Signal: built and validated once per chunk, not per frame.
        if self._stamp != (timestamp, monotonic):
            self._stamp = (timestamp, monotonic)
            self._signals.clear()
        signals = self._signals
        out = []
        for reading in cached[1]:
            signal = signals.get(reading)
            if signal is None:
                path, value, quality = reading
                signal = signals[reading] = Signal(
                    path=path,
                    value=value,
                    timestamp=timestamp,
                    source=self.source,
                    quality=quality,
                    monotonic=monotonic,
                )
            out.append(signal)
        return out


def _rule_entry(database: Any, rule: TriggerRule, entries: Mapping[str, ResolvedEntry]) -> ResolvedEntry:
    return resolve_trigger(
        database,
        path=rule.path,
        signal_key=rule.signal,
        values=rule.values,
        at_least=rule.at_least,
        at_most=rule.at_most,
        invalid=rule.invalid,
        entries={e.target.path: e for e in entries.values() if e.target.path != rule.path},
        where=rule.where,
    )


def _mapping_dbc(table: Mapping[str, Any], mapping_path: Path | None, where: str) -> list[Path]:
    """The mapping file's own `dbc` (a name or list, relative to the mapping file); [] for the packaged car."""
    named = table.get("dbc", PACKAGED_DBC)
    names = named if isinstance(named, list) else [named]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"CAN mapping {where}: dbc = {named!r} is not a file name or a list of them")
    if mapping_path is None or (names == [PACKAGED_DBC] and not (mapping_path.parent / PACKAGED_DBC).exists()):
        return []
    return [p if p.is_absolute() else mapping_path.parent / p for p in map(Path, names)]


def resolve_mapping(table: Mapping[str, Any], database: Any, *, where: str) -> list[ResolvedEntry]:
    """Every entry of the `[vss]` and `[extension]` tables, checked; a path fed twice is an error."""
    resolved: list[ResolvedEntry] = []
    seen_keys: dict[str, str] = {}
    seen_paths: dict[str, str] = {}
    for section in MAPPING_TABLES:
        entries = table.get(section, {})
        if not isinstance(entries, Mapping):
            raise ConfigError(f'CAN mapping {where} [{section}]: expected a table of "Message.Signal" = "Vehicle..."')
        for key, spec in entries.items():
            at = f"CAN mapping {where} [{section}] {key!r}"
            split_key(key, at)
            if key in seen_keys:
                raise ConfigError(f"{at}: mapped twice (also in [{seen_keys[key]}])")
            entry = resolve_entry(database, key, spec, where=at)
            if entry.target.path in seen_paths:
                raise ConfigError(f"{at}: {entry.target.path} is already fed by {seen_paths[entry.target.path]}")
            seen_keys[key], seen_paths[entry.target.path] = section, key
            resolved.append(entry)
    unknown = set(table) - {*MAPPING_TABLES, "dbc", "source"}
    if unknown:
        raise ConfigError(f"CAN mapping {where}: unknown key(s) {', '.join(sorted(unknown))}")
    return resolved


def parse_mapping(table: Mapping[str, Any]) -> dict[str, str]:
    """The `Message.Signal → VSS path` pairs of a mapping table (shorthand or typed entries), unchecked."""
    mapping: dict[str, str] = {}
    for section in MAPPING_TABLES:
        for key, spec in dict(table.get(section, {})).items():
            mapping[key] = spec if isinstance(spec, str) else str(spec.get("path"))
    return mapping
