"""Your own vehicle's DBC and mapping: typed conversion, every mapping error with its message, trigger rules."""

from __future__ import annotations

import math
import re
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tcu.ecall.config import EcallConfig
from tcu.ecall.triggers import CRASH_DETECTED, SOS_BUTTON, CallType, TriggerDetector, TriggerKind, TriggerRule
from tcu.errors import ConfigError
from tcu.sources.slcan import CanFrame
from tcu.sources.slcan_signals import CanSignalDecoder
from tcu.vehicle.can_database import load_can_database
from tcu.vehicle.state import Quality

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

# A small OEM-style DBC: units as real files spell them, VAL_ tables on 1-bit flags, an enumerated
# 3-bit crash signal with an SNA value, a 2-bit SOS state, a speed in mph.
DBC = """VERSION ""
NS_ :
BS_:
BU_: ACU BCM ESP TCU
BO_ 100 ACU_01: 4 ACU
 SG_ CrashType : 0|3@1+ (1,0) [0|7] "" TCU
 SG_ SosState : 3|2@1+ (1,0) [0|3] "" TCU
 SG_ Decel : 8|16@1+ (0.01,0) [0|500] "m/s2" TCU
BO_ 200 ESP_21: 8 ESP
 SG_ Speed : 0|16@1+ (0.01,0) [0|250] "mph" TCU
 SG_ Odo : 16|32@1+ (0.1,0) [0|1000000] "Unit_KiloMeter" TCU
 SG_ Volt : 48|8@1+ (0.1,0) [0|25] "Volt" TCU
BO_ 300 ZV_02: 4 BCM
 SG_ DoorFL : 0|1@1+ (1,0) [0|1] "" TCU
 SG_ DoorFR : 1|1@1+ (1,0) [0|1] "" TCU
 SG_ Ignition : 4|3@1+ (1,0) [0|7] "" TCU
 SG_ LockState : 8|2@1+ (1,0) [0|3] "" TCU
 SG_ Fuel : 10|8@1+ (0.5,0) [0|100] "%" TCU
 SG_ Rpm : 24|8@1+ (37.5,0) [0|9000] "1/min" TCU
VAL_ 100 CrashType 0 "NO_CRASH" 1 "FRONT" 2 "SIDE" 3 "REAR" 4 "ROLLOVER" 7 "SNA" ;
VAL_ 100 SosState 0 "IDLE" 1 "PRESSED" 3 "FAULT" ;
VAL_ 300 DoorFL 0 "CLOSED" 1 "OPEN" ;
VAL_ 300 DoorFR 0 "OPEN" 1 "CLOSED" ;
VAL_ 300 Ignition 0 "OFF" 1 "ACC" 2 "ON" 3 "START" 7 "SNA" ;
VAL_ 300 LockState 0 "UNLOCKED" 1 "LOCKED" 2 "SAFE" 3 "SNA" ;
"""

MAPPING = """
[vss]
"ESP_21.Speed" = "Vehicle.Speed"
"ESP_21.Odo" = "Vehicle.TraveledDistance"
"ESP_21.Volt" = "Vehicle.LowVoltageBattery.CurrentVoltage"
"ZV_02.DoorFL" = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
"ZV_02.DoorFR" = { path = "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen", values = { OPEN = true, CLOSED = false } }
"ZV_02.Ignition" = { path = "Vehicle.LowVoltageSystemState", invalid = ["SNA"] }
"ZV_02.LockState" = { path = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked", values = { LOCKED = true, SAFE = true, \
UNLOCKED = false } }
"ZV_02.Fuel" = "Vehicle.Powertrain.FuelSystem.RelativeLevel"
"ZV_02.Rpm" = "Vehicle.Powertrain.CombustionEngine.Speed"
"""


@pytest.fixture
def car(tmp_path: Path) -> Path:
    (tmp_path / "car.dbc").write_text(DBC)
    (tmp_path / "car.toml").write_text(MAPPING)
    return tmp_path


def decoder_for(car: Path, mapping: str | None = None, *, triggers: tuple[TriggerRule, ...] = ()) -> CanSignalDecoder:
    if mapping is not None:
        (car / "car.toml").write_text(mapping)
    return CanSignalDecoder.from_files(car / "car.toml", dbc_paths=[car / "car.dbc"], triggers=triggers)


