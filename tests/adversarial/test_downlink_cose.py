"""Signed downlink (provisioning files, measure orders) against hostile and absurd input.

Every message gives exactly one answer with a precise reason, nothing raises out of the handlers, and
nothing is stored that a later boot, tick or backend could not handle. Two attackers: one without the
backend key (unsigned garbage, odd protected headers) and the backend key itself signing absurd values
(a bug, a hand-made file, a compromised signing service).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cbor2
import pytest

from tcu.clock import ManualClock
from tcu.services.manager import ServiceManager
from telematics_wire.catalogue import Catalogue
from telematics_wire.cose import COSE_SIGN1_TAG, sign1
from telematics_wire.measure_order import MeasureCategory, MeasureOrder, encode_order
from telematics_wire.measure_plan import Fault, MeasureStep
from telematics_wire.provisioning import ProvisioningFile, encode_payload
from telematics_wire.records import Record, to_millis
from telematics_wire.terms import Booking, Term
from telematics_wire.vehicle_mode import VehicleMode
from tests.conftest import VIN
from tests.services.test_measures import KEY, Bench

BIGNUM = 10**5000  # past Python's 4,300-digit int-to-str limit: printing it raises ValueError
U64_MAX = 2**64 - 1
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
YEAR_10000_MS = to_millis(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)) + 1000


def _unsigned(protected: bytes, payload: bytes = b"\xa0") -> bytes:
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, b"\x00" * 64]))


# Unsigned messages an attacker can put on the topic: odd protected headers and odd framing.
UNSIGNED = {
    "bignum header": _unsigned(cbor2.dumps(BIGNUM)),
    "bignum alg": _unsigned(cbor2.dumps({1: BIGNUM})),
    "negative bignum alg": _unsigned(cbor2.dumps({1: -BIGNUM})),
    "bool label": _unsigned(cbor2.dumps({True: -8})),
    "float alg": _unsigned(cbor2.dumps({1: float("nan")})),
    "tagged header": _unsigned(cbor2.dumps(cbor2.CBORTag(2, b"\xff" * 600))),
    "cyclic header": _unsigned(bytes.fromhex("d81c81d81d00")),
    "deep header": _unsigned(b"\x81" * 200 + b"\x00"),
    "header with trailing bytes": _unsigned(cbor2.dumps({1: -8}) + b"\x00"),
    "header with duplicate keys": _unsigned(bytes.fromhex("a2012720") + b""),
    "datetime tag": _unsigned(cbor2.dumps(datetime(2026, 1, 1, tzinfo=UTC))),
    "message with trailing bytes": _unsigned(cbor2.dumps({1: -8})) + b"\x00",
    "bignum message": cbor2.dumps(BIGNUM),
    "bignum tag number": bytes.fromhex("db ffffffffffffffff 00".replace(" ", "")),
    "empty": b"",
}


class Provisioning:
    def __init__(self, path: Path, clock: ManualClock) -> None:
        self.path = path
        self.clock = clock
        self.reports: list[Record] = []
        self.manager = self.boot()

    def boot(self) -> ServiceManager:
        manager = ServiceManager(
            vin=VIN,
            state_file=self.path,
            verify_key=KEY.verify_key,
            legal_ecall=False,
            clock=self.clock,
            catalogue=Catalogue.load(),
            report=self.reports.append,
        )
        manager.load()
        return manager

    def results(self) -> list[dict[str, Any]]:
        return [dict(r.body) for r in self.reports if r.body["type"] == "provisioning_result"]


@pytest.fixture
def provisioning(tmp_path: Path, clock: ManualClock) -> Provisioning:
    return Provisioning(tmp_path / "provisioning.cose", clock)


@pytest.fixture
async def bench(tmp_path: Path, clock: ManualClock) -> Bench:
    return await Bench(tmp_path, clock).start()


def _payload(**changes: Any) -> dict[str, Any]:
    file = ProvisioningFile(
        vin=VIN,
        version=3,
        issued=NOW,
        expires=NOW + timedelta(days=30),
        bookings=(Booking(code="6AE", term=Term.UNLIMITED, start=NOW.date()),),
    )
    payload: dict[str, Any] = cbor2.loads(encode_payload(file))
    payload.update(changes)
    return payload


def _service(**changes: Any) -> dict[str, Any]:
    return {"code": "STORE-CONNECTED", "term": "1y", "start": "2026-11-01", **changes}


# Correctly signed files with absurd values: (payload changes, words the reason must contain).
ABSURD_FILES = {
    "expires 2^64-1": ({"expires": U64_MAX}, "'expires' must lie between 1970-01-01 and 9999-12-31"),
    "expires bignum": ({"expires": BIGNUM}, "an integer of"),
    "expires after 9999": ({"expires": YEAR_10000_MS}, "'expires' must lie between"),
    "issued negative": ({"issued": -1}, "'issued' must lie between"),
    "issued float": ({"issued": 1.5e12}, "'issued' must be integer milliseconds"),
    "version 2^63": ({"version": 2**63}, "'version' must lie in 1..9223372036854775807"),
    "version bignum": ({"version": -BIGNUM}, "'version' must lie in"),
    "version true": ({"version": True}, "'version' must be an integer, got True"),
    "version 1.0": ({"version": 1.0}, "'version' must be an integer, got 1.0"),
    "suspended true": ({"suspended": True}, "'suspended' must be an array of booked codes, got True"),
    "suspended bignum": ({"suspended": [BIGNUM]}, "must hold option codes as text, got an integer of"),
    "suspended unbooked": ({"suspended": ["6AM"]}, "names '6AM', which the file does not book"),
    "suspended twice": (
        {"services": [_service(), _service(code="6AE", term="unlimited")], "suspended": ["6AE", "6AE"]},
        "must be sorted and without repeats",
    ),
    "suspended too many": ({"suspended": ["6AE"] * 1000}, "names 1000 codes, but only 1 are booked"),
    "old payment_default flag": ({"suspended": None, "payment_default": True}, "'suspended' must be an array"),
    "start in 9999": ({"services": [_service(start="9999-06-01")]}, "ends after the year 9999"),
    "extension true": ({"services": [_service(extensions=[True])]}, "each extension must be a map"),
    "extension months true": (
        {"services": [_service(extensions=[{"months": True, "bought": "2027-01-01"}])]},
        "each extension must be a map",
    ),
    "extension bought in 9999": (
        {"services": [_service(extensions=[{"months": 12, "bought": "9999-06-01"}])]},
        "ends after the year 9999",
    ),
    "extension bought bignum": (
        {"services": [_service(extensions=[{"months": 12, "bought": BIGNUM}])]},
        "bought must be a YYYY-MM-DD text string, got an integer of",
    ),
    "term 3y": ({"services": [_service(term="3y")]}, "unknown term '3y'"),
    "sale 1": ({"services": [_service(cancelled_on="2027-01-01", sale=1)]}, "sale must be true or false, got 1"),
    "first_registration bignum": ({"first_registration": BIGNUM}, "first_registration must be a YYYY-MM-DD"),
    "first_registration far": (
        {"first_registration": "9999-06-01", "services": [_service(code="6AM", term="2+1y")]},
        "ends after the year 9999",
    ),
    "start bignum": ({"services": [_service(start=BIGNUM)]}, "an integer of"),
    "term bignum": ({"services": [_service(term=BIGNUM)]}, "'term' must be a text string, got an integer of"),
    "vin bignum": ({"vin": BIGNUM}, "'vin' must be a text string"),
    "services tagged": ({"services": cbor2.CBORTag(258, [1])}, "tag 258 is not allowed"),
}


@pytest.mark.parametrize("message", UNSIGNED.values(), ids=UNSIGNED.keys())
async def test_unsigned_garbage_gives_one_rejection_on_each_topic(
    message: bytes, provisioning: Provisioning, bench: Bench
) -> None:
    await provisioning.manager.receive(message)
    await bench.engine.receive(message)

    [result] = provisioning.results()
    assert result["status"] == "rejected"
    assert result["code"] in ("malformed", "bad_signature")
    assert result["version"] is None  # nothing read from an unverified message is trusted
    assert len(result["reason"]) < 300
    [answer] = [r.body for r in bench.reports]
    assert answer["status"] == "rejected"
    assert answer["measure_id"] == "?"
    assert answer["attempt"] is None
    assert not provisioning.path.exists()


@pytest.mark.parametrize(("changes", "reason"), ABSURD_FILES.values(), ids=ABSURD_FILES.keys())
async def test_signed_absurd_file_is_refused_with_the_reason_and_not_stored(
    changes: dict[str, Any], reason: str, provisioning: Provisioning
) -> None:
    message = sign1(cbor2.dumps(_payload(**changes)), KEY)
    await provisioning.manager.receive(message)

    [result] = provisioning.results()
    assert (result["status"], result["code"]) == ("rejected", "malformed")
    assert reason in result["reason"]
    assert not provisioning.path.exists()
    provisioning.manager.refresh()  # a tick after the refusal: still fine
    provisioning.boot()  # and a reboot


async def test_a_refused_file_for_this_vehicle_names_its_version_but_never_another_vehicles(
    provisioning: Provisioning,
) -> None:
    await provisioning.manager.receive(sign1(cbor2.dumps(_payload(expires=U64_MAX)), KEY))
    await provisioning.manager.receive(sign1(cbor2.dumps(_payload(vin="WVWZZZ1JZXW000002", version=7, sim=5)), KEY))
    assert [(r["version"], r["code"]) for r in provisioning.results()] == [(3, "malformed"), (None, "other_vehicle")]


async def test_the_far_edges_of_the_time_range_are_accepted(provisioning: Provisioning) -> None:
    last = to_millis(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))
    await provisioning.manager.receive(sign1(cbor2.dumps(_payload(issued=0, expires=last)), KEY))
    assert [(r["status"], r["version"]) for r in provisioning.results()] == [("applied", 3)]
    assert provisioning.boot().entitlements.version == 3


async def test_a_retained_poison_file_delivered_again_is_answered_once(provisioning: Provisioning) -> None:
    poison = sign1(cbor2.dumps(_payload(expires=U64_MAX)), KEY)
    for _ in range(5):  # one delivery per reconnect
        await provisioning.manager.receive(poison)
        await provisioning.manager.receive(UNSIGNED["bignum header"])
    assert [r["code"] for r in provisioning.results()] == ["malformed", "malformed"]


def _order(**changes: Any) -> bytes:
    order = MeasureOrder(
        vin=VIN,
        measure_id="M-9",
        attempt=2,
        category=MeasureCategory.FAULT_FIX,
        fault=Fault(ref="TICKET-9", service="gateway"),
        allowed_states=frozenset({VehicleMode.PARKED}),
        steps=(MeasureStep(changes={"gateway.firewall_rules": "v13"}, expected_ms=1000),),
        impairs=(),
        issued=NOW,
        deadline=NOW + timedelta(days=1),
    )
    payload: dict[str, Any] = cbor2.loads(encode_order(order))
    payload.update(changes)
    return sign1(cbor2.dumps(payload), KEY)


def _step(*, n: int = 1, **fields: Any) -> dict[str, Any]:
    """Payload changes: `n` steps, each of one gateway change taking 1 ms unless `fields` say otherwise."""
    keys = ("gateway.firewall_rules", "gateway.ids_signatures")
    base = [{"changes": {keys[i % 2] + ("" if i < 2 else f".{i}"): "x"}, "expected_ms": 1} for i in range(n)]
    base[0] = {"changes": {"gateway.firewall_rules": "v13"}, "expected_ms": 1, **fields}
    return {"steps": base}


# Correctly signed orders with absurd values: (payload changes, (measure_id, attempt) the answer names,
# words the reason must contain).
ABSURD_ORDERS = {
    "deadline 2^64-1": ({"deadline": U64_MAX}, ("M-9", 2), "'deadline' must lie between 1970-01-01 and 9999-12-31"),
    "deadline negative": ({"deadline": -(2**63)}, ("M-9", 2), "'deadline' must lie between"),
    "deadline bignum": ({"deadline": BIGNUM}, ("M-9", 2), "an integer of"),
    "issued after 9999": ({"issued": YEAR_10000_MS}, ("M-9", 2), "'issued' must lie between"),
    "attempt 2^63": ({"attempt": 2**63}, ("M-9", None), "'attempt' must lie in 1..9223372036854775807"),
    "attempt true": ({"attempt": True}, ("M-9", None), "'attempt' must be an integer, got True"),
    "attempt 2.0": ({"attempt": 2.0}, ("M-9", None), "'attempt' must be an integer, got 2.0"),
    "measure_id bignum": ({"measure_id": BIGNUM}, ("?", 2), "'measure_id' must be a text string"),
    "measure_id huge": ({"measure_id": "M" * 5000}, ("?", 2), "measure_id must be 1 to 128 characters"),
    "expected_ms bignum": (
        _step(expected_ms=BIGNUM),
        ("M-9", 2),
        "'expected_ms' must lie in 0..600000, got an integer of",
    ),
    "expected_ms 2^64": (_step(expected_ms=2**64), ("M-9", 2), "'expected_ms' must lie in 0..600000"),
    "expected_ms nan": (_step(expected_ms=float("nan")), ("M-9", 2), "'expected_ms' must be an integer, got nan"),
    "expected_ms true": (_step(expected_ms=True), ("M-9", 2), "'expected_ms' must be an integer, got True"),
    "expected_ms 600.0": (_step(expected_ms=600.0), ("M-9", 2), "'expected_ms' must be an integer, got 600.0"),
    "expected_ms negative": (_step(expected_ms=-1), ("M-9", 2), "'expected_ms' must lie in 0..600000, got -1"),
    "over the cap": (_step(expected_ms=600_000, n=2), ("M-9", 2), "600.001 s in all, more than the 600 s"),
    "65 steps": (_step(n=65), ("M-9", 2), "steps must be an array of 1 to 64 steps"),
    "a step's unknown field": (_step(extra=1), ("M-9", 2), "step 1 must have exactly the fields changes, expected_ms"),
    "unknown field": ({"changes": {"gateway.firewall_rules": "v13"}}, ("M-9", 2), "unknown field 'changes'"),
    "fault missing": ({"fault": None}, ("M-9", 2), "fault must be a map of ref, service, got None"),
    "fault bignum": ({"fault": {"ref": BIGNUM, "service": "gateway"}}, ("M-9", 2), "'ref' must be a text string"),
    "impairs bignum": ({"impairs": [BIGNUM]}, ("M-9", 2), "impairs must be an array of service codes"),
    "value bignum": (_step(changes={"gateway.firewall_rules": BIGNUM}), ("M-9", 2), "an integer outside 64 bits"),
    "value nan": (_step(changes={"gateway.firewall_rules": float("nan")}), ("M-9", 2), "not a finite number"),
    "value of another type": (_step(changes={"gateway.firewall_rules": True}), ("M-9", 2), "takes a str value"),
    "states bignum": ({"allowed_states": [BIGNUM]}, ("M-9", 2), "unknown category or vehicle state"),
}


@pytest.mark.parametrize(("changes", "ids", "reason"), ABSURD_ORDERS.values(), ids=ABSURD_ORDERS.keys())
async def test_signed_absurd_order_is_refused_naming_the_order(
    changes: dict[str, Any], ids: tuple[str, int | None], reason: str, bench: Bench
) -> None:
    await bench.engine.receive(_order(**changes))

    [answer] = [r.body for r in bench.reports]
    assert answer["status"] == "rejected"
    assert (answer["measure_id"], answer["attempt"]) == ids
    assert reason in answer["reason"]
    assert bench.engine.idle
    assert not bench.journal_path.exists()  # nothing recorded: a later, sane attempt is not a replay


def _with_duplicate_version(payload: bytes) -> bytes:
    """The payload map with a second `version` entry: two decoders could read two different versions."""
    assert payload[0] == 0xA8  # a map of eight entries
    return b"\xa9" + payload[1:] + cbor2.dumps("version") + cbor2.dumps(99)


async def test_signed_but_ambiguous_encodings_are_refused(provisioning: Provisioning) -> None:
    payload = cbor2.dumps(_payload())
    await provisioning.manager.receive(sign1(_with_duplicate_version(payload), KEY))
    await provisioning.manager.receive(sign1(payload + b"\x00", KEY))  # trailing bytes inside the signed payload
    await provisioning.manager.receive(sign1(payload, KEY) + b"\x00")  # and after the signed message

    reasons = [(r["code"], r["reason"]) for r in provisioning.results()]
    assert [code for code, _ in reasons] == ["malformed"] * 3
    assert "Duplicate map key" in reasons[0][1]
    assert "1 byte(s) after the CBOR item" in reasons[1][1]
    assert "1 byte(s) after the CBOR item" in reasons[2][1]
    assert not provisioning.path.exists()
