"""The file history: publications, the vehicle's results booked against files, capability reports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import CapabilityReport, FileState, ResultStatus, VehicleResult
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import ManualClock
from tests.conftest import VIN


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ProvisioningStore]:
    store = ProvisioningStore(tmp_path / "backend.sqlite3")
    yield store
    store.close()


@pytest.fixture
def issuer(store: ProvisioningStore, clock: ManualClock) -> ProvisioningIssuer:
    return ProvisioningIssuer(store, signing_key=SigningKey.generate(), clock=clock, enrolled=lambda _vin: True)


def result(
    seq: int, status: str, version: int | None, *, code: str | None = None, reason: str | None = None
) -> VehicleResult:
    at = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    return VehicleResult(
        vin=VIN,
        seq=seq,
        created=at,
        received=at,
        version=version,
        status=ResultStatus(status),
        code=code,
        reason=reason,
    )


def _delivered(issuer: ProvisioningIssuer, store: ProvisioningStore, clock: ManualClock, *codes: str) -> None:
    for code in codes:
        issued = issuer.book(VIN, code, "unlimited")
        store.mark_published(VIN, issued.version, clock.now())


def test_applied_result_resolves_the_file_and_supersedes_older_unresolved_ones(issuer, store, clock) -> None:
    _delivered(issuer, store, clock, "6AE", "6AC", "6CP")
    booked = store.record_result(result(10, "applied", 2))
    assert booked is not None
    assert booked.attributed == 2
    assert [f.state for f in store.files(VIN)] == [FileState.SUPERSEDED, FileState.APPLIED, FileState.DELIVERED]
    assert store.files(VIN)[0].reason == "version 2 applied"
    assert store.record_result(result(10, "applied", 2)) is None  # the same record again: taken before


def test_rejected_result_keeps_code_and_reason(issuer, store, clock) -> None:
    _delivered(issuer, store, clock, "6AE")
    store.record_result(result(3, "rejected", 1, code="expired", reason="provisioning file version 1 expired at ..."))
    [file] = store.files(VIN)
    assert (file.state, file.code, file.reason) == (
        FileState.REJECTED,
        "expired",
        "provisioning file version 1 expired at ...",
    )


def test_a_result_without_version_is_booked_against_the_single_delivered_file_only(issuer, store, clock) -> None:
    _delivered(issuer, store, clock, "6AE")
    assert store.record_result(result(1, "rejected", None, code="bad_signature", reason="bad")).attributed == 1  # type: ignore[union-attr]
    _delivered(issuer, store, clock, "6AC", "6CP")
    unbooked = store.record_result(result(2, "rejected", None, code="bad_signature", reason="bad"))
    assert unbooked is not None
    assert unbooked.attributed is None
    assert [f.state for f in store.files(VIN)][1:] == [FileState.DELIVERED, FileState.DELIVERED]
    assert [(r.seq, r.attributed) for r in store.results(VIN)] == [(1, 1), (2, None)]


def test_applied_wins_over_a_rejection_booked_by_guess(issuer, store, clock) -> None:
    _delivered(issuer, store, clock, "6AE")
    store.record_result(result(1, "rejected", None, code="expired", reason="an older copy"))
    store.record_result(result(2, "already_applied", 1))
    [file] = store.files(VIN)
    assert (file.state, file.code, file.reason) == (FileState.APPLIED, None, None)


def test_deferred_result_notes_the_reason_and_keeps_the_file_delivered(issuer, store, clock) -> None:
    _delivered(issuer, store, clock, "6AE")
    store.record_result(result(1, "deferred", None, reason="an eCall is in progress"))
    [file] = store.files(VIN)
    assert (file.state, file.reason) == (FileState.DELIVERED, "deferred by the vehicle: an eCall is in progress")


def test_results_naming_no_known_file_or_an_unknown_status_are_only_logged(issuer, store, clock) -> None:
    _delivered(issuer, store, clock, "6AE")
    assert store.record_result(result(1, "applied", 7)).attributed is None  # type: ignore[union-attr]
    assert store.record_result(result(2, "exploded", 1)).status is ResultStatus.UNKNOWN  # type: ignore[union-attr]
    assert store.files(VIN)[0].state is FileState.DELIVERED
    assert len(store.results(VIN)) == 2


def test_publication_marks_pending_delivered_once_and_counts_every_publication(issuer, store, clock) -> None:
    issuer.book(VIN, "6AE", "unlimited")
    store.mark_published(VIN, 1, clock.now())
    clock.advance(60)
    store.mark_published(VIN, 1, clock.now())
    [file] = store.files(VIN)
    assert (file.state, file.publications, file.published) == (FileState.DELIVERED, 2, clock.now())
    assert file.changed == clock.now() - timedelta(seconds=60)
    assert store.awaiting_results() == {VIN: file.issued}


def test_the_newest_capability_report_by_vehicle_sequence_is_kept(store, clock) -> None:
    def report(seq: int, version: int) -> CapabilityReport:
        body = {"type": "capabilities", "provisioning_version": version}
        return CapabilityReport(vin=VIN, seq=seq, created=clock.now(), received=clock.now(), report=body)

    assert store.capabilities(VIN) is None
    assert store.set_capabilities(report(5, 2))
    assert not store.set_capabilities(report(4, 1))  # an older report drained late
    assert store.capabilities(VIN).report == {"type": "capabilities", "provisioning_version": 2}  # type: ignore[union-attr]
