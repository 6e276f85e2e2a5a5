"""CAN frames → VSS signals, through a DBC (cantools) and the mapping table `tcu/vehicle/mapping/can.toml`.

Decoding sits on the hot path of a busy bus (thousands of frames per second), so everything that
can be worked out once is: a per-frame-id plan holds the cantools message's bound `decode`, the
expected length and, per mapped signal, the VSS path, the value kind and the plausible range.
cantools runs with `decode_choices=False` (integers, no `NamedSignalValue` objects); value names
come from a dict prepared here. Unmapped messages and signals cost one dict lookup, and a payload
equal to the previous one of its frame id is not decoded again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import cantools

from tcu.errors import ConfigError, ProtocolError
from tcu.sources.slcan import CanFrame
from tcu.vehicle.mapping import load_mapping
from tcu.vehicle.state import Quality, Signal, SignalValue

SOURCE = "can"
MAPPING_TABLES = ("vss", "extension")  # standard VSS paths, then our own


class ValueKind(StrEnum):
    FLOAT = "float"  # scaled physical value
    BOOL = "bool"  # a 1-bit flag
    CHOICE = "choice"  # the DBC value name (VAL_) as a string


@dataclass(frozen=True, slots=True)
class _Target:
    name: str  # DBC signal name
    path: str  # VSS path
    kind: ValueKind
    minimum: float
    maximum: float
    choices: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class _Plan:
    message: str
    length: int
    decode: Callable[..., Mapping[str, Any]]
    targets: tuple[_Target, ...]


def _plan_key(can_id: int, extended: bool) -> int:
    # 11-bit 0x123 and 29-bit 0x123 are different frames; bit 31 keeps them apart in one int key.
    return can_id | (1 << 31) if extended else can_id


class CanSignalDecoder:
    """Decode frames of one DBC into VSS signals named by a `Message.Signal → path` mapping."""

    def __init__(self, database: Any, mapping: Mapping[str, str], *, source: str = SOURCE) -> None:
        self.source = source
        grouped: dict[str, list[_Target]] = {}
        for key, path in mapping.items():
            message_name, _, signal_name = key.partition(".")
            try:
                message = database.get_message_by_name(message_name)
                signal = message.get_signal_by_name(signal_name)
            except KeyError as exc:
                raise ConfigError(f"CAN mapping {key!r}: no such message.signal in the DBC") from exc
            if not path.startswith("Vehicle."):
                raise ConfigError(f"CAN mapping {key!r}: {path!r} is not a VSS path")
            grouped.setdefault(message_name, []).append(_target(signal, path))
        self._plans: dict[int, _Plan] = {}
        # The last payload per frame id and what it decoded to: cyclic frames mostly repeat
        # themselves (a door status sent ten times a second), and then decoding is a bytes compare.
        self._last: dict[int, tuple[bytes, tuple[tuple[str, SignalValue, Quality], ...]]] = {}
        for message_name, targets in grouped.items():
            message = database.get_message_by_name(message_name)
            self._plans[_plan_key(message.frame_id, message.is_extended_frame)] = _Plan(
                message=message.name, length=message.length, decode=message.decode, targets=tuple(targets)
            )

    @classmethod
    def from_files(cls, mapping_path: Path | None = None, *, dbc_path: Path | None = None) -> CanSignalDecoder:
        """The packaged mapping (`can.toml`) and DBC unless paths are given; ConfigError says what is wrong."""
        table = load_mapping("can", mapping_path)
        mapping = parse_mapping(table)
        dbc_name = table.get("dbc", "vehicle.dbc")
        if dbc_path is None and not isinstance(dbc_name, str):
            raise ConfigError(f"CAN mapping: dbc = {dbc_name!r} is not a file name")
        where = dbc_path or Path(dbc_name)
        try:
            if dbc_path is None and not where.is_absolute():
                text = resources.files("tcu.sources").joinpath("dbc", dbc_name).read_text("utf-8")
            else:
                text = where.read_text("utf-8")
            database = cantools.database.load_string(text, database_format="dbc", strict=True)
        except OSError as exc:
            raise ConfigError(f"DBC {where}: cannot read it: {exc.strerror or exc}") from exc
        except Exception as exc:  # cantools raises its own parse errors as well as ValueError
            raise ConfigError(f"DBC {where}: cannot be loaded: {exc}") from exc
        source = table.get("source", SOURCE)
        if not isinstance(source, str) or not source:
            raise ConfigError(f"CAN mapping: source = {source!r} is not a name")
        return cls(database, mapping, source=source)

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
            values = plan.decode(data, False)
            cached = (data, tuple((t.path, *_convert(t, values[t.name])) for t in plan.targets))
            self._last[key] = cached
        source = self.source
        return [
            Signal(path=path, value=value, timestamp=timestamp, source=source, quality=quality, monotonic=monotonic)
            for path, value, quality in cached[1]
        ]


def _convert(target: _Target, raw: float) -> tuple[SignalValue, Quality]:
    kind = target.kind
    if kind is ValueKind.BOOL:
        return bool(raw), Quality.GOOD
    if kind is ValueKind.CHOICE:
        name = target.choices.get(int(raw))
        return (name, Quality.GOOD) if name is not None else (str(int(raw)), Quality.INVALID)
    value = float(raw)
    quality = Quality.GOOD if target.minimum <= value <= target.maximum else Quality.INVALID
    return value, quality


def _target(signal: Any, path: str) -> _Target:
    choices = {int(raw): str(name) for raw, name in (signal.choices or {}).items()}
    if choices:
        kind = ValueKind.CHOICE
    elif signal.length == 1:
        kind = ValueKind.BOOL
    else:
        kind = ValueKind.FLOAT
    minimum = float("-inf") if signal.minimum is None else float(signal.minimum)
    maximum = float("inf") if signal.maximum is None else float(signal.maximum)
    return _Target(signal.name, path, kind, minimum, maximum, choices)


def parse_mapping(table: Mapping[str, Any]) -> dict[str, str]:
    """Merge the `[vss]` and `[extension]` tables into one `Message.Signal → path` dict."""
    mapping: dict[str, str] = {}
    for section in MAPPING_TABLES:
        entries = table.get(section, {})
        if not isinstance(entries, Mapping):
            raise ConfigError(f'CAN mapping [{section}]: expected a table of "Message.Signal" = "Vehicle..."')
        for key, path in entries.items():
            if not isinstance(path, str) or "." not in key:
                raise ConfigError(f'CAN mapping [{section}] {key!r}: expected "Message.Signal" = "Vehicle..."')
            if key in mapping:
                raise ConfigError(f"CAN mapping {key!r}: mapped twice")
            mapping[key] = path
    unknown = set(table) - {*MAPPING_TABLES, "dbc", "source"}
    if unknown:
        raise ConfigError(f"CAN mapping: unknown key(s) {', '.join(sorted(unknown))}")
    return mapping
