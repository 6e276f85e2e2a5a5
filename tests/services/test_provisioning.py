from __future__ import annotations

from datetime import date, timedelta

import cbor2
import pytest
from nacl.signing import SigningKey

from tcu.clock import ManualClock
from telematics_wire.catalogue import Brand, Catalogue, VehicleFit
from telematics_wire.cose import sign1
from telematics_wire.errors import RejectedMessageError
from telematics_wire.provisioning import encode_payload, verify_file
from telematics_wire.terms import Extension, Term
from tests.conftest import OTHER_VIN, VIN
from tests.services.provisioning_helpers import FIRST_REGISTRATION, booking, signed

CATALOGUE = Catalogue.load()
KEY = SigningKey(bytes(range(32)))


def _verify(  # type: ignore[no-untyped-def]
    message: bytes,
    clock: ManualClock,
    *,
    applied: bytes | None = None,
    version: int = 0,
    legal: bool = False,
    catalogue: Catalogue = CATALOGUE,
):
    return verify_file(
        message,
        KEY.verify_key,
        vin=VIN,
        now=clock.now(),
        applied=applied,
        applied_version=version,
        legal_ecall_equipped=legal,
        catalogue=catalogue,
    )


def test_a_valid_file_is_accepted_with_its_services(clock: ManualClock) -> None:
    extension = Extension(months=6, bought=date(2027, 1, 5))
    message = signed(KEY, VIN, 3, clock.now(), booking("6AE"), booking("6AM", extensions=(extension,)))
    accepted = _verify(message, clock, version=2)
    assert not accepted.already_applied
    assert accepted.file.codes == {"6AE", "6AM"}
    assert accepted.file.first_registration == FIRST_REGISTRATION
    assert accepted.file.booking("6AM") == booking("6AM", extensions=(extension,))


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
                "services": [{"code": "XXX", "term": "unlimited", "start": "2026-01-01"}],
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
                "services": [{"code": "6AE", "term": "unlimited", "start": "soon"}],
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
        ((booking("6AE"), booking("6AF", Term.YEAR_1)), "active", True, "must be unlimited"),
        ((booking("6AF", Term.UNLIMITED),), "deactivated", True, "cannot be deactivated"),
        ((booking("6AE"), booking("6AF", Term.UNLIMITED)), "active", False, "not equipped"),
    ],
)
def test_forbidden_changes_are_refused(clock: ManualClock, bookings, sim: str, legal: bool, reason: str) -> None:  # type: ignore[no-untyped-def]
    message = signed(KEY, VIN, 5, clock.now(), *bookings, sim=sim)
    with pytest.raises(RejectedMessageError, match=reason) as caught:
        _verify(message, clock, legal=legal)
    assert caught.value.code == "forbidden_change"


def test_legal_ecall_is_never_suspended_for_payment_default(clock: ManualClock) -> None:
    message = signed(
        KEY, VIN, 5, clock.now(), booking("6AE"), booking("6AF", Term.UNLIMITED), suspended=frozenset({"6AF"})
    )
    with pytest.raises(RejectedMessageError, match=r"legal eCall \(6AF\) cannot be suspended") as caught:
        _verify(message, clock, legal=True)
    assert caught.value.code == "forbidden_change"


def test_the_suspended_codes_round_trip_sorted(clock: ManualClock) -> None:
    message = signed(KEY, VIN, 5, clock.now(), booking("6AM"), booking("6AE"), suspended=frozenset({"6AM", "6AE"}))
    file = _verify(message, clock, legal=False).file
    assert (file.suspended, file.payment_default) == ({"6AE", "6AM"}, True)
    assert cbor2.loads(encode_payload(file))["suspended"] == ["6AE", "6AM"]


def test_a_package_whose_services_run_from_first_registration_needs_it(clock: ManualClock) -> None:
    """612 booked 3m brings 2+1y services (Online-Streckenführung ...): without a first registration the
    vehicle could not compute them, so the file is refused, naming the service."""
    message = signed(KEY, VIN, 1, clock.now(), booking("612", Term.MONTHS_3), first_registration=None)
    with pytest.raises(RejectedMessageError, match=r"service 612, its service '.*' on 2\+1y: .*first registration"):
        _verify(message, clock)
    accepted = signed(KEY, VIN, 1, clock.now(), booking("612", Term.MONTHS_3))
    assert _verify(accepted, clock).file.codes == {"612"}


def test_a_paid_package_booked_unlimited_is_refused_by_the_vehicle(clock: ManualClock) -> None:
    catalogue = CATALOGUE.for_vehicle(VehicleFit(brand=Brand.BMW))
    message = signed(KEY, VIN, 1, clock.now(), booking("6AP", Term.UNLIMITED))
    with pytest.raises(
        RejectedMessageError, match=r"6AP \(Lademanagement\) is offered for BMW with the term\(s\) 2\+1y"
    ):
        _verify(message, clock, catalogue=catalogue)


def _payload(**service: object) -> bytes:
    entry = {"code": "6AM", "term": "2+1y", "start": "2026-11-01", **service}
    data = {
        "type": "provisioning",
        "version": 1,
        "vin": VIN,
        "issued": 0,
        "expires": 2**42,
        "first_registration": "2026-11-01",
        "services": [entry],
        "suspended": [],
        "sim": "active",
    }
    return sign1(cbor2.dumps(data), KEY)