def decode(decoder: CanSignalDecoder, can_id: int, data: bytes) -> dict[str, tuple[object, Quality]]:
    return {s.path: (s.value, s.quality) for s in decoder.decode(CanFrame(can_id=can_id, data=data), NOW)}


def esp(speed_raw: int, odo_raw: int, volt_raw: int) -> bytes:
    return speed_raw.to_bytes(2, "little") + odo_raw.to_bytes(4, "little") + bytes((volt_raw, 0))


def zv(door_fl: int, door_fr: int, ignition: int, lock: int, fuel_raw: int, rpm_raw: int) -> bytes:
    bits = door_fl | door_fr << 1 | ignition << 4 | lock << 8 | fuel_raw << 10 | rpm_raw << 24
    return bits.to_bytes(4, "little")


def test_units_convert_into_vss_and_round_to_the_source_resolution(car: Path) -> None:
    values = decode(decoder_for(car), 200, esp(speed_raw=6214, odo_raw=1_234_567, volt_raw=142))
    speed, quality = values["Vehicle.Speed"]
    assert quality is Quality.GOOD
    assert (
        speed == 100.005
    )  # 62.14 mph = 100.0046 km/h; 0.01 mph ≈ 0.016 km/h: 3 decimals  # mph → km/h, 0.01 mph ≈ 0.016 km/h: 3 decimals
    assert values["Vehicle.TraveledDistance"] == (123456.7, Quality.GOOD)  # not 123456.70000000001
    assert repr(values["Vehicle.TraveledDistance"][0]) == "123456.7"
    assert values["Vehicle.LowVoltageBattery.CurrentVoltage"] == (14.2, Quality.GOOD)


def test_integer_datatypes_are_ints_within_their_vss_range(car: Path) -> None:
    values = decode(decoder_for(car), 300, zv(0, 0, 2, 1, fuel_raw=101, rpm_raw=80))
    assert values["Vehicle.Powertrain.FuelSystem.RelativeLevel"] == (50, Quality.GOOD)  # uint8, 50.5 rounds to even
    rpm = values["Vehicle.Powertrain.CombustionEngine.Speed"]
    assert rpm == (3000, Quality.GOOD)
    assert type(rpm[0]) is int
    over = decode(decoder_for(car), 300, zv(0, 0, 2, 1, fuel_raw=201, rpm_raw=80))
    assert over["Vehicle.Powertrain.FuelSystem.RelativeLevel"][1] is Quality.INVALID  # 100.5 % > VSS max 100


def test_a_one_bit_door_with_a_val_table_is_a_vss_boolean(car: Path) -> None:
    decoder = decoder_for(car)
    opened = decode(decoder, 300, zv(1, 0, 2, 0, 0, 0))
    assert opened["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"] == (True, Quality.GOOD)  # was "OPEN"
    assert opened["Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen"] == (True, Quality.GOOD)  # raw 0 is "OPEN" here
    closed = decode(decoder, 300, zv(0, 1, 2, 0, 0, 0))
    assert closed["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"] == (False, Quality.GOOD)
    assert closed["Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen"] == (False, Quality.GOOD)


def test_enumerations_map_to_vss_values_and_unknown_or_sna_is_invalid(car: Path) -> None:
    decoder = decoder_for(car)
    values = decode(decoder, 300, zv(0, 0, 3, 2, 0, 0))
    assert values["Vehicle.LowVoltageSystemState"] == ("START", Quality.GOOD)
    assert values["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"] == (True, Quality.GOOD)  # SAFE → true
    values = decode(decoder, 300, zv(0, 0, 7, 3, 0, 0))
    assert values["Vehicle.LowVoltageSystemState"] == ("SNA", Quality.INVALID)
    assert values["Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"] == (False, Quality.INVALID)  # SNA: not in values
    assert decode(decoder, 300, zv(0, 0, 5, 0, 0, 0))["Vehicle.LowVoltageSystemState"] == ("5", Quality.INVALID)


def test_the_resolved_table_says_what_each_entry_does(car: Path) -> None:
    rows = {e.target.path: e for e in decoder_for(car).entries}
    assert rows["Vehicle.Speed"].conversion == "raw*0.01 mph → km/h, 3 decimals"
    assert rows["Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"].values == "0 (CLOSED) → false, 1 (OPEN) → true"
    assert rows["Vehicle.Powertrain.CombustionEngine.Speed"].datatype == "uint16"


