"""Fuzzing the signed downlink: provisioning files and measure orders, unsigned and signed with the real key.

Decoders may raise only the packages' own errors (TcuError or WireError subclasses); the vehicle's handlers raise
nothing at all and answer each message once, with a reason short enough to send. The signed cases are
the hard ones: the signature verifies, so every value reaches the field checks (bignums, tags, NaN,
bools for ints, dates at the end of time...).
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu.clock import ManualClock
from tcu.errors import TcuError
from tcu.services.ecu_config import EcuConfiguration
from tcu.services.manager import ServiceManager
from tcu.services.measure_journal import MeasureJournal
from tcu.services.measures import MeasureEngine
from tcu.vehicle.state import VehicleState
from telematics_wire.catalogue import Catalogue
from telematics_wire.cose import sign1, verify1
from telematics_wire.ecu_keys import load_key_specs
from telematics_wire.errors import WireError
from telematics_wire.measure_order import MeasureCategory, MeasureOrder, encode_order, verify_order
from telematics_wire.measure_plan import Fault, MeasureStep
from telematics_wire.provisioning import ProvisioningFile, encode_payload, sign_file, verify_file
from telematics_wire.records import Record
from telematics_wire.terms import Booking, Extension, Term
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import VIN
from tests.services.test_measures import KEY

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
CATALOGUE = Catalogue.load()
SPECS = load_key_specs()
FUZZ = settings(max_examples=200, deadline=None)
MAX_REASON = 600  # every reason is sent back to the backend in a record: it must stay small


class Huge(int):
    """An integer past Python's 4,300-digit int-to-str limit, printable in a falsifying example: the
    decoders see a plain int (cbor2 encodes it as a bignum, tag 2 or 3)."""

    def __new__(cls, digits: int) -> Huge:
        return super().__new__(cls, -(10**digits) if digits % 2 else 10**digits)

    def __repr__(self) -> str:
        return f"<integer of {self.bit_length()} bits>"


EDGE_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(EDGE_INTS),
    st.integers(min_value=4400, max_value=4600).map(Huge),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=24),
    st.text(max_size=24),
)
# Numbers where numbers are expected, at and around every limit (times, versions, attempts, step_s).
numbers = st.one_of(
    st.sampled_from([*EDGE_INTS, 253_402_300_799_999, 253_402_300_800_000, True, False, 1.0, -0.0]),
    st.integers(min_value=4400, max_value=4600).map(Huge),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
)
cbor_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=12), st.integers(-30, 30)), inner, max_size=5),
        st.builds(cbor2.CBORTag, st.integers(min_value=0, max_value=2**64 - 1), inner),
        st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 4, 5, 18, 25, 28, 29, 30, 35, 258, 55799]), inner),
    ),
    max_leaves=20,
)


def _valid_file() -> dict[str, Any]:
    file = ProvisioningFile(
        vin=VIN,
        version=3,
        issued=NOW,
        expires=NOW + timedelta(days=30),
        bookings=(
            Booking(
                code="6AM",
                term=Term.YEARS_2_PLUS_1,
                start=NOW.date(),
                first_registration=NOW.date(),
                extensions=(Extension(months=6, bought=NOW.date()),),
            ),
        ),
        first_registration=NOW.date(),
    )
    return dict(cbor2.loads(encode_payload(file)))


def _valid_order() -> dict[str, Any]:
    order = MeasureOrder(
        vin=VIN,
        measure_id="M-1",
        attempt=1,
        category=MeasureCategory.FAULT_FIX,
        fault=Fault(ref="TICKET-1", service="gateway"),
        allowed_states=frozenset({VehicleMode.PARKED}),
        steps=(MeasureStep(changes={"gateway.firewall_rules": "v13"}, expected_ms=1000),),
        impairs=("6AP",),
        issued=NOW,
        deadline=NOW + timedelta(days=1),
    )
    return dict(cbor2.loads(encode_order(order)))


def _mutated(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The valid payload with one or two fields replaced by arbitrary CBOR, or one dropped: every other
    field stays valid, so the odd value reaches its own check instead of an earlier refusal."""
    keys = sorted(valid)

    def mutate(replaced: dict[str, Any], dropped: str | None) -> dict[str, Any]:
        return {k: replaced.get(k, v) for k, v in valid.items() if k != dropped}

    replaced = st.dictionaries(st.sampled_from(keys), numbers | cbor_values, min_size=1, max_size=2)
    return st.builds(mutate, replaced, st.none() | st.sampled_from(keys))


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value)


# A services entry mutated: the part of a file with the most rules (terms, dates, extensions).
service_entries = st.fixed_dictionaries(
    {
        "code": st.sampled_from(["6AE", "6AF", "6AM"]) | cbor_values,
        "term": st.sampled_from([t.value for t in Term]) | cbor_values,
        "start": st.sampled_from(["9999-12-01", "0001-01-01", "2026-11-01"]) | cbor_values,
        "extensions": st.lists(
            st.fixed_dictionaries(
                {
                    "months": st.sampled_from([1, 6, 12, True]) | cbor_values,
                    "bought": st.sampled_from(["9999-12-01", "2026-11-01"]) | cbor_values,
                }
            )
            | cbor_values,
            max_size=3,
        ),
    }
)
payload_bytes = st.one_of(
    st.binary(max_size=512),
    cbor_values.map(_dumps),
    _mutated(_valid_file()).map(_dumps),
    _mutated(_valid_order()).map(_dumps),
    service_entries.map(lambda service: _dumps({**_valid_file(), "services": [service]})),
)


