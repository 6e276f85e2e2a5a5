from __future__ import annotations

from datetime import timedelta

import cbor2
import pytest
from nacl.signing import SigningKey

from tcu.clock import ManualClock
from tcu.errors import RejectedMessageError
from tcu.services.catalogue import Catalogue
from tcu.services.cose import sign1
from tcu.services.provisioning import verify_file
from tcu.services.terms import Term
from tests.conftest import OTHER_VIN, VIN
from tests.services.provisioning_helpers import booking, signed

CATALOGUE = Catalogue.load()
KEY = SigningKey(bytes(range(32)))


def _verify(message: bytes, clock: ManualClock, *, applied: bytes | None = None, version: int = 0, legal: bool = False):  # type: ignore[no-untyped-def]
    return verify_file(
        message,
        KEY.verify_key,
        vin=VIN,
        now=clock.now(),
        applied=applied,
        applied_version=version,
        legal_ecall_equipped=legal,
        catalogue=CATALOGUE,
    )


def test_a_valid_file_is_accepted_with_its_services(clock: ManualClock) -> None:
    message = signed(KEY, VIN, 3, clock.now(), booking("6AE"), booking("6NR", Term.YEAR_1, extensions=(6,)))
    accepted = _verify(message, clock, version=2)
    assert not accepted.already_applied
    assert accepted.file.codes == {"6AE", "6NR"}
    assert accepted.file.booking("6NR").extensions == (6,)  # type: ignore[union-attr]


def test_identical_redelivery_of_the_applied_file_is_acknowledged_not_reapplied(clock: ManualClock) -> None:
    message = signed(KEY, VIN, 3, clock.now(), booking("6AE"))
    assert _verify(message, clock, applied=message, version=3).already_applied


def _code(message: bytes, clock: ManualClock, **kwargs: object) -> str:
    with pytest.raises(RejectedMessageError) as caught:
        _verify(message, clock, **kwargs)  # type: ignore[arg-type]
    return caught.value.code


def test_forged_file_is_refused(clock: ManualClock) -> None:
    forged = signed(SigningKey.generate(), VIN, 5, clock.now(), booking("6AE"))
    assert _code(forged, clock) == "bad_signature"


def test_tampered_payload_is_refused(clock: ManualClock) -> None:
    tag = cbor2.loads(signed(KEY, VIN, 5, clock.now(), booking("6AE")))
    protected, unprotected, payload, signature = tag.value
    tampered = payload.replace(b"6AE", b"6AP")
    assert (
        _code(cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, tampered, signature])), clock) == "bad_signature"
    )


@pytest.mark.parametrize("cut", [1, 10, 60])
def test_truncated_file_is_refused(clock: ManualClock, cut: int) -> None:
    message = signed(KEY, VIN, 5, clock.now(), booking("6AE"))
    assert _code(message[:-cut], clock) == "malformed"


def test_file_for_another_vehicle_is_refused(clock: ManualClock) -> None:
    assert _code(signed(KEY, OTHER_VIN, 5, clock.now(), booking("6AE")), clock) == "other_vehicle"


@pytest.mark.parametrize("version", [2, 3])
def test_old_or_replayed_version_is_refused(clock: ManualClock, version: int) -> None:
    applied = signed(KEY, VIN, 3, clock.now(), booking("6AE"))
    other = signed(KEY, VIN, version, clock.now(), booking("6AP"))
    assert _code(other, clock, applied=applied, version=3) == "old_version"


def test_expired_file_is_refused(clock: ManualClock) -> None:
    message = signed(KEY, VIN, 5, clock.now(), booking("6AE"), valid_for=timedelta(hours=1))
    clock.advance(3600)
    assert _code(message, clock) == "expired"


def test_oversize_file_is_refused_before_parsing(clock: ManualClock) -> None:
    assert _code(b"\xd2" + b"\x00" * 20_000, clock) == "oversize"


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        ({"type": "provisioning"}, "field 'version'"),
        ({"type": "provisioning", "version": 1, "vin": VIN}, "field 'services'"),
        ({"type": "other"}, "type 'provisioning'"),
        (
            {
                "type": "provisioning",
                "version": 1,
                "vin": VIN,
                "services": [{"code": "XXX", "term": "3y", "start": "2026-01-01"}],
            },
            "unknown service",
        ),
        (
            {
                "type": "provisioning",
                "version": 1,
                "vin": VIN,
                "services": [{"code": "6AE", "term": "7y", "start": "2026-01-01"}],
            },
            "unknown term",
        ),
        (
            {
                "type": "provisioning",
                "version": 1,
                "vin": VIN,
                "services": [{"code": "6AE", "term": "3y", "start": "soon"}],
            },
            "not a YYYY-MM-DD",
        ),
    ],
)
def test_schema_errors_are_refused_with_the_detail(clock: ManualClock, payload: dict[str, object], detail: str) -> None:
    with pytest.raises(RejectedMessageError, match=detail):
        _verify(sign1(cbor2.dumps(payload), KEY), clock)


@pytest.mark.parametrize(
    ("bookings", "sim", "legal", "reason"),
    [
        ((booking("6AE"),), "active", True, "removes legal eCall"),
        ((booking("6AE"), booking("6AF", Term.YEARS_3)), "active", True, "must be unlimited"),
        ((booking("6AF", Term.UNLIMITED),), "deactivated", True, "cannot be deactivated"),
        ((booking("6AE"), booking("6AF", Term.UNLIMITED)), "active", False, "not equipped"),
    ],
)
def test_forbidden_changes_are_refused(clock: ManualClock, bookings, sim: str, legal: bool, reason: str) -> None:  # type: ignore[no-untyped-def]
    message = signed(KEY, VIN, 5, clock.now(), *bookings, sim=sim)
    with pytest.raises(RejectedMessageError, match=reason) as caught:
        _verify(message, clock, legal=legal)
    assert caught.value.code == "forbidden_change"
