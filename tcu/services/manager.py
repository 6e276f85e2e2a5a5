"""The vehicle's service lifecycle: applies provisioning files and keeps the entitlements current.

The applied file is the only durable state (the signed bytes, in `provisioning.cose`, replaced
atomically): entitlements are derived from it at every boot and every tick, so a power cut during an
apply leaves the old or the new file, never a mix, and a term that ends while the car sleeps is
noticed when it wakes. Each file is answered with a `provisioning_result` event through the durable
uplink; a file that arrives during an eCall waits until the eCall is over, and one that cannot be stored
(full disk) is answered `deferred` with code `storage` and tried again every tick until it can be.
The file is written off the event loop (tcu.persist.AtomicFile) and reported `applied` only once it is
durable; applies run one at a time, so each is verified against the file the previous one left.
Any payload gives one answer and never an exception: the verification is total (telematics_wire.cose).
While the SIM is not active (eCall-only or deactivated) a verified file is applied only if it
reactivates the SIM; any other is answered `rejected` with code `sim_inactive` and the reason.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.signing import VerifyKey

from tcu.clock import Clock
from tcu.errors import StorageError
from tcu.persist import AtomicFile, read_optional
from telematics_wire.catalogue import Catalogue
from telematics_wire.cose import verify1
from telematics_wire.entitlements import Entitlements, derive
from telematics_wire.errors import RejectedMessageError
from telematics_wire.provisioning import MAX_FILE_BYTES, ProvisioningFile, parse_payload, verify_file
from telematics_wire.records import Record, RecordKind
from telematics_wire.sim_state import SimState

_LOGGER = logging.getLogger(__name__)

RecordSink = Callable[[Record], None]  # hands a record to telematics (the outbox)
REMEMBERED_REJECTIONS = 16


class ServiceManager:
    def __init__(
        self,
        *,
        vin: str,
        state_file: Path,
        verify_key: VerifyKey | None,
        legal_ecall: bool,
        clock: Clock,
        catalogue: Catalogue,
        report: RecordSink,
        on_change: Callable[[Entitlements], None] = lambda _e: None,
        ecall_active: Callable[[], bool] = lambda: False,
        step_hook: Callable[[str], None] = lambda _step: None,
    ) -> None:
        self._vin = vin
        self._path = state_file
        self._store = AtomicFile(state_file)
        self._applying = asyncio.Lock()  # verify, write, believe: one file at a time
        self._key = verify_key
        self._legal = legal_ecall
        self._clock = clock
        self._catalogue = catalogue
        self._report = report
        self._on_change = on_change
        self._ecall_active = ecall_active
        self._step = step_hook  # observation points; tests kill the process at each one
        self._applied: bytes | None = None
        self._file: ProvisioningFile | None = None
        self._deferred: bytes | None = None  # waits for the eCall to end, or for room on the disk
        self._deferred_for_storage: bytes | None = None  # answered `deferred` (storage) already
        self._rejected: collections.deque[tuple[bytes, str]] = collections.deque(maxlen=REMEMBERED_REJECTIONS)
        self._entitlements = derive(None, legal_ecall_equipped=legal_ecall, now=clock.now())

    @property
    def verify_key(self) -> VerifyKey | None:
        """The pinned backend key; remote-measure orders are verified with the same one."""
        return self._key

    @property
    def entitlements(self) -> Entitlements:
        return self._entitlements

    def sim_inactive(self) -> str | None:
        """None while the SIM is active; else why it carries nothing but the emergency call."""
        return self._entitlements.inactive_reason()

    def load(self) -> Entitlements:
        """Read the applied file at boot; a file that no longer verifies is reported, never trusted."""
        raw = read_optional(self._path)
        if raw is not None and self._key is not None:
            try:
                self._file = parse_payload(
                    verify1(raw, self._key, max_bytes=MAX_FILE_BYTES, what="stored provisioning file").payload,
                    self._catalogue,
                )
                self._applied = raw
            except RejectedMessageError as exc:
                _LOGGER.error("ignoring the stored provisioning file %s: %s", self._path, exc)
        self.refresh(force=True)
        return self._entitlements

    def refresh(self, *, force: bool = False) -> bool:
        """Re-derive the entitlements at the current time; True (and on_change) when they changed."""
        updated = derive(self._file, legal_ecall_equipped=self._legal, now=self._clock.now(), catalogue=self._catalogue)
        changed = updated != self._entitlements
        self._entitlements = updated
        if changed or force:
            if changed:
                _LOGGER.info(
                    "services now: running %s, suspended %s, SIM %s",
                    sorted(updated.running),
                    sorted(updated.suspended),
                    updated.sim.value,
                )
            self._on_change(updated)
        return changed

    def _result(self, status: str, version: int | None, code: str | None = None, reason: str | None = None) -> None:
        body: dict[str, Any] = {
            "type": "provisioning_result",
            "version": version,
            "status": status,
            "code": code,
            "reason": reason,
        }
        self._report(Record(kind=RecordKind.EVENT, created=self._clock.now(), body=body))

    async def handle_downlink(self, payload: bytes) -> None:
        await self.receive(payload)

    async def receive(self, payload: bytes) -> None:
        """A provisioning file from the backend: apply it now, or after the eCall in progress."""
        async with self._applying:
            if self._ecall_active():
                self._deferred = payload
                _LOGGER.info("provisioning file received during an eCall; applying it after the call")
                self._result("deferred", None, reason="an eCall is in progress")
                return
            await self._apply(payload)

    async def ecall_ended(self) -> None:
        await self.retry_deferred()

    async def retry_deferred(self) -> None:
        """Apply the file that waited for an eCall to end or for room on the disk, if any."""
        async with self._applying:
            deferred, self._deferred = self._deferred, None
            if deferred is not None:
                await self._apply(deferred)

    async def _apply(self, payload: bytes) -> None:
        if self._key is None:
            reason = "no backend verify key pinned in this vehicle (keys.backend_verify_key)"
            self._reject(payload, None, "bad_signature", reason)
            return
        try:
            accepted = verify_file(
                payload,
                self._key,
                vin=self._vin,
                now=self._clock.now(),
                applied=self._applied,
                applied_version=self._file.version if self._file else 0,
                legal_ecall_equipped=self._legal,
                catalogue=self._catalogue,
            )
        except RejectedMessageError as exc:
            self._reject(payload, exc.version, exc.code, str(exc))
            return
        version = accepted.file.version
        self._step("verified")
        if accepted.already_applied:
            self._result("already_applied", version)
            return
        refusal = self._sim_refusal(accepted.file)
        if refusal is not None:
            self._reject(payload, version, "sim_inactive", refusal)
            return
        try:
            await self._store.write(payload)
        except StorageError as exc:
            # Not the file's fault: keep it and try again on every tick (and at the next delivery). The
            # backend keeps a deferred file unresolved and sends it again when the vehicle comes online.
            first = self._deferred_for_storage != payload
            self._deferred, self._deferred_for_storage = payload, payload
            if first:
                _LOGGER.error("provisioning file version %d deferred, it cannot be stored: %s", version, exc)
                self._result("deferred", version, "storage", f"the vehicle cannot store the file: {exc}")
            return
        self._deferred_for_storage = None
        self._step("written")
        self._applied, self._file = payload, accepted.file
        _LOGGER.info("applied provisioning file version %d", version)
        self._result("applied", version)
        self._step("reported")
        self.refresh(force=True)

    def _sim_refusal(self, file: ProvisioningFile) -> str | None:
        """While the SIM is not active only a file that reactivates it is applied (AGB 6.1): the SIM
        carries nothing else. None when `file` may be applied."""
        self.refresh()  # a term may have ended since the last tick
        current = self._entitlements
        if current.sim is SimState.ACTIVE:
            return None
        after = derive(file, legal_ecall_equipped=self._legal, now=self._clock.now(), catalogue=self._catalogue)
        if after.sim is SimState.ACTIVE:
            return None
        return (
            f"the SIM is {current.sim.value} ({current.sim_reason}): only a provisioning file that reactivates "
            f"it is applied, and version {file.version} leaves it {after.sim.value} ({after.sim_reason})"
        )

    def _reject(self, payload: bytes, version: int | None, code: str, reason: str) -> None:
        """Log and answer a refusal; the same bytes refused again for the same reason are answered once
        (a retained file is delivered again at every reconnect), among the last REMEMBERED_REJECTIONS."""
        seen = (hashlib.sha256(payload).digest(), code)
        if seen in self._rejected:
            _LOGGER.info("provisioning file refused again (%s), already answered: %s", code, reason)
            return
        self._rejected.append(seen)
        _LOGGER.warning("provisioning file rejected (%s): %s", code, reason)
        self._result("rejected", version, code, reason)

    async def run(self, tick_s: float = 60.0) -> None:
        """Notice terms ending and eCalls ending while the agent runs."""
        while True:
            await asyncio.sleep(tick_s)
            if self._deferred is not None and not self._ecall_active():
                await self.retry_deferred()
            self.refresh()
