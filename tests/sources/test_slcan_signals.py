"""DBC + mapping → VSS: the shipped files, value kinds and plausibility, and configuration errors."""

from __future__ import annotations

import codecs
import json
import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import cantools
import pytest
from cantools.database.namedsignalvalue import NamedSignalValue
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu.errors import ConfigError, ProtocolError
from tcu.sources.slcan import CanFrame, SlcanStream
from tcu.sources.slcan_signals import CanSignalDecoder, parse_mapping
from tcu.vehicle.state import Quality, VehicleState

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DATA = Path(__file__).parent.parent / "data" / "slcan"
REPO = Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def decoder() -> CanSignalDecoder:
    return CanSignalDecoder.from_files()


def values(decoder: CanSignalDecoder, can_id: int, data: str) -> dict[str, tuple[object, Quality]]:
    frame = CanFrame(can_id=can_id, data=bytes.fromhex(data))
    return {s.path: (s.value, s.quality) for s in decoder.decode(frame, NOW)}


def test_golden_session_ends_in_the_recorded_vehicle_state(decoder: CanSignalDecoder) -> None:
    state = VehicleState()
    stream = SlcanStream()
    rejected = []
    for line in (DATA / "canable_z1_session.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        for item in stream.feed(codecs.escape_decode(line)[0]):
            if isinstance(item, CanFrame):
                try:
                    state.update_many(decoder.decode(item, NOW))
                except ProtocolError as exc:
                    rejected.append(str(exc))
    expected = json.loads((DATA / "canable_z1_session.vss.json").read_text())
    assert {path: signal.value for path, signal in state.snapshot().items()} == pytest.approx(expected)
    assert all(signal.source == "can" and signal.timestamp == NOW for signal in state.snapshot().values())
    assert rejected == ["frame 0xC1 has 2 data bytes; DBC message VehicleSpeed needs 4"]


def test_every_mapped_signal_exists_and_every_dbc_message_is_used() -> None:
    table = tomllib.loads(resources.files("tcu.vehicle").joinpath("mapping", "can.toml").read_text())
    mapping = parse_mapping(table)
    db = cantools.database.load_file(REPO / "tcu" / "sources" / "dbc" / "vehicle.dbc")
    used = {key.split(".")[0] for key in mapping}
    assert used == {m.name for m in db.messages}
    assert not set(table["vss"].values()) & set(table["extension"].values())
    assert all(message.cycle_time for message in db.messages)  # the simulator sends at these


def test_hil_dbc_is_the_packaged_file_not_a_copy() -> None:
    link = REPO / "hil" / "vehicle.dbc"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "tcu" / "sources" / "dbc" / "vehicle.dbc").resolve()


@pytest.mark.parametrize(
    ("can_id", "data", "expected"),
    [
        (0x0C1, "AF120500", {"Vehicle.Speed": (47.83, Quality.GOOD)}),
        (0x0C1, "FFFF0000", {"Vehicle.Speed": (655.35, Quality.INVALID)}),  # 0xFFFF: signal not available
        (0x3B0, "8C05", {"Vehicle.LowVoltageBattery.CurrentVoltage": (14.2, Quality.GOOD)}),
        (
            0x130,
            "0202",
            {"Vehicle.LowVoltageSystemState": ("ON", Quality.GOOD), "Vehicle.Mode": ("driving", Quality.GOOD)},
        ),
        (
            0x130,
            "0303",
            {"Vehicle.LowVoltageSystemState": ("START", Quality.GOOD), "Vehicle.Mode": ("3", Quality.INVALID)},
        ),
        (
            0x130,
            "0500",
            {"Vehicle.LowVoltageSystemState": ("5", Quality.INVALID), "Vehicle.Mode": ("parked", Quality.GOOD)},
        ),
        (
            0x050,
            "0300",
            {
                "Vehicle.Safety.CrashDetected": (True, Quality.GOOD),
                "Vehicle.Safety.Airbag.IsDeployed": (True, Quality.GOOD),
            },
        ),
        (0x2C0, "01", {"Vehicle.Cabin.SosButton.IsPressed": (True, Quality.GOOD)}),
    ],
)
def test_value_kinds_and_plausibility(
    decoder: CanSignalDecoder, can_id: int, data: str, expected: dict[str, tuple[object, Quality]]
) -> None:
    decoded = values(decoder, can_id, data)
    assert decoded.keys() == expected.keys()
    for path, (value, quality) in expected.items():
        assert decoded[path] == (pytest.approx(value), quality)