ERRORS = [
    (
        '"ESP_21.Nope" = "Vehicle.Speed"',
        "[vss] 'ESP_21.Nope': message ESP_21 has no signal 'Nope' (it has Speed, Odo, Volt)",
    ),
    ('"ESP_99.Speed" = "Vehicle.Speed"', "[vss] 'ESP_99.Speed': no message 'ESP_99' in the CAN database"),
    ('"Speed" = "Vehicle.Speed"', 'expected "Message.Signal" as the key'),
    ('"ESP_21.Speed" = "Speed"', "'Speed' is not a VSS path"),
    ('"ESP_21.Speed" = { path = "Vehicle.Speed", factor = 2 }', "unknown key(s) factor"),
    (
        '"ACU_01.CrashType" = "Vehicle.Safety.CrashDetected"',
        "Vehicle.Safety.CrashDetected is boolean but CrashType is 3 bits (0=NO_CRASH, 1=FRONT, 2=SIDE, 3=REAR, "
        "4=ROLLOVER, 7=SNA); say which values are true with values = {",
    ),
    (
        '"ZV_02.DoorFR" = "Vehicle.Cabin.Door.Row1.PassengerSide.IsOpen"',
        "names its values 0 'OPEN', 1 'CLOSED'; these names do not say that raw 1 means true",
    ),
    (
        '"ZV_02.LockState" = "Vehicle.Body.CentralLock.State"',
        "SAFE, SNA are not allowed for Vehicle.Body.CentralLock.State (VSS allows UNLOCKED, LOCKED, DOUBLE_LOCKED)",
    ),
    ('"ESP_21.Volt" = "Vehicle.LowVoltageSystemState"', "is a string but Volt has no VAL_ table"),
    ('"ESP_21.Speed" = "Vehicle.LowVoltageBattery.CurrentVoltage"', "Speed is in mph, which does not convert to"),
    ('"ESP_21.Speed" = { path = "Vehicle.Speed", unit = "furlongs" }', "unit 'furlongs' of Speed is not one we know"),
    (
        '"ZV_02.DoorFL" = { path = "Vehicle.Body.Hood.IsOpen", values = { AJAR = true } }',
        "'AJAR' is neither a VAL_ name of DoorFL (names: CLOSED, OPEN) nor a raw integer",
    ),
    (
        '"ZV_02.DoorFL" = { path = "Vehicle.Body.Hood.IsOpen", values = { 2 = true } }',
        "raw value 2 does not fit the 1-bit",
    ),
    (
        '"ZV_02.DoorFL" = { path = "Vehicle.Body.Hood.IsOpen", values = { OPEN = "yes" } }',
        "is boolean; expected true or false",
    ),
    ('"ESP_21.Speed" = { path = "Vehicle.Speed", scale = 0 }', "scale must not be 0"),
    (
        '"ESP_21.Speed" = { path = "Vehicle.Speed", datatype = "string" }',
        "contradicts VSS, where Vehicle.Speed is float",
    ),
    ('"ESP_21.Speed" = "Vehicle.OBD.DTCList"', "Vehicle.OBD.DTCList is string[]; a CAN signal cannot feed it"),
    (
        '"ESP_21.Speed" = "Vehicle.Speed"\n"ESP_21.Odo" = { path = "Vehicle.Speed", unit = "km/h" }',
        "Vehicle.Speed is already fed by ESP_21.Speed",
    ),
]


