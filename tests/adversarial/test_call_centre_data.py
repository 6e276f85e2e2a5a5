"""The call centre reads whatever a vehicle sent as an intelligent-call case: every bad field is named, the
good ones are kept, and nothing a vehicle sends makes the reader raise (it runs inside ingest)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from backend_stub.call_centre import CallCentreStub, parse_case
from telematics_wire.msd import encode, msd_from_fixes
from telematics_wire.msd_model import VehicleType
from telematics_wire.records import MAX_MILLIS, ReceivedRecord, RecordKind
from tests.conftest import OTHER_VIN, VIN

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def good_body(**changes: Any) -> dict[str, Any]:
    msd = encode(
        msd_from_fixes(
            [(48.1374, 11.5755)],
            heading_deg=None,
            automatic_activation=True,
            test_call=False,
            position_can_be_trusted=True,
            vehicle_type=VehicleType.M1,
            vin=VIN,
            number_of_passengers=2,
        )
    )
    body: dict[str, Any] = {
        "event": "call_centre_data",
        "session": 1,
        "call_type": "automatic",
        "trigger": "crash detected",
        "trigger_signal": "Vehicle.Safety.CrashDetected",
        "at_ms": 1_795_000_000_000,
        "number": "+498912345678",
        "fallback_to_112": True,
        "msd": msd,
        "msd_version": 2,
        "severity": "crash_detected",
        "occupants": {"belted": 2, "seats_known": 2},
        "vehicle": {"model": "BMW 320d", "colour": "Alpinweiss", "type": "M1", "propulsion": ["diesel"]},
        "signals": {"Vehicle.Speed": 87.0, "Vehicle.Safety.Airbag.IsDeployed": False},
    }
    body.update(changes)
    return body


def test_a_good_case_has_no_problems() -> None:
    case = parse_case(VIN, good_body(), NOW)
    assert case.problems == ()
    assert case.msd is not None
    assert (case.occupants_belted, case.colour, case.signals["Vehicle.Speed"]) == (2, "Alpinweiss", 87.0)


def test_hostile_fields_are_dropped_each_with_its_reason() -> None:
    body = good_body(
        at_ms=2**64,
        fallback_to_112=1,  # True == 1 in Python: not a bool
        occupants={"belted": True, "seats_known": 2},
        severity="catastrophic",
        call_type="x" * 10_000,
        signals={"Vehicle.Speed": math.nan, "Vehicle.Acceleration.Lateral": math.inf, 5: True},
        vehicle={"model": "\x1b[2J", "colour": "rot", "type": "M1", "propulsion": "diesel"},
    )
    case = parse_case(VIN, body, NOW)
    named = " | ".join(case.problems)
    for field in (
        "at_ms",
        "fallback_to_112",
        "occupants",
        "severity",
        "call_type",
        "vehicle.model",
        "vehicle.propulsion",
        "signal 'Vehicle.Speed'",
        "signal 5",
    ):
        assert field in named, field
    assert (case.at, case.fallback_to_112, case.occupants_belted, case.model) == (None, None, None, None)
    assert case.colour == "rot", "the good fields stay"
    assert case.msd is not None
    assert case.signals == {}


def test_an_msd_of_another_vehicle_or_that_does_not_decode_is_named() -> None:
    assert "names VIN" in " ".join(parse_case(OTHER_VIN, good_body(), NOW).problems)
    assert "does not decode" in " ".join(parse_case(VIN, good_body(msd=b"\xff" * 20), NOW).problems)
    assert "msd: got" in " ".join(parse_case(VIN, good_body(msd=b"\x00" * 141), NOW).problems)
    assert parse_case(VIN, good_body(at_ms=MAX_MILLIS), NOW).at is not None


def test_the_ingest_observer_keeps_running_on_garbage() -> None:
    centre = CallCentreStub()
    for body in ({"event": "call_centre_data"}, good_body(vehicle=None, signals=[1, 2]), {"event": "other"}):
        record = ReceivedRecord(vin=VIN, seq=1, kind=RecordKind.ECALL, kind_name="ecall", created=NOW, body=body)
        centre.on_record(record)
    assert len(centre.cases) == 2
    assert "at_ms" in " ".join(centre.cases[0].problems)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | st.binary(max_size=200),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
keys = st.sampled_from(list(good_body()))


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(keys, values, max_size=6))
def test_any_body_gives_a_case_never_an_exception(changes: dict[str, Any]) -> None:
    case = parse_case(VIN, good_body(**changes), NOW)
    assert case.vin == VIN
    case.row()