def test_the_flat_three_year_term_is_refused_naming_the_accepted_terms(clock: ManualClock) -> None:
    with pytest.raises(RejectedMessageError) as caught:
        _verify(_payload(term="3y"), clock)
    assert caught.value.code == "malformed"
    reason = str(caught.value)
    assert "unknown term '3y'" in reason
    assert "2+1y" in reason
    for term in Term:
        assert term.value in reason  # the reason names every accepted term


@pytest.mark.parametrize(
    ("service", "detail"),
    [
        ({"extensions": [6]}, "each extension must be a map"),  # the month count of old, without a purchase date
        ({"extensions": [{"months": True, "bought": "2027-01-01"}]}, "each extension must be a map"),
        ({"extensions": [{"months": 2, "bought": "2027-01-01"}]}, "the store sells 12, 6 or 1"),
        ({"extensions": [{"months": 6, "bought": "2027-01-01", "x": 1}]}, "each extension must be a map"),
        ({"cancelled_on": "2028-10-13"}, "too late to stop the renewal"),  # the deadline was 2028-10-12
        ({"term": "1y", "cancelled_on": "2027-01-01"}, "does not renew and cannot be cancelled"),
        ({"term": "1y", "cancelled_on": "2027-01-01", "sale": 1}, "sale must be true or false"),
        ({"sale": True}, "needs the date of the notice"),
    ],
)
def test_extensions_and_notices_are_checked(clock: ManualClock, service: dict[str, object], detail: str) -> None:
    with pytest.raises(RejectedMessageError, match=detail) as caught:
        _verify(_payload(**service), clock)
    assert caught.value.code == "malformed"


def test_a_registration_anchored_term_needs_the_first_registration(clock: ManualClock) -> None:
    message = signed(KEY, VIN, 1, clock.now(), booking("6AE"))
    assert _verify(message, clock).file.first_registration == FIRST_REGISTRATION
    with pytest.raises(ValueError, match="runs from first registration"):
        signed(KEY, VIN, 1, clock.now(), booking("6AM"), first_registration=date(2026, 1, 1))
    data = cbor2.loads(cbor2.loads(_payload()).value[2])
    del data["first_registration"]
    with pytest.raises(RejectedMessageError, match=r"Erstzulassung"):
        _verify(sign1(cbor2.dumps(data), KEY), clock)


BUILT = CATALOGUE.for_vehicle(
    VehicleFit(brand=Brand.BMW, equipment=frozenset({"6AE", "6AC", "6AM"}), first_registration=FIRST_REGISTRATION)
)


def test_a_vehicle_accepts_what_it_is_built_with_at_an_offered_term(clock: ManualClock) -> None:
    message = signed(KEY, VIN, 1, clock.now(), booking("6AE"), booking("6AC"), booking("6AM"), booking("6AF"))
    accepted = _verify(message, clock, legal=True, catalogue=BUILT)
    assert accepted.file.codes == {"6AE", "6AC", "6AM", "6AF"}


@pytest.mark.parametrize(
    ("bookings", "first_registration", "reason"),
    [
        ((booking("6AP"),), FIRST_REGISTRATION, "not built with option code 6AP"),
        ((booking("6AE", Term.MONTHS_3),), FIRST_REGISTRATION, r"offered for BMW with the term\(s\) unlimited"),
        ((booking("6AM", Term.YEAR_1),), FIRST_REGISTRATION, r"term\(s\) 2\+1y \(Laufzeit 3 Jahre\), not 1y"),
        ((booking("7GG", Term.UNLIMITED),), FIRST_REGISTRATION, "not offered for BMW"),  # a MINI code
        ((booking("6AE"),), date(2025, 1, 1), "this vehicle was first registered on 2026-11-01"),
    ],
)
def test_a_vehicle_refuses_a_file_that_does_not_fit_its_build(
    clock: ManualClock, bookings: tuple[object, ...], first_registration: date, reason: str
) -> None:
    message = signed(KEY, VIN, 1, clock.now(), *bookings, first_registration=first_registration)  # type: ignore[arg-type]
    with pytest.raises(RejectedMessageError, match=reason) as caught:
        _verify(message, clock, catalogue=BUILT)
    assert caught.value.code in ("not_offered", "forbidden_change")
    assert caught.value.version == 1  # booked against the file at the backend


def test_unstated_equipment_accepts_every_option_code_of_the_brand(clock: ManualClock) -> None:
    catalogue = CATALOGUE.for_vehicle(VehicleFit(brand=Brand.MINI))
    message = signed(KEY, VIN, 1, clock.now(), booking("7GG", Term.YEARS_2_PLUS_1), booking("6AG", Term.YEARS_2_PLUS_1))
    assert _verify(message, clock, catalogue=catalogue).file.codes == {"7GG", "6AG"}
    bmw_term = signed(KEY, VIN, 2, clock.now(), booking("6AG", Term.YEARS_5))  # eDrive: 5 years on a BMW only
    with pytest.raises(RejectedMessageError, match=r"offered for MINI with the term\(s\) 2\+1y"):
        _verify(bmw_term, clock, catalogue=catalogue)
