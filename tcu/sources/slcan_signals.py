"""CAN frames → VSS signals, through a CAN database (cantools) and a typed mapping (`tcu.vehicle.can_mapping`).

Decoding sits on the hot path of a busy bus (thousands of frames per second), so everything that
can be worked out once is: a per-frame-id plan holds, per mapped signal, a `CanTarget` whose conversion
(scale, offset, unit, value table, rounding, plausible range) is folded into a multiply-add or one dict
lookup, and where its bits sit (`tcu.vehicle.can_bits`): a raw value is a shift and a mask of the
frame read as one integer, the same integer cantools gives with `decode_choices=False, scaling=False`.
Multiplexed messages and float signals go through cantools' own `decode`. Unmapped messages and
signals cost nothing past one dict lookup.

Frames read together share one timestamp (`decode_batch`), so within a batch a reading already made
(the same raw value of a signal, the same mapped bits of a message) is the same immutable `Signal`,
built once: a door status repeating itself, or an alive counter ticking beside unchanged signals, is
a dict lookup per frame.

The database is the packaged fictional car unless `[sources.can] dbc` names files; the mapping is
the packaged `tcu/vehicle/mapping/can.toml` unless `[sources.can] mapping` names one. eCall trigger
rules (`[[ecall.trigger]]`) become targets too, replacing the mapping's entry for their path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tcu.ecall.triggers import TriggerRule
from tcu.errors import ConfigError, ProtocolError
from tcu.sources.slcan import CanFrame
from tcu.vehicle.can_bits import bit_fields
from tcu.vehicle.can_database import PACKAGED_DBC, load_can_database
from tcu.vehicle.can_dbc_lookup import split_key
from tcu.vehicle.can_mapping import resolve_entry
from tcu.vehicle.can_target import CanTarget, ResolvedEntry, convert
from tcu.vehicle.can_trigger import resolve_trigger
from tcu.vehicle.mapping import load_mapping, packaged_mapping_name
from tcu.vehicle.state import Signal

_LOGGER = logging.getLogger(__name__)

SOURCE = "can"
MAPPING_TABLES = ("vss", "extension")  # standard VSS paths, then our own


# Signals decoded per identical payload within one batch, per message; a batch's frames share one timestamp.
_PAYLOAD_CACHE = 256
_EXTENDED = 1 << 31  # 11-bit 0x123 and 29-bit 0x123 are different frames; bit 31 keeps them apart in one int key

# One mapped signal on the fast path: (shift, mask, sign bit, big-endian, target, this batch's Signal per raw).
_Field = tuple[int, int, int, bool, CanTarget, dict[Any, Signal]]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """How one DBC message becomes signals: shifts and masks (`fields`), or cantools (`fields` None)."""

    message: str
    length: int
    decode: Callable[..., Mapping[str, Any]]  # cantools' Message.decode, for the fallback
    targets: tuple[tuple[CanTarget, dict[Any, Signal]], ...]
    fields: tuple[_Field, ...] | None
    # The same fields as (shift, mask, cache) when all are unsigned Intel, the common case: one comprehension.
    plain: tuple[tuple[int, int, dict[Any, Signal]], ...] | None
    big_endian: bool  # a field needs the frame read big-endian
    occupied: int  # bits of the mapped signals (frame read little-endian): the payload cache's key
    payloads: dict[int, tuple[Signal, ...]]  # this batch's signals per payload (multi-signal messages)


def _plan_key(can_id: int, extended: bool) -> int:
    return can_id | _EXTENDED if extended else can_id


def _plan(message: Any, targets: Sequence[CanTarget]) -> _Plan:
    with_caches = tuple((target, dict[Any, Signal]()) for target in targets)
    layouts = bit_fields(message, [message.get_signal_by_name(target.name) for target in targets])
    fields: tuple[_Field, ...] | None = None
    if isinstance(layouts, str):
        _LOGGER.info("CAN message %s is decoded by cantools: %s", message.name, layouts)
        layouts = []
    else:
        fields = tuple(
            (f.shift, f.mask, f.sign, f.big_endian, target, cache)
            for f, (target, cache) in zip(layouts, with_caches, strict=True)
        )
    occupied = 0
    for layout in layouts:
        occupied |= layout.occupied
    return _Plan(
        message=message.name,
        length=message.length,
        decode=message.decode,
        targets=with_caches,
        fields=fields,
        plain=(
            tuple((shift, mask, cache) for shift, mask, _, _, _, cache in fields)
            if fields and not any(layout.big_endian or layout.sign for layout in layouts)
            else None
        ),
        big_endian=any(layout.big_endian for layout in layouts),
        occupied=occupied,
        payloads={},
    )


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
        for message_name, targets in grouped.items():
            message = database.get_message_by_name(message_name)
            self._plans[_plan_key(message.frame_id, message.is_extended_frame)] = _plan(message, targets)
        # Frames read in one batch share one timestamp, so an identical reading (a door still closed in the
        # next frame) is the same immutable Signal: built and validated once per batch, not per frame.
        self._stamp: tuple[datetime, float | None] | None = None
        self._batch_caches: list[dict[Any, Any]] = [cache for plan in self._plans.values() for _, cache in plan.targets]
        self._batch_caches += [plan.payloads for plan in self._plans.values()]

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

        Raises ProtocolError when a known frame is too short for its DBC message, or does not decode.
        """
        signals, rejected = self.decode_batch((frame,), timestamp, monotonic)
        if rejected:
            raise rejected[0][1]
        return signals

    def decode_batch(
        self, frames: Iterable[CanFrame], timestamp: datetime, monotonic: float | None = None
    ) -> tuple[list[Signal], list[tuple[CanFrame, ProtocolError]]]:
        """The mapped signals of frames read together, in order, and the frames rejected with the reason."""
        if self._stamp != (timestamp, monotonic):
            self._stamp = (timestamp, monotonic)
            for cache in self._batch_caches:
                cache.clear()
        plans = self._plans
        signals: list[Signal] = []
        rejected: list[tuple[CanFrame, ProtocolError]] = []
        for frame in frames:
            plan = plans.get(frame.can_id | _EXTENDED if frame.extended else frame.can_id)
            if plan is None or frame.remote:
                continue
            data = frame.data
            if len(data) < plan.length:
                rejected.append((frame, self._too_short(frame, plan)))
                continue
            try:
                if plan.fields is None:
                    signals += self._by_cantools(plan, data)
                    continue
                if len(data) > plan.length:
                    data = data[: plan.length]  # as cantools: the DBC's length counts, extra bytes are ignored
                little = int.from_bytes(data, "little")
                payloads = plan.payloads
                key = little & plan.occupied
                known = payloads.get(key)
                if known is None and plan.plain is not None:
                    try:  # each raw value already seen in this batch: its Signal is in the field's cache
                        known = tuple([cache[(little >> shift) & mask] for shift, mask, cache in plan.plain])
                    except KeyError:  # a raw value new to this batch: the general path makes its Signal
                        known = None
                if known is None:
                    known = self._fields(plan.fields, little, int.from_bytes(data) if plan.big_endian else 0)
                    if len(payloads) >= _PAYLOAD_CACHE:
                        payloads.clear()
                    payloads[key] = known
                signals += known
            except Exception as exc:  # cantools (a multiplexer value the database lacks), a value it cannot hold
                rejected.append(
                    (frame, ProtocolError(f"frame 0x{frame.can_id:X} ({plan.message}) does not decode: {exc}"))
                )
        return signals, rejected

    def _fields(self, fields: tuple[_Field, ...], little: int, big: int) -> tuple[Signal, ...]:
        out = []
        for shift, mask, sign, big_endian, target, cache in fields:
            raw = ((big if big_endian else little) >> shift) & mask
            if raw & sign:
                raw -= sign << 1
            signal = cache.get(raw)
            if signal is None:
                signal = cache[raw] = self._signal(target, raw)
            out.append(signal)
        return tuple(out)

    def _by_cantools(self, plan: _Plan, data: bytes) -> list[Signal]:
        values = plan.decode(data, False, False)
        out = []
        for target, cache in plan.targets:
            if target.name in values:  # a multiplexed signal the frame does not carry is absent
                raw = values[target.name]
                signal = cache.get(raw)
                if signal is None:
                    signal = cache[raw] = self._signal(target, raw)
                out.append(signal)
        return out

    def _signal(self, target: CanTarget, raw: float) -> Signal:
        assert self._stamp is not None
        value, quality = convert(target, raw)
        timestamp, monotonic = self._stamp
        return Signal(
            path=target.path, value=value, timestamp=timestamp, source=self.source, quality=quality, monotonic=monotonic
        )

    @staticmethod
    def _too_short(frame: CanFrame, plan: _Plan) -> ProtocolError:
        return ProtocolError(
            f"frame 0x{frame.can_id:X} has {len(frame.data)} data bytes; DBC message {plan.message} needs {plan.length}"
        )


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