def test_body_status_names_each_door(decoder: CanSignalDecoder) -> None:
    decoded = values(decoder, 0x2A0, "2A1502")  # FR open, hood open; FL + RL + trunk locked; double locked
    assert decoded["Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen"] == (True, Quality.GOOD)
    assert decoded["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"] == (False, Quality.GOOD)
    assert decoded["Vehicle.Body.Hood.IsOpen"] == (True, Quality.GOOD)
    assert decoded["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"] == (True, Quality.GOOD)
    assert decoded["Vehicle.Cabin.Door.Row2.DriverSide.IsLocked"] == (True, Quality.GOOD)
    assert decoded["Vehicle.Cabin.Door.Row2.PassengerSide.IsLocked"] == (False, Quality.GOOD)
    assert decoded["Vehicle.Body.Trunk.Rear.IsLocked"] == (True, Quality.GOOD)
    assert decoded["Vehicle.Body.CentralLock.State"] == ("DOUBLE_LOCKED", Quality.GOOD)
    assert len(decoded) == 12


def test_unknown_remote_and_extended_namesakes_are_ignored(decoder: CanSignalDecoder) -> None:
    assert decoder.decode(CanFrame(can_id=0x7DF, data=bytes(8)), NOW) == []
    assert decoder.decode(CanFrame(can_id=0x0C1, remote=True, dlc=4), NOW) == []
    assert decoder.decode(CanFrame(can_id=0x0C1, extended=True, data=bytes(4)), NOW) == []


def test_longer_frames_are_fine_shorter_ones_say_why(decoder: CanSignalDecoder) -> None:
    assert len(decoder.decode(CanFrame(can_id=0x0C1, data=bytes(8)), NOW)) == 1
    with pytest.raises(ProtocolError, match="frame 0xC1 has 3 data bytes; DBC message VehicleSpeed needs 4"):
        decoder.decode(CanFrame(can_id=0x0C1, data=bytes(3)), NOW)


@pytest.mark.parametrize(
    ("toml", "reason"),
    [
        (
            '[vss]\n"VehicleSpeed.Nope" = "Vehicle.Speed"\n',
            "[vss] 'VehicleSpeed.Nope': message VehicleSpeed has no signal 'Nope' (it has VehicleSpeed, SpeedCounter)",
        ),
        (
            '[vss]\n"Nope.VehicleSpeed" = "Vehicle.Speed"\n',
            "'Nope.VehicleSpeed': no message 'Nope' in the CAN database",
        ),
        ('[vss]\n"VehicleSpeed.VehicleSpeed" = "Speed"\n', "'Speed' is not a VSS path"),
        ('[vss]\n"VehicleSpeed" = "Vehicle.Speed"\n', 'expected "Message.Signal"'),
        ('[vss]\n"VehicleSpeed.VehicleSpeed" = 1\n', 'expected "Vehicle.Path" or { path'),
        ("vss = 1\n", "[vss]: expected a table"),
        (
            '[vss]\n"Battery.BatteryVoltage" = "Vehicle.X"\n[extension]\n"Battery.BatteryVoltage" = "Vehicle.Y"\n',
            "[extension] 'Battery.BatteryVoltage': mapped twice (also in [vss])",
        ),
        ("speed = 1\n", "unknown key(s) speed"),
        ("source = 3\n", "source = 3 is not a name"),
        ('dbc = "missing.dbc"\n', "missing.dbc"),
        ("[vss\n", "invalid TOML"),
    ],
)
def test_mapping_errors_name_the_key(tmp_path: Path, toml: str, reason: str) -> None:
    path = tmp_path / "can.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        CanSignalDecoder.from_files(path)
    assert reason in str(caught.value)


def test_unreadable_dbc_is_a_config_error(tmp_path: Path) -> None:
    dbc = tmp_path / "broken.dbc"
    dbc.write_text('BO_ 1 Broken: 8 X\n SG_ A : 0|99@1+ (1,0) [0|1] "" X\n')
    with pytest.raises(ConfigError, match=r"broken\.dbc: cannot be loaded"):
        CanSignalDecoder.from_files(dbc_path=dbc)


LAYOUTS = REPO / "tests" / "data" / "can" / "layouts.dbc"  # Motorola, signed, 64-bit, extended, mux, float
LAYOUT_MAPPING = """
[extension]
"Mixed.IntelSigned" = "Vehicle.Test.IntelSigned"
"Mixed.MotorolaUnsigned" = "Vehicle.Test.MotorolaUnsigned"
"Mixed.MotorolaSigned" = "Vehicle.Test.MotorolaSigned"
"Mixed.IntelOdd" = "Vehicle.Test.IntelOdd"
"Mixed.Gear" = "Vehicle.Test.Gear"
"WideExtended.MotorolaWide" = "Vehicle.Test.MotorolaWide"
"IntelWide.IntelWideSigned" = "Vehicle.Test.IntelWideSigned"
"Muxed.Temperature" = "Vehicle.Test.Temperature"
"Muxed.Level" = "Vehicle.Test.Level"
"Floaty.Pressure" = "Vehicle.Test.Pressure"
"""


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> CanSignalDecoder:
    mapping = tmp_path_factory.mktemp("layouts") / "can.toml"
    mapping.write_text(LAYOUT_MAPPING)
    return CanSignalDecoder.from_files(mapping, dbc_path=LAYOUTS)


