"""The remote-measure engine: runs signed measure orders one at a time, rolls back on interruption.

For each order: verify (telematics_wire.measure_order: signature, VIN, deadline, and the plan rule of
AGB 3.4 a to d in telematics_wire.measure_plan, the same the backend applied before signing), check the
preconditions, journal a snapshot of the ECU configuration, run the plan's steps one at a time, each
taking its declared time, while watching for interruptions — lock/unlock, the vehicle leaving an
allowed state, coverage loss, an eCall, the 10-minute cap — then either verify and report success, or
restore the ECU configuration exactly and report the precise reason. The backend decides about
retries; an order is idempotent by measure id.

Personal settings (driver profiles, consents, the paired account: tcu.services.personal) are never
snapshotted nor restored. A measure cannot write them — the plan rule refuses a personal key on receipt
and the engine only writes the ECU configuration — while the driver may well change them during the
attempt (`tcu profile add`, a pairing): restoring a snapshot taken at the start would throw the
driver's changes away, the very loss of personal settings AGB 3.4 d forbids.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any

from nacl.signing import VerifyKey

from tcu.clock import Clock
from tcu.errors import StorageError
from tcu.services.ecu_config import EcuConfiguration
from tcu.services.measure_attempt import (
    ATTEMPT_CAP_S,
    Interruption,
    MeasureAttempt,
    describe,
    precondition_failure,
)
from tcu.services.measure_journal import InProgress, MeasureJournal
from tcu.vehicle.state import Signal, VehicleState
from tcu.virtual_time import real_seconds
from telematics_wire.ecu_keys import ConfigValue
from telematics_wire.errors import RejectedMessageError
from telematics_wire.measure_order import MeasureOrder, RejectedOrderError, check_not_replayed, verify_order
from telematics_wire.records import Record, RecordKind, to_millis
from telematics_wire.vehicle_mode import VehicleMode

_LOGGER = logging.getLogger(__name__)

MODE_PATH = "Vehicle.Mode"
LOCK_PATHS = ("Vehicle.Body.CentralLock.State",)
LOCK_SUFFIX = ".IsLocked"
UNKNOWN_ID = "?"  # the measure id of a refusal that cannot name its order (before the signature verified)
STORAGE = "storage"  # the code of an answer the vehicle gave because it could not write (full disk)
SCHEDULING_TOLERANCE_REAL_S = 0.05  # a step's end noticed this late still ends on time (see _apply_steps)


def _mode(value: object) -> VehicleMode | None:
    try:
        return VehicleMode(str(value).lower())
    except ValueError:
        return None


class MeasureEngine:
    def __init__(
        self,
        *,
        vin: str,
        verify_key: VerifyKey | None,
        ecu: EcuConfiguration,
        journal: MeasureJournal,
        state: VehicleState,
        clock: Clock,
        report: Callable[[Record], None],
        coverage: Callable[[], bool],
        ecall_active: Callable[[], bool],
        sim_inactive: Callable[[], str | None] = lambda: None,
        cap_s: float = ATTEMPT_CAP_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._vin = vin
        self._key = verify_key
        self._ecu = ecu
        self._journal = journal
        self._state = state
        self._clock = clock
        self._report = report
        self._coverage = coverage
        self._ecall_active = ecall_active
        self._sim_inactive = sim_inactive  # why the SIM carries no remote measure now, or None
        self._cap_s = cap_s
        self._sleep = sleep
        self._orders: asyncio.Queue[MeasureOrder] = asyncio.Queue()
        self._current: MeasureAttempt | None = None
        self._executing = False  # an order taken from the queue and not yet answered (journal writes included)
        self._interrupted = asyncio.Event()
        self._receiving = asyncio.Lock()
        self._locks: dict[str, object] = {}  # lock states when the attempt started

    @property
    def current(self) -> MeasureAttempt | None:
        return self._current

    @property
    def idle(self) -> bool:
        """No order waiting, none in progress, and every result of one reported."""
        return not self._executing and self._orders.empty()

    def _result(self, order_id: str, attempt: int | None, status: str, **details: Any) -> None:
        body = {"type": "measure_result", "measure_id": order_id, "attempt": attempt, "status": status, **details}
        self._report(Record(kind=RecordKind.EVENT, created=self._clock.now(), body=body))

    async def recover(self) -> None:
        """At boot, before anything else: an attempt the agent died in is rolled back."""
        self._journal.load()
        progress = self._journal.in_progress
        if progress is None:
            return
        _LOGGER.warning(
            "measure %s attempt %d was interrupted by a restart; rolling back", progress.measure_id, progress.attempt
        )
        reason = describe(Interruption.AGENT_RESTART)
        problem = await self._roll_back(progress.config)
        if problem is not None:
            reason = f"{reason}; {problem}"
        self._result(
            progress.measure_id, progress.attempt, "rolled_back", code=Interruption.AGENT_RESTART.value, reason=reason
        )

    async def handle_downlink(self, payload: bytes) -> None:
        await self.receive(payload)

    async def receive(self, payload: bytes) -> None:
        """Any payload gives one answer (or a queued order), never an exception. One order at a time: the
        replay check of the next one sees this one recorded."""
        async with self._receiving:
            await self._receive(payload)

    async def _receive(self, payload: bytes) -> None:
        if self._key is None:
            reason = "no backend verify key pinned in this vehicle (keys.backend_verify_key)"
            _LOGGER.error("measure order rejected (bad_signature): %s", reason)
            self._result(UNKNOWN_ID, None, "rejected", code="bad_signature", reason=reason)
            return
        try:
            order = verify_order(payload, self._key, vin=self._vin, now=self._clock.now(), specs=self._ecu.specs)
            if self._journal.applied(order.measure_id):
                # Done before: the backend missed our result. Say so again; change nothing.
                self._result(order.measure_id, order.attempt, "already_applied")
                return
            check_not_replayed(order, self._journal.last_attempt(order.measure_id))
        except RejectedMessageError as exc:
            # Once the signature verified, the refusal names the order so the backend can match it.
            order_error = exc if isinstance(exc, RejectedOrderError) else None
            measure_id = (order_error.measure_id if order_error else None) or UNKNOWN_ID
            attempt = order_error.attempt if order_error else None
            _LOGGER.warning("measure order %s attempt %s rejected (%s): %s", measure_id, attempt, exc.code, exc)
            self._result(measure_id, attempt, "rejected", code=exc.code, reason=str(exc))
            return
        inactive = self._sim_inactive()
        if inactive is not None:  # AGB 6.1: no remote measure without an active SIM
            reason = f"no remote measure: {inactive}"
            _LOGGER.warning(
                "measure order %s attempt %d rejected (sim_inactive): %s", order.measure_id, order.attempt, reason
            )
            self._result(order.measure_id, order.attempt, "rejected", code="sim_inactive", reason=reason)
            return
        try:
            await self._journal.seen(order.measure_id, order.attempt)
        except StorageError as exc:
            # Not recorded, so not run: replay protection needs the record. The backend retries later
            # with the next attempt number, which the journal (unchanged) still accepts.
            self._storage_failure(order, "not_started", f"the vehicle cannot record the order: {exc}")
            return
        self._orders.put_nowait(order)

    def _storage_failure(self, order: MeasureOrder, status: str, reason: str) -> None:
        _LOGGER.error("measure %s attempt %d %s: %s", order.measure_id, order.attempt, status, reason)
        self._result(order.measure_id, order.attempt, status, code=STORAGE, reason=reason)

    def interrupt(self, reason: Interruption) -> None:
        """Called by whatever noticed it (eCall service, uplink, vehicle state)."""
        if self._current is not None:
            self._current.interrupt(reason)
            self._interrupted.set()

    def _on_signal(self, signal: Signal) -> None:
        attempt = self._current
        if attempt is None:
            return
        if signal.path in LOCK_PATHS or signal.path.endswith(LOCK_SUFFIX):
            # Body ECUs repeat their state cyclically: only a different value is a lock or an unlock.
            before = self._locks.setdefault(signal.path, signal.value)
            if signal.value != before:
                self.interrupt(Interruption.LOCK_CHANGED)
        elif signal.path == MODE_PATH and _mode(signal.value) not in attempt.order.allowed_states:
            self.interrupt(Interruption.VEHICLE_STATE)

    async def run(self) -> None:
        unsubscribe = self._state.subscribe(self._on_signal)
        try:
            while True:
                order = await self._orders.get()
                self._executing = True
                try:
                    await self._execute(order)
                finally:
                    self._executing = False
        finally:
            unsubscribe()

    async def _execute(self, order: MeasureOrder) -> None:
        failure = precondition_failure(
            order,
            mode=_mode(self._state.value(MODE_PATH)),
            ecall_active=self._ecall_active(),
            coverage=self._coverage(),
        )
        if failure is not None:
            code, reason = failure
            _LOGGER.info("measure %s attempt %d not started: %s", order.measure_id, order.attempt, reason)
            self._result(order.measure_id, order.attempt, "not_started", code=code.value, reason=reason)
            return
        started_at = self._clock.now()
        attempt = MeasureAttempt(order=order, started=self._clock.monotonic(), cap_s=self._cap_s)
        config_before, values_before = self._ecu.snapshot(), self._ecu.values
        self._locks = {
            path: signal.value
            for path, signal in self._state.snapshot().items()
            if path in LOCK_PATHS or path.endswith(LOCK_SUFFIX)
        }
        # Current from here: an eCall or a lock change while the journal is being written interrupts it.
        self._current = attempt
        self._interrupted.clear()
        try:
            await self._journal.begin(
                InProgress(measure_id=order.measure_id, attempt=order.attempt, config=config_before)
            )
        except StorageError as exc:
            self._current = None
            self._storage_failure(order, "not_started", f"the vehicle cannot journal the attempt: {exc}")
            return
        _LOGGER.info(
            "measure %s attempt %d started; impairs %s",
            order.measure_id,
            order.attempt,
            list(order.impairs) or "nothing",
        )
        try:
            impaired_ms = await self._apply_steps(attempt)
        finally:
            self._current = None
        # The impairment as the vehicle's schedule has it: a step ended on time ends on the ms it was due
        # (see _apply_steps), so a plan of exactly 10:00 reports 600.0, not the loop's lateness on top.
        impaired = {"services": list(order.impairs), "seconds": impaired_ms / 1000}
        ended_at = started_at + timedelta(milliseconds=impaired_ms)
        timing = {"started": to_millis(started_at), "ended": to_millis(ended_at), "impaired": impaired}
        if attempt.interruption is None and self._verified(order, values_before):
            try:
                await self._journal.end(applied=True)
            except StorageError as exc:
                # Unrecorded, a success would be undone by the next boot's recovery: undo it now instead.
                _LOGGER.error(
                    "measure %s attempt %d cannot be recorded as applied: %s", order.measure_id, order.attempt, exc
                )
                attempt.interrupt(Interruption.STORAGE)
            else:
                _LOGGER.info("measure %s attempt %d succeeded", order.measure_id, order.attempt)
                self._result(order.measure_id, order.attempt, "succeeded", **timing)
                return
        cause = attempt.interruption or Interruption.VERIFICATION_FAILED
        reason = describe(cause)
        problem = await self._roll_back(config_before)
        if problem is not None:
            reason = f"{reason}; {problem}"
        _LOGGER.warning("measure %s attempt %d rolled back: %s", order.measure_id, order.attempt, reason)
        self._result(order.measure_id, order.attempt, "rolled_back", code=cause.value, reason=reason, **timing)

    async def _roll_back(self, config: bytes) -> str | None:
        """Restore the ECU configuration; None, or what could not be written (a full disk). The values in
        force are restored in any case, and a journal left unfinished makes the next boot restore the file.
        The personal settings stay exactly as they are now (see the module docstring)."""
        problems = []
        try:
            await self._ecu.restore(config)
        except StorageError as exc:
            problems.append(str(exc))
        if not problems:
            try:
                await self._journal.end(applied=False)
            except StorageError as exc:
                problems.append(str(exc))
        if not problems:
            return None
        _LOGGER.error("measure rollback not fully stored: %s", "; ".join(problems))
        return "restored in memory, stored again at the next boot (" + "; ".join(problems) + ")"

    async def _pause(self, seconds: float) -> None:
        """Wait a step's time, or less if an interruption comes first."""
        sleeping = asyncio.ensure_future(self._sleep(seconds))
        interrupted = asyncio.ensure_future(self._interrupted.wait())
        try:
            await asyncio.wait({sleeping, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeping, interrupted):
                task.cancel()
            await asyncio.gather(sleeping, interrupted, return_exceptions=True)

    async def _apply_steps(self, attempt: MeasureAttempt) -> int:
        """Each step takes its declared time, then its changes are set; the cap is checked at every step.
        Returns how many ms after the start services were impaired: when the last step done counts as
        ended, or when an interruption stopped a step."""
        # A step's work is its wait (a simulated ECU step); the loop noticing its end later than due is
        # this process's scheduling, not the ECU overrunning, and must not cost a plan of exactly 10:00
        # its last step. 50 ms of real time covers a loop busy with CAN frames and a shared CPU (a step
        # of 300 s was noticed 3.5 virtual s late at scale 30, about 0.1 real s, when each step counted
        # from the last one's noticed end); it is real time because that lateness is: on a bench at
        # scale 40 it is 2 virtual seconds. An ECU overrunning by less is taken as on time; one
        # overrunning by more is an overrun, and the cap judges the step's real end.
        tolerance_s = real_seconds(SCHEDULING_TOLERANCE_REAL_S)
        for step in attempt.pending_steps():
            if not attempt.fits(step.expected_ms):
                # Earlier steps overran: this one cannot end within the cap, so do not start it.
                attempt.interrupt(Interruption.TIME_CAP)
                return attempt.ended_ms
            due = attempt.step_deadline(step.expected_ms)
            wait = due - self._clock.monotonic()
            if wait > 0:
                await self._pause(wait)
            if attempt.interruption is not None:  # stopped during the step
                return max(attempt.ended_ms, attempt.elapsed_ms(self._clock.monotonic()))
            late_ms = attempt.end_step(step.expected_ms, self._clock.monotonic(), tolerance_s)
            if late_ms > round(tolerance_s * 1000):
                _LOGGER.warning(
                    "measure %s step %d ended %d ms later than due (tolerance %d ms): an overrun",
                    attempt.order.measure_id,
                    attempt.steps_done + 1,
                    late_ms,
                    round(tolerance_s * 1000),
                )
            else:  # at info: a measure has few steps, and the lateness is what a bench engineer checks
                _LOGGER.info(
                    "measure %s step %d ended on schedule (noticed %d ms late)",
                    attempt.order.measure_id,
                    attempt.steps_done + 1,
                    late_ms,
                )
            if not self._coverage():
                attempt.interrupt(Interruption.COVERAGE_LOST)
            elif attempt.ended_over_cap:
                attempt.interrupt(Interruption.TIME_CAP)  # the step took longer than declared
            if attempt.interruption is not None:
                return attempt.ended_ms
            for key, value in step.changes.items():
                try:
                    await self._ecu.set(key, value)
                except StorageError as exc:
                    _LOGGER.error("measure %s: cannot store %s: %s", attempt.order.measure_id, key, exc)
                    attempt.interrupt(Interruption.STORAGE)
                    return attempt.ended_ms
                attempt.applied.append(key)
            attempt.steps_done += 1
        return attempt.ended_ms

    def _verified(self, order: MeasureOrder, values_before: Mapping[str, ConfigValue]) -> bool:
        """The configuration is exactly the one at the start with the plan's changes: only a measure writes
        it, so any other difference (a personal or vehicle-function key) is the measure's doing and is
        rolled back. The personal store is not compared: the driver may change it meanwhile."""
        return dict(self._ecu.values) == {**values_before, **order.changes}