def _verify_file(message: bytes) -> None:
    verify_file(
        message,
        KEY.verify_key,
        vin=VIN,
        now=NOW,
        applied=None,
        applied_version=0,
        legal_ecall_equipped=False,
        catalogue=CATALOGUE,
    )


def _decoders_raise_only_our_errors(message: bytes) -> None:
    for decode in (
        _verify_file,
        lambda m: verify_order(m, KEY.verify_key, vin=VIN, now=NOW, specs=SPECS),
        lambda m: verify1(m, KEY.verify_key, max_bytes=16_384),
    ):
        refusal = None
        try:
            decode(message)
        except (TcuError, WireError) as exc:  # anything else fails the test
            refusal = str(exc)
        assert refusal is None or len(refusal) < MAX_REASON


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_a_value_or_our_error(message: bytes) -> None:
    _decoders_raise_only_our_errors(message)


@FUZZ
@given(cbor_values)
def test_arbitrary_cbor_gives_a_value_or_our_error(value: Any) -> None:
    _decoders_raise_only_our_errors(_dumps(value))
    _decoders_raise_only_our_errors(_dumps(cbor2.CBORTag(18, value)))


@FUZZ
@given(
    cbor_values | st.dictionaries(st.integers(-3, 5), cbor_values, max_size=3),
    st.just({}) | cbor_values,
    st.binary(min_size=64, max_size=64) | st.binary(max_size=80),
)
def test_arbitrary_cose_structure_gives_a_value_or_our_error(
    protected: Any, unprotected: Any, signature: bytes
) -> None:
    for header in (_dumps(protected), b"\xa1\x01\x27"):
        _decoders_raise_only_our_errors(_dumps(cbor2.CBORTag(18, [header, unprotected, b"\xa0", signature])))


@FUZZ
@given(payload_bytes)
def test_correctly_signed_arbitrary_payloads_give_a_value_or_our_error(payload: bytes) -> None:
    _decoders_raise_only_our_errors(sign1(payload, KEY))


@FUZZ
@given(payload_bytes, st.binary(max_size=4), st.integers(min_value=0, max_value=400))
def test_damaged_signed_messages_give_a_value_or_our_error(payload: bytes, noise: bytes, cut: int) -> None:
    message = sign1(payload, KEY)
    _decoders_raise_only_our_errors(message[:cut] + noise + message[cut + len(noise) :])


class Vehicle:
    """The two handlers as the agent wires them, in a fresh data directory."""

    def __init__(self, root: Path) -> None:
        self.clock = ManualClock(wall=NOW)
        self.reports: list[Record] = []
        self.root = root
        self.manager = self._manager()
        ecu = EcuConfiguration(root / "ecu.cbor", SPECS)
        self.engine = MeasureEngine(
            vin=VIN,
            verify_key=KEY.verify_key,
            ecu=ecu,
            journal=MeasureJournal(root / "measures.cbor"),
            state=VehicleState(),
            clock=self.clock,
            report=self.reports.append,
            coverage=lambda: True,
            ecall_active=lambda: False,
        )

    async def boot_and_receive(self, file: bytes, order: bytes) -> None:
        """The agent's boot (an interrupted measure is recovered first), then one message on each topic."""
        await self.engine.recover()
        await self.manager.receive(file)
        await self.engine.receive(order)

    def _manager(self) -> ServiceManager:
        manager = ServiceManager(
            vin=VIN,
            state_file=self.root / "provisioning.cose",
            verify_key=KEY.verify_key,
            legal_ecall=False,
            clock=self.clock,
            catalogue=CATALOGUE,
            report=self.reports.append,
        )
        manager.load()
        return manager

    def reboot_and_tick(self) -> None:
        """What was stored must still load, derive and tick years later."""
        self.manager = self._manager()
        self.clock.advance(10 * 365 * 86_400)
        self.manager.refresh()


@FUZZ
@given(payload_bytes)
def test_the_handlers_answer_every_signed_payload_once_and_never_raise(payload: bytes) -> None:
    message = sign1(payload, KEY)
    with tempfile.TemporaryDirectory() as root:
        vehicle = Vehicle(Path(root))
        asyncio.run(vehicle.boot_and_receive(message, message))
        provisioning = [r.body for r in vehicle.reports if r.body["type"] == "provisioning_result"]
        measures = [r.body for r in vehicle.reports if r.body["type"] == "measure_result"]
        assert len(provisioning) == 1
        assert len(measures) <= 1  # none when the order was accepted and queued
        assert vehicle.engine.idle == bool(measures)
        for body in provisioning + measures:
            assert len(body.get("reason") or "") < MAX_REASON
            for key in ("version", "attempt"):
                value = body.get(key)
                assert value is None or (type(value) is int and 1 <= value < 2**63)
        vehicle.reboot_and_tick()


def test_the_fuzzer_reaches_the_accepting_paths() -> None:
    """The mutation strategies start from valid payloads: check those are accepted, so the fuzz
    exercises the deep checks and not only the first refusal."""
    with tempfile.TemporaryDirectory() as root:
        vehicle = Vehicle(Path(root))
        asyncio.run(vehicle.boot_and_receive(sign1(_dumps(_valid_file()), KEY), sign1(_dumps(_valid_order()), KEY)))
        assert [r.body["status"] for r in vehicle.reports] == ["applied"]
        assert not vehicle.engine.idle
        vehicle.reboot_and_tick()
    assert sign_file  # the backend's encoder is what _valid_file mirrors