def cantools_view(decoder: CanSignalDecoder, frame: CanFrame) -> dict[str, object] | str:
    """What cantools itself makes of a frame (scaled, choice names), rounded as each target rounds:
    {path: value}, or why cantools refuses the frame."""
    message = decoder.database.get_message_by_frame_id(frame.can_id)
    try:
        decoded = message.decode(frame.data)
    except Exception as exc:
        return str(exc)
    targets = {entry.target.name: entry.target for entry in decoder.entries if entry.message == message.name}
    view: dict[str, object] = {}
    for name, value in decoded.items():
        if name in targets:
            target = targets[name]
            view[target.path] = value.name if isinstance(value, NamedSignalValue) else round(value, target.decimals)
    return view


_PAYLOADS = st.binary(min_size=8, max_size=8)
layout_frames = st.one_of(
    st.builds(lambda payload: CanFrame(can_id=0x100, data=payload), _PAYLOADS),  # Mixed
    st.builds(lambda payload: CanFrame(can_id=0x102, data=payload), _PAYLOADS),  # IntelWide
    st.builds(lambda payload: CanFrame(can_id=0x18FF5201, extended=True, data=payload), _PAYLOADS),  # WideExtended
    st.builds(lambda payload: CanFrame(can_id=0x103, data=payload[:4]), _PAYLOADS),  # Muxed
    st.builds(lambda payload: CanFrame(can_id=0x104, data=payload[:4]), _PAYLOADS),  # Floaty
)


@settings(max_examples=60)
@given(frames=st.lists(layout_frames, min_size=1, max_size=100))
def test_decoded_values_are_cantools_values_in_any_batch(layouts: CanSignalDecoder, frames: list[CanFrame]) -> None:
    """The shift-and-mask path (Intel, Motorola, signed, 64-bit) and the cantools fallback (multiplexed,
    float) both give cantools' own scaled values and choice names, however a batch repeats payloads."""
    signals, rejected = layouts.decode_batch(frames, NOW, 1.0)
    got = iter(signals)
    reasons = dict((id(frame), str(exc)) for frame, exc in rejected)
    for frame in frames:
        expected = cantools_view(layouts, frame)
        if isinstance(expected, str):
            assert expected in reasons[id(frame)]
            continue
        decoded = {signal.path: signal.value for signal in [next(got) for _ in expected]}
        assert decoded == pytest.approx(expected, rel=1e-12, nan_ok=True)
    assert next(got, None) is None


def test_the_fallback_names_the_frame_a_multiplexer_value_it_lacks(layouts: CanSignalDecoder) -> None:
    assert values(layouts, 0x103, "01100000") == {"Vehicle.Test.Temperature": (1.6, Quality.GOOD)}
    assert values(layouts, 0x103, "02320000") == {"Vehicle.Test.Level": (50, Quality.GOOD)}
    with pytest.raises(ProtocolError, match=r"frame 0x103 \(Muxed\) does not decode: expected multiplexer id 1 or 2"):
        layouts.decode(CanFrame(can_id=0x103, data=bytes.fromhex("03000000")), NOW)


@pytest.mark.parametrize(
    ("which", "can_id"),
    [("layouts", 0x100), ("vehicle", 0x2A0)],  # Motorola and signed fields; unsigned Intel fields only
)
def test_a_batch_decodes_like_frames_one_by_one(
    layouts: CanSignalDecoder, decoder: CanSignalDecoder, which: str, can_id: int
) -> None:
    """Payloads repeating within a batch, more distinct ones than the payload cache holds (it is cleared
    and refilled), raw values seen and new: the same readings as frames decoded each in its own batch."""
    chosen = layouts if which == "layouts" else decoder
    length = chosen.database.get_message_by_frame_id(can_id).length
    payloads = [(n % 700 * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8)[:length] for n in range(2_000)]
    frames = [CanFrame(can_id=can_id, data=payload) for payload in payloads]
    signals, rejected = chosen.decode_batch(frames, NOW, 1.0)
    one_by_one = [signal for n, frame in enumerate(frames) for signal in chosen.decode(frame, NOW, 2.0 + n)]
    assert not rejected
    assert [(s.path, s.value, s.quality) for s in signals] == [(s.path, s.value, s.quality) for s in one_by_one]
