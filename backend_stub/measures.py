"""The remote-measure scheduler: keeps each measure until it succeeds, is given up, or expires.

- One attempt at a time per vehicle: a new attempt is sent only when no attempt of any measure is
  in flight on that vehicle.
- After a failed attempt the next one waits a capped, jittered backoff — or goes at once when the
  reason has gone away: the vehicle came back online (coverage lost, no coverage) or reported a
  vehicle state the measure may run in (it was driving, now it is parked).
- Given up (`abandoned`) when the vehicle refuses it for a reason retrying cannot fix (signature,
  forbidden or unknown key, other vehicle, malformed) or after `max_attempts`; `expired` when its
  deadline passes. An attempt with no answer within `attempt_timeout_s` counts as `lost`.

The vehicle's answers arrive as `measure_result` events through ingest (`on_record`); its online
status through `on_status`. Orders go to `vehicles/{VIN}/down/measure`, QoS 1, not retained: a
stale order must not run later, and the broker's persistent session holds one sent just before the
vehicle went offline (the vehicle still checks the deadline).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from nacl.signing import SigningKey

from backend_stub.measure_store import ABANDONED, EXPIRED, PENDING, SUCCEEDED, Measure, MeasureStore
from tcu.backoff import Backoff
from tcu.clock import Clock
from tcu.services.measure_order import MeasureCategory, MeasureOrder, sign_order
from tcu.uplink.records import ReceivedRecord, RecordKind
from tcu.uplink.topics import VehicleTopics
from tcu.vehicle.drive_cycle import VehicleMode

_LOGGER = logging.getLogger(__name__)

FINAL_REJECTIONS = frozenset(
    {"bad_signature", "other_vehicle", "forbidden_key", "unknown_key", "malformed", "oversize"}
)
# What a failed attempt waits for before the next one may go at once (else: the backoff).
WAITS_FOR = {"coverage_lost": "online", "vehicle_state_not_allowed": "allowed_state"}
Publish = Callable[[str, bytes], Awaitable[None]]


class MeasureScheduler:
    def __init__(
        self,
        store: MeasureStore,
        *,
        signing_key: SigningKey,
        clock: Clock,
        vehicle_mode: Callable[[str], str | None],
        online: Callable[[str], bool | None],
        backoff: Backoff | None = None,
        attempt_timeout_s: float = 900.0,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._key = signing_key
        self._clock = clock
        self._mode = vehicle_mode
        self._online = online
        self._backoff = backoff or Backoff(base_s=30.0, cap_s=900.0)
        self._timeout = timedelta(seconds=attempt_timeout_s)
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not cryptography

    def send(
        self,
        *,
        vin: str,
        measure_id: str,
        changes: Mapping[str, Any],
        allowed_states: tuple[VehicleMode, ...],
        category: MeasureCategory = MeasureCategory.FAULT_FIX,
        impairs: tuple[str, ...] = (),
        deadline: timedelta = timedelta(days=7),
        max_attempts: int = 10,
        step_s: float = 1.0,
    ) -> Measure:
        now = self._clock.now()
        measure = Measure(
            measure_id=measure_id,
            vin=vin,
            category=category.value,
            allowed_states=tuple(s.value for s in allowed_states),
            changes=dict(changes),
            impairs=impairs,
            step_s=step_s,
            created=now,
            deadline=now + deadline,
            max_attempts=max_attempts,
            state=PENDING,
            attempts=0,
            next_attempt=now,
            reason=None,
        )
        self._store.add(measure)
        return measure

    async def tick(self, publish: Publish) -> int:
        """Send every attempt that is due; returns how many were sent."""
        now = self._clock.now()
        busy: set[str] = set()
        sent = 0
        for measure in self._store.pending():
            if now >= measure.deadline:
                self._store.set_state(measure.measure_id, EXPIRED, f"deadline {measure.deadline.isoformat()} passed")
                continue
            open_attempt = self._store.open_attempt(measure.vin)
            if open_attempt is not None:
                if now - open_attempt.sent >= self._timeout:
                    self._store.end_attempt(
                        open_attempt.measure_id,
                        open_attempt.attempt,
                        status="lost",
                        at=now,
                        reason="no answer from the vehicle in time",
                    )
                    # The lost attempt may belong to another measure of this vehicle: reschedule that one.
                    owner = self._store.get(open_attempt.measure_id)
                    if owner is not None:
                        self._retry(owner, now, "lost", None)
                    busy.add(measure.vin)  # this tick's copies are stale now: nothing more for this vehicle
                continue
            if measure.vin in busy or not self._due(measure, now):
                continue
            if measure.attempts >= measure.max_attempts:
                self._store.set_state(measure.measure_id, ABANDONED, f"no success in {measure.attempts} attempts")
                continue
            attempt = measure.attempts + 1
            order = MeasureOrder(
                vin=measure.vin,
                measure_id=measure.measure_id,
                attempt=attempt,
                category=MeasureCategory(measure.category),
                allowed_states=frozenset(VehicleMode(s) for s in measure.allowed_states),
                changes=measure.changes,
                impairs=measure.impairs,
                issued=now,
                deadline=measure.deadline,
                step_s=measure.step_s,
            )
            self._store.start_attempt(measure.measure_id, attempt, now)
            busy.add(measure.vin)
            await publish(VehicleTopics(measure.vin).down("measure"), sign_order(order, self._key))
            _LOGGER.info("measure %s: attempt %d sent to %s", measure.measure_id, attempt, measure.vin)
            sent += 1
        return sent

    def _due(self, measure: Measure, now: datetime) -> bool:
        if measure.waiting_for == "online" and self._online(measure.vin):
            return True  # the reason went away: at once
        if measure.waiting_for == "allowed_state" and self._mode(measure.vin) in measure.allowed_states:
            return True
        return now >= measure.next_attempt

    def _retry(self, measure: Measure, now: datetime, code: str | None, reason: str | None) -> None:
        delay = self._backoff.delay(max(measure.attempts - 1, 0), self._rng)
        self._store.schedule(measure.measure_id, now + timedelta(seconds=delay), reason, WAITS_FOR.get(code or ""))

    def on_record(self, record: ReceivedRecord) -> None:
        body = record.body
        if record.kind is not RecordKind.EVENT or body.get("type") != "measure_result":
            return
        measure = self._store.get(str(body.get("measure_id")))
        attempt = body.get("attempt")
        if measure is None or measure.vin != record.vin or not isinstance(attempt, int):
            _LOGGER.warning("measure result from %s for unknown measure/attempt: %r", record.vin, dict(body))
            return
        status, code, reason = str(body.get("status")), body.get("code"), body.get("reason")
        impaired = body.get("impaired")
        seconds = impaired.get("seconds") if isinstance(impaired, dict) else None
        if not self._store.end_attempt(
            measure.measure_id, attempt, status=status, at=record.created, code=code, reason=reason, impaired_s=seconds
        ):
            return  # a duplicate, or an answer to an attempt already counted lost
        measure = replace(measure, attempts=max(measure.attempts, attempt))
        if status in ("succeeded", "already_applied"):
            self._store.set_state(measure.measure_id, SUCCEEDED)
        elif status == "rejected" and code in FINAL_REJECTIONS:
            self._store.set_state(measure.measure_id, ABANDONED, f"vehicle refused it ({code}): {reason}")
        elif status == "rejected" and code == "expired":
            self._store.set_state(measure.measure_id, EXPIRED, reason)
        else:
            self._retry(measure, self._clock.now(), code, reason)
        _LOGGER.info("measure %s attempt %d on %s: %s %s", measure.measure_id, attempt, record.vin, status, code or "")
