"""Provisioning on the backend: each vehicle's desired services, issued as versioned, signed files.

The backend owns the *desired state* of every vehicle — the booked services with their terms, the
codes suspended for payment default, the SIM — and turns every change into a new, complete provisioning file
(telematics_wire.provisioning): the next version for that VIN, signed with the backend's Ed25519 key,
valid for a configurable time (30 days by default). Complete files rather than deltas, so that a late
or repeated delivery converges. The desired state *is* the content of the newest file: there is no
second copy that could drift from what was signed.

Each operation (backend_stub.desired_state: book, cancel, cancel_contract, extend, suspend, resume,
end_unpaid, deactivate_sim) issues the next version; a change that would change nothing is refused,
so the history shows only real changes; `reissue` issues the same desired state under a new version
and expiry (an expired, unapplied file).

Legal eCall, the brand, the option codes the vehicle is built with and its first registration are
recorded per vehicle at enrolment (`backend-stub enroll --legal-ecall --brand --equipment
--first-registration`); every file carries the first registration.
Legal eCall is equipment:
every file for such a vehicle carries 6AF unlimited and an active SIM, and no file for another vehicle
carries 6AF. The vehicle's own rules (telematics_wire.provisioning.check_change) run on every file before
it is signed, so the backend never issues a file the vehicle is bound to refuse.

The rules of each change are backend_stub.desired_state's; what was issued and what the vehicle
answered, backend_stub.provisioning_history's; where it is kept, backend_stub.provisioning_store's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import date, timedelta

from nacl.signing import SigningKey

from backend_stub.desired_state import (
    Change,
    DesiredState,
    book,
    cancel,
    cancel_contract,
    choose_term,
    deactivate_sim,
    end_unpaid,
    extend,
    normalise,
    resume,
    suspend,
)
from backend_stub.errors import ProvisioningError, UnknownVehicleError
from backend_stub.provisioning_history import IssuedFile
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import Clock
from telematics_wire.errors import RejectedMessageError
from telematics_wire.provisioning import MAX_FILE_BYTES, ProvisioningFile, check_change, sign_file
from telematics_wire.terms import Term

_LOGGER = logging.getLogger(__name__)

DEFAULT_VALIDITY = timedelta(days=30)


class ProvisioningIssuer:
    """Applies operations to a vehicle's desired state and issues each result as the next signed version.

    Version allocation, the change and the new file happen in one immediate transaction, so the CLI
    and a running backend can issue concurrently without ever sharing a version; a refused change
    rolls back and consumes nothing.
    """

    def __init__(
        self,
        store: ProvisioningStore,
        *,
        signing_key: SigningKey,
        clock: Clock,
        enrolled: Callable[[str], bool],
        validity: timedelta = DEFAULT_VALIDITY,
    ) -> None:
        if validity <= timedelta(0):
            raise ValueError(f"provisioning file validity must be positive, not {validity}")
        self._store = store
        self._key = signing_key
        self._clock = clock
        self._enrolled = enrolled
        self.validity = validity

    def book(self, vin: str, code: str, term: Term | str | None = None, start: date | None = None) -> IssuedFile:
        now = self._clock.now()
        first = start or now.date()
        catalogue = self._store.catalogue
        chosen = choose_term(catalogue, code, term, self._store.vehicle(vin).brand)
        return self._issue(
            vin,
            f"book {code} {chosen} from {first}",
            lambda state, vehicle: book(
                state, code=code, term=chosen, start=first, now=now, catalogue=catalogue, vehicle=vehicle
            ),
        )

    def cancel(self, vin: str, code: str, on: date | None = None, *, sale: bool = False) -> IssuedFile:
        notice = on or self._clock.now().date()
        return self._issue(
            vin,
            f"cancel {code} on {notice}" + (" (sale of the vehicle)" if sale else ""),
            lambda state, vehicle: cancel(
                state, code=code, on=notice, today=notice, legal_ecall=vehicle.legal_ecall, sale=sale
            ),
        )

    def cancel_contract(self, vin: str, on: date | None = None) -> IssuedFile:
        notice = on or self._clock.now().date()
        return self._issue(
            vin,
            f"cancel the ConnectedDrive contract on {notice}",
            lambda s, _v: cancel_contract(s, on=notice, today=notice),
        )

    def extend(self, vin: str, code: str, months: int, bought: date | None = None) -> IssuedFile:
        day = bought or self._clock.now().date()
        return self._issue(
            vin,
            f"extend {code} by {months} months bought on {day}",
            lambda s, _v: extend(s, code=code, months=months, bought=day),
        )

    def suspend(self, vin: str, codes: Iterable[str] | None = None, *, why: str = "payment default") -> IssuedFile:
        """Suspend the booked `codes` (None: every invoiceable booked code) for payment default."""
        now = self._clock.now()
        wanted = None if codes is None else frozenset(codes)
        named = "every paid service" if wanted is None else ", ".join(sorted(wanted))
        return self._issue(
            vin, f"suspend {named} ({why})", lambda state, _vehicle: suspend(state, codes=wanted, now=now)
        )

    def resume(self, vin: str, codes: Iterable[str] | None = None, *, why: str = "payment default over") -> IssuedFile:
        """Lift the suspension of `codes` (None: of every suspended code)."""
        wanted = None if codes is None else frozenset(codes)
        named = "every suspended service" if wanted is None else ", ".join(sorted(wanted))
        return self._issue(vin, f"resume {named} ({why})", lambda state, _vehicle: resume(state, codes=wanted))

    def end_unpaid(self, vin: str, codes: Iterable[str], *, why: str) -> IssuedFile:
        wanted = frozenset(codes)
        return self._issue(
            vin, f"end {', '.join(sorted(wanted))} ({why})", lambda state, _vehicle: end_unpaid(state, codes=wanted)
        )

    def deactivate_sim(self, vin: str) -> IssuedFile:
        return self._issue(
            vin, "deactivate SIM", lambda state, vehicle: deactivate_sim(state, legal_ecall=vehicle.legal_ecall)
        )

    def reissue(self, vin: str, why: str) -> IssuedFile:
        """The same desired state under a new version and expiry; refused for a vehicle with no file."""
        if self._store.head(vin) is None:
            raise ProvisioningError(f"vehicle {vin} has no provisioning file to reissue")
        return self._issue(vin, f"reissue: {why}", lambda state, _vehicle: state, allow_same=True)

    def _issue(self, vin: str, operation: str, change: Change, *, allow_same: bool = False) -> IssuedFile:
        if not self._enrolled(vin):
            raise UnknownVehicleError(f"vehicle {vin} is not enrolled (backend-stub enroll)")
        now = self._clock.now()
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # the file carries milliseconds
        with self._store.transaction():
            vehicle = self._store.vehicle(vin)
            legal = vehicle.legal_ecall
            head = self._store.head(vin)
            current = DesiredState() if head is None else DesiredState.of(head.contents)
            try:
                desired = normalise(
                    change(current, vehicle),
                    legal_ecall=legal,
                    today=now.date(),
                    first_registration=vehicle.first_registration,
                )
            except ProvisioningError as exc:
                raise ProvisioningError(f"{operation} refused for {vin}: {exc}") from exc
            if head is not None and desired == current and not allow_same:
                raise ProvisioningError(f"{operation} refused for {vin}: it changes nothing")
            file = ProvisioningFile(
                vin=vin,
                version=self._store.next_version(vin),
                issued=now,
                expires=now + self.validity,
                bookings=desired.bookings,
                suspended=desired.suspended,
                sim=desired.sim,
                first_registration=desired.first_registration,
            )
            try:
                check_change(file, legal_ecall_equipped=legal)
            except RejectedMessageError as exc:  # a bug in the rules above: never sign what the car refuses
                raise ProvisioningError(f"{operation} refused for {vin}: {exc}") from exc
            signed = sign_file(file, self._key)
            if len(signed) > MAX_FILE_BYTES:
                raise ProvisioningError(f"{operation} refused: a file of {len(signed)} bytes > {MAX_FILE_BYTES}")
            issued = self._store.add_file(file, signed, operation=operation, now=now)
        _LOGGER.info("issued provisioning file version %d for %s: %s", file.version, vin, operation)
        return issued
