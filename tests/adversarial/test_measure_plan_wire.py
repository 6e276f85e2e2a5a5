"""A signed measure order whose plan (fault, steps, durations, impairs) holds anything at all: the vehicle
answers with one refusal naming the order, or runs a plan the rule allows — never a crash, never a
change outside the plan, never more than the 10-minute cap declared."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from telematics_wire.cose import sign1
from telematics_wire.ecu_keys import KeyClass, load_key_specs
from telematics_wire.errors import RejectedMessageError
from telematics_wire.measure_order import MeasureCategory, MeasureOrder, RejectedOrderError, encode_order, verify_order
from telematics_wire.measure_plan import ATTEMPT_CAP_MS, Fault, MeasureStep, planned_ms
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import VIN
from tests.services.test_measures import KEY

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SPECS = load_key_specs()
MAX_REASON = 1000

hostile_numbers = st.one_of(
    st.sampled_from([0, 1, ATTEMPT_CAP_MS - 1, ATTEMPT_CAP_MS, ATTEMPT_CAP_MS + 1, 2**63 - 1, 2**63, 2**64, -1]),
    st.sampled_from([True, False, 600.0, float("nan"), float("inf"), -0.0, 10**40]),
    st.integers(),
    st.floats(),
)
hostile_values = st.one_of(
    hostile_numbers, st.text(max_size=8), st.none(), st.binary(max_size=4), st.lists(st.integers(), max_size=2)
)
keys = st.sampled_from(sorted(SPECS)) | st.text(max_size=10) | st.integers()
steps = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"changes": st.dictionaries(keys, hostile_values, max_size=3), "expected_ms": hostile_numbers}
        ),
        st.dictionaries(st.sampled_from(["changes", "expected_ms", "step_s", "x"]), hostile_values, max_size=3),
        hostile_values,
    ),
    max_size=4,
)
faults = st.one_of(
    st.fixed_dictionaries(
        {
            "ref": st.text(max_size=4) | hostile_values,
            "service": st.sampled_from(["gateway", "navigation", "brakes", "ecall", "warp"]) | hostile_values,
        }
    ),
    hostile_values,
)
impairs = st.lists(st.sampled_from(["6AP", "lights", "airbag", ""]) | hostile_values, max_size=3) | hostile_values


def _payload(**fields: Any) -> bytes:
    order = MeasureOrder(
        vin=VIN,
        measure_id="M-7",
        attempt=3,
        category=MeasureCategory.SECURITY,
        fault=Fault(ref="CVE-2026-0001", service="gateway"),
        allowed_states=frozenset({VehicleMode.PARKED}),
        steps=(MeasureStep(changes={"gateway.firewall_rules": "v13"}, expected_ms=1000),),
        impairs=(),
        issued=NOW,
        deadline=NOW + timedelta(days=1),
    )
    payload: dict[str, Any] = cbor2.loads(encode_order(order))
    payload.update(fields)
    return sign1(cbor2.dumps(payload), KEY)


@settings(deadline=None, max_examples=400)
@given(steps=steps, fault=faults, impairs=impairs)
def test_any_signed_plan_gives_an_allowed_order_or_one_refusal_naming_it(steps: Any, fault: Any, impairs: Any) -> None:
    message = _payload(steps=steps, fault=fault, impairs=impairs)
    refusal: RejectedMessageError | None = None
    try:
        order = verify_order(message, KEY.verify_key, vin=VIN, now=NOW, specs=SPECS)
    except RejectedMessageError as exc:  # any other exception fails the test
        refusal = exc
    if refusal is not None:
        assert isinstance(refusal, RejectedOrderError)
        assert (refusal.measure_id, refusal.attempt) == ("M-7", 3)  # the backend can match the answer
        assert 0 < len(str(refusal)) < MAX_REASON
        return
    # Accepted: the plan is one the terms allow.
    assert planned_ms(order.steps) <= ATTEMPT_CAP_MS
    for step in order.steps:
        assert type(step.expected_ms) is int
        for key, value in step.changes.items():
            spec = SPECS[key]
            assert spec.key_class is KeyClass.SERVICE
            assert spec.owner == order.fault.service
            assert type(value) is type(spec.default)
    assert not {"lights", "airbag"} & set(order.impairs)