@pytest.mark.parametrize(("entry", "reason"), ERRORS)
def test_every_mapping_error_names_the_file_the_entry_and_the_fault(car: Path, entry: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        decoder_for(car, f"[vss]\n{entry}\n")
    assert str(caught.value).startswith(f"CAN mapping {car / 'car.toml'} [vss] ") or "Message.Signal" in reason
    assert reason in str(caught.value)


def test_a_path_outside_the_catalogue_is_inferred_or_declared(car: Path) -> None:
    decoder = decoder_for(
        car, '[vss]\n"ACU_01.Decel" = { path = "Vehicle.Private.Decel", vss_unit = "g", datatype = "float" }\n'
    )
    (entry,) = decoder.entries
    assert entry.conversion == "raw*0.01 m/s^2 → g, 4 decimals"
    value = decode(decoder, 100, bytes((0, 0x32, 0x05, 0)))["Vehicle.Private.Decel"][0]
    assert isinstance(value, float)
    assert math.isclose(value, 13.3 / 9.80665, abs_tol=1e-4)


def test_dbc_files_are_checked_and_merged(car: Path) -> None:
    with pytest.raises(ConfigError, match=r"DBC .*nothere\.dbc: no such file"):
        CanSignalDecoder.from_files(car / "car.toml", dbc_paths=[car / "nothere.dbc"])
    (car / "twin.dbc").write_text(DBC.replace("ACU_01", "ACU_02"))
    with pytest.raises(ConfigError, match=r"twin\.dbc: frame id 0x64 \(ACU_02\) is also ACU_01 in .*car\.dbc"):
        CanSignalDecoder.from_files(car / "car.toml", dbc_paths=[car / "car.dbc", car / "twin.dbc"])
    (car / "extra.dbc").write_text(
        'VERSION ""\nNS_ :\nBS_:\nBU_: X\nBO_ 900 Extra: 1 X\n SG_ Flag : 0|1@1+ (1,0) [0|1] "" X\n'
    )
    (car / "car.toml").write_text(
        '[vss]\n"ESP_21.Speed" = "Vehicle.Speed"\n"Extra.Flag" = "Vehicle.Body.Hood.IsOpen"\n'
    )
    merged = CanSignalDecoder.from_files(car / "car.toml", dbc_paths=[car / "car.dbc", car / "extra.dbc"])
    assert decode(merged, 900, b"\x01") == {"Vehicle.Body.Hood.IsOpen": (True, Quality.GOOD)}


@pytest.mark.parametrize(
    ("name", "fault"),
    [
        ("vw_mqb.dbc", "signals PLA_Bremsverzoegerung and PLA_Bremsmoment are overlapping"),
        ("tesla_can.dbc", "VAL_ table(s) for signals their message does not have: 568 UI_mapSpeedLimit"),
    ],
)
def test_opendbc_files_load_with_their_strict_mode_fault_logged(
    name: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = Path(__file__).parent.parent / "data" / "dbc" / name
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    assert load_can_database([path]).messages
    assert fault in caplog.text


# --- eCall trigger rules -------------------------------------------------------------------------


def rule(**fields: object) -> TriggerRule:
    return EcallConfig.from_table({"port": "x", "trigger": [fields]}).triggers[0]


def acu(crash: int, sos: int = 0, decel_raw: int = 0) -> bytes:
    return bytes((crash | sos << 3,)) + decel_raw.to_bytes(2, "little") + b"\x00"


def test_an_enumerated_crash_signal_triggers_through_the_detector_sans_io(car: Path) -> None:
    crash = rule(kind="crash", signal="ACU_01.CrashType", values=["FRONT", "SIDE", "REAR", "ROLLOVER"], invalid=["SNA"])
    decoder = decoder_for(car, triggers=(crash,))
    detector = TriggerDetector(sos_hold_s=0.3, retrigger_suppress_s=10.0)
    fired = []
    for raw, expected in ((0, (False, Quality.GOOD)), (7, (False, Quality.INVALID)), (5, (False, Quality.INVALID))):
        signals = decoder.decode(CanFrame(can_id=100, data=acu(raw)), NOW)
        assert {s.path: (s.value, s.quality) for s in signals}[CRASH_DETECTED] == expected
        fired += [t for s in signals if (t := detector.on_signal(s))]
    assert fired == []  # no crash, SNA, and an unnamed raw value never dial
    for signal in decoder.decode(CanFrame(can_id=100, data=acu(2)), NOW):  # SIDE
        if (detected := detector.on_signal(signal)) is not None:
            fired.append(detected)
    assert [(d.trigger.call_type, d.trigger.reason, d.path) for d in fired] == [
        (CallType.AUTOMATIC, "crash detected", CRASH_DETECTED)
    ]


def test_threshold_raw_value_and_vss_path_rules(car: Path) -> None:
    decel = rule(kind="crash", signal="ACU_01.Decel", at_least=40.0)
    sos = rule(kind="sos", signal="ACU_01.SosState", values=[1], hold_s=0.5)
    assert sos.hold_s == 0.5
    decoder = decoder_for(car, triggers=(decel, sos))
    assert decode(decoder, 100, acu(0, sos=1, decel_raw=3999))[CRASH_DETECTED] == (False, Quality.GOOD)
    values = decode(decoder, 100, acu(0, sos=1, decel_raw=4000))
    assert values[CRASH_DETECTED] == (True, Quality.GOOD)
    assert values[SOS_BUTTON] == (True, Quality.GOOD)
    assert decode(decoder, 100, acu(0, decel_raw=60000))[CRASH_DETECTED] == (False, Quality.INVALID)  # > DBC max
    by_path = rule(kind="airbag", signal="Vehicle.LowVoltageSystemState", values=["START"])
    airbag = decode(decoder_for(car, triggers=(by_path,)), 300, zv(0, 0, 3, 0, 0, 0))
    assert airbag["Vehicle.Safety.Airbag.IsDeployed"] == (True, Quality.GOOD)


def test_a_rule_replaces_the_mapping_entry_of_its_path() -> None:
    crash = TriggerRule(
        kind=TriggerKind.CRASH, signal="AirbagStatus.AirbagDeployed", values=(1,), where="ecall.trigger[0]"
    )
    decoder = CanSignalDecoder.from_files(triggers=(crash,))
    (entry,) = [e for e in decoder.entries if e.target.path == CRASH_DETECTED]
    assert (entry.source, entry.origin) == ("AirbagStatus.AirbagDeployed", "ecall.trigger[0]")


RULE_ERRORS = [
    (
        {"kind": "crash", "signal": "ACU_01.Nope", "values": [1]},
        "ecall.trigger[0]: message ACU_01 has no signal 'Nope'",
    ),
    ({"kind": "crash", "signal": "ACU_01.CrashType", "values": ["BOOM"]}, "'BOOM' is neither a VAL_ name of CrashType"),
    ({"kind": "crash", "signal": "ACU_01.CrashType", "values": [True]}, "names no value of the 3-bit CrashType"),
    ({"kind": "crash", "signal": "Vehicle.Speed.X", "values": [1]}, "signal Vehicle.Speed.X is fed by no entry"),
    # Rules that resolve but could never fire: a legal-eCall car must not start with a dead trigger.
    ({"kind": "crash", "signal": "ACU_01.Decel", "at_least": float("nan")}, "must be finite numbers"),
    ({"kind": "crash", "signal": "ACU_01.Decel", "at_least": 9, "at_most": 3}, "at_least <= at_most"),
    ({"kind": "crash", "signal": "ACU_01.CrashType", "at_least": 100}, "this trigger could never fire"),
    ({"kind": "crash", "signal": "ACU_01.Decel", "at_least": 900}, "carries 0 .. 500 m/s2"),
    ({"kind": "crash", "signal": "Vehicle.LowVoltageSystemState", "values": ["ONN"]}, "could never fire"),
    ({"kind": "crash", "signal": "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", "at_least": 1}, "need a numeric"),
]


@pytest.mark.parametrize(("fields", "reason"), RULE_ERRORS)
def test_trigger_rules_are_checked_against_the_database(car: Path, fields: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        decoder_for(car, triggers=(rule(**fields),))
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("table", "reason"),
    [
        (
            {"kind": "fire", "signal": "A.B", "values": [1]},
            "ecall.trigger[0].kind: got 'fire'; expected one of crash, airbag, sos",
        ),
        (
            {"kind": "crash", "signal": "AB", "values": [1]},
            "ecall.trigger[0].signal: got 'AB'; expected \"Message.Signal\"",
        ),
        ({"kind": "crash", "signal": "A.B"}, "give either values = [...] or at_least / at_most, not both or neither"),
        ({"kind": "crash", "signal": "A.B", "values": [1], "at_least": 2}, "not both or neither"),
        ({"kind": "crash", "signal": "A.B", "values": [1], "hold_s": 1}, "only a sos rule has a hold time"),
        ({"kind": "crash", "signal": "A.B", "values": [1], "debounce": 1}, "ecall.trigger[0]: unknown key(s) debounce"),
    ],
)
def test_trigger_rule_syntax_errors(table: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EcallConfig.from_table({"port": "x", "trigger": [table]})
    assert reason in str(caught.value)


def test_one_rule_per_kind() -> None:
    two = [{"kind": "crash", "signal": "A.B", "values": [1]}, {"kind": "crash", "signal": "A.C", "values": [1]}]
    with pytest.raises(ConfigError, match=r"ecall.trigger\[1\]: a second crash rule"):
        EcallConfig.from_table({"port": "x", "trigger": two})


FLAG_DBC = """VERSION ""
BS_:
BU_: ACU TCU
BO_ 400 Flags: 8 ACU
 SG_ Sos : 0|1@1+ (1,0) [0|1] "" TCU
 SG_ SignedCrash : 1|1@1- (1,0) [-1|0] "" TCU
 SG_ Level : 8|32@1- (1,0) [0|0] "" TCU
VAL_ 400 Sos {names} ;
SIG_VALTYPE_ 400 Level : 1;
"""


@pytest.mark.parametrize(
    "names",
    [
        '0 "Pressed" 1 "Not pressed"',  # raw 1 says "not"
        '0 "Open" 1 "Shut"',  # raw 1 says no, raw 0 says yes
        '0 "Zustand_A" 1 "Zustand_B"',  # names nobody can read as yes or no
        '0 "NO CRASH" 1 "None"',
    ],
)
def test_a_flag_whose_value_names_do_not_say_raw_1_is_true_needs_explicit_values(tmp_path: Path, names: str) -> None:
    (tmp_path / "car.dbc").write_text(FLAG_DBC.format(names=names))
    with pytest.raises(ConfigError, match="do not say that raw 1 means true"):
        decoder_for(tmp_path, '[extension]\n"Flags.Sos" = "Vehicle.Cabin.SosButton.IsPressed"\n')


def test_a_flag_named_plainly_maps_by_default_and_a_signed_flag_reads_minus_one_as_true(tmp_path: Path) -> None:
    (tmp_path / "car.dbc").write_text(FLAG_DBC.format(names='0 "NOT_PRESSED" 1 "PRESSED"'))
    mapping = (
        '[extension]\n"Flags.Sos" = "Vehicle.Cabin.SosButton.IsPressed"\n'
        '"Flags.SignedCrash" = "Vehicle.Safety.CrashDetected"\n'
    )
    decoder = decoder_for(tmp_path, mapping)
    decoded = decode(decoder, 400, bytes([0b11, 0, 0, 0, 0, 0, 0, 0]))
    assert decoded["Vehicle.Cabin.SosButton.IsPressed"] == (True, Quality.GOOD)
    assert decoded["Vehicle.Safety.CrashDetected"] == (True, Quality.GOOD)  # raw -1 of a signed 1-bit signal


@pytest.mark.parametrize("level", [float("nan"), float("inf"), float("-inf")])
def test_a_nan_or_infinite_float_signal_is_an_invalid_reading_never_a_crash(tmp_path: Path, level: float) -> None:
    (tmp_path / "car.dbc").write_text(FLAG_DBC.format(names='0 "OFF" 1 "ON"'))
    mapping = '[vss]\n"Flags.Level" = { path = "Vehicle.Speed", unit = "km/h" }\n'
    decoder = decoder_for(tmp_path, mapping)
    data = bytes([0]) + struct.pack("<f", level) + bytes(3)
    _value, quality = decode(decoder, 400, data)["Vehicle.Speed"]
    assert quality is Quality.INVALID


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ('{ path = "Vehicle.LowVoltageSystemState", invalid = [1.7] }', "1.7 is neither a VAL_ name"),
        ('{ path = "Vehicle.LowVoltageSystemState", invalid = [[1]] }', "[1] is neither a VAL_ name"),
        ('{ path = "Vehicle.LowVoltageSystemState", invalid = [inf] }', "inf is neither a VAL_ name"),
    ],
)
def test_odd_raw_values_in_a_mapping_are_config_errors_never_tracebacks(car: Path, entry: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(reason)):
        decoder_for(car, f'[vss]\n"ZV_02.Ignition" = {entry}\n')


def test_a_signal_with_a_zero_factor_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "car.dbc").write_text(FLAG_DBC.format(names='0 "OFF" 1 "ON"').replace("(1,0) [0|0]", "(0,0) [0|100]"))
    with pytest.raises(ConfigError, match="factor 0 and offset 0 do not make a physical value"):
        decoder_for(tmp_path, '[vss]\n"Flags.Level" = { path = "Vehicle.Speed", unit = "km/h" }\n')
