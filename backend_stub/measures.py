"""The remote-measure scheduler: keeps each measure until it succeeds, is given up, or expires.

- One attempt at a time per vehicle: a new attempt is sent only when no attempt of any measure is
  in flight on that vehicle.
- After a failed attempt the next one waits a capped, jittered backoff — or goes at once when the
  reason has gone away: the vehicle came back online (coverage lost, no coverage) or reported a
  vehicle state the measure may run in (it was driving, now it is parked).
- Refused because the vehicle's SIM is not active (`sim_inactive`, AGB 3.3, 6.1: no remote measure
  without an active SIM): no backoff, which would only collect the same refusal until `max_attempts`
  is used up. The measure waits until a capability report received *after* the refusal says the SIM
  is `active` (the vehicle sends one after every applied provisioning file, so after the file that
  reactivates it), then goes at once; until then only its deadline ends it. Such a refusal is not an
  attempt of the measure — the vehicle ran nothing — so it does not count towards `max_attempts`.
- Retries after technical interruptions (AGB 3.6: coverage, vehicle state, lock/unlock, eCall, a
  restart, a full disk, a lost answer) go on as long as attempts and the deadline allow.
- Not retried blindly after the 10-minute cap (AGB 3.4 d): an attempt rolled back with `time_cap`
  (or refused by the vehicle as `over_cap`) shows that the plan misjudged the time; sending the same
  plan again would impair the services again for nothing. The measure becomes `needs_plan` with the
  reason, and waits for a person: `replan` gives it new steps (checked like a new measure) or, as a
  deliberate decision, the same ones again.
- Given up (`abandoned`) when the vehicle refuses it for a reason retrying cannot fix (signature,
  a plan that breaks AGB 3.4 a to c, unknown key, a value of the wrong type, other vehicle,
  malformed) or after `max_attempts`; `expired` when its deadline passes. An attempt with no answer
  within `attempt_timeout_s` counts as `lost`.
- Planned before any attempt, never signed when the vehicle would refuse it: `send` builds the order
  and runs the vehicle's own rules on it (backend_stub.measure_orders: `MeasureOrder` validation and
  `check_plan` from telematics_wire, with the vehicle's key table) and refuses with
  `MeasureRefusedError` naming the reason — more than 10 minutes of declared steps, a vehicle
  function, personal settings, a key outside the fault's service — before anything is stored or
  published; a stored measure that fails them (written by an older backend) is abandoned, not sent.

The vehicle's answers arrive as `measure_result` events through ingest (`on_record`; what their
codes mean: backend_stub.measure_answers); its online status through the `online` callable. `tick` is
plain database work: it starts the attempts that are due and returns their signed orders (`DueOrder`),
which the caller publishes, in that order, to `vehicles/{VIN}/down/measure`, QoS 1, not retained: a
stale order must not run later, and the broker's persistent session holds one sent just before the
vehicle went offline (the vehicle still checks the deadline). An order never published is an attempt
without an answer: lost after `attempt_timeout_s`, then retried.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from nacl.signing import SigningKey

from backend_stub.errors import MeasureRefusedError
from backend_stub.measure_answers import (
    CAP_FAILURES,
    FINAL_REJECTIONS,
    SIM_INACTIVE,
    WAITS_FOR,
    SimReport,
    answer_text,
    impaired_seconds,
)
from backend_stub.measure_orders import judge, order_for
from backend_stub.measure_store import Measure, MeasureState, MeasureStore
from tcu.backoff import Backoff
from tcu.clock import Clock
from telematics_wire.ecu_keys import KeySpec, load_key_specs
from telematics_wire.errors import RejectedMessageError
from telematics_wire.measure_order import MeasureCategory, sign_order
from telematics_wire.measure_plan import Fault, MeasureStep, planned_ms, seconds_text
from telematics_wire.payload_fields import is_int, shown
from telematics_wire.records import ReceivedRecord, RecordKind
from telematics_wire.topics import VehicleTopics
from telematics_wire.vehicle_mode import VehicleMode

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class DueOrder:
    """A started attempt's signed order, to publish on `topic` (QoS 1, not retained)."""

    measure_id: str
    attempt: int
    vin: str
    topic: str
    payload: bytes


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
        specs: Mapping[str, KeySpec] | None = None,
        sim: Callable[[str], SimReport | None] = lambda _vin: None,
    ) -> None:
        self._store = store
        self._sim = sim  # the vehicle's SIM as its newest capability report says
        self._specs = load_key_specs() if specs is None else dict(specs)  # the vehicle's key table
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
        fault: Fault,
        steps: tuple[MeasureStep, ...],
        allowed_states: tuple[VehicleMode, ...],
        category: MeasureCategory = MeasureCategory.FAULT_FIX,
        impairs: tuple[str, ...] = (),
        deadline: timedelta = timedelta(days=7),
        max_attempts: int = 10,
    ) -> Measure:
        """Judge the plan and record the new measure; raises MeasureRefusedError (nothing stored, nothing
        published) when the vehicle would refuse its orders, with the reason."""
        now = self._clock.now()
        try:
            ends = now + deadline
        except OverflowError as exc:
            raise MeasureRefusedError(f"measure {measure_id}: deadline {deadline} is past the year 9999") from exc
        measure = Measure(
            measure_id=measure_id,
            vin=vin,
            category=category.value,
            allowed_states=tuple(s.value for s in allowed_states),
            fault=fault,
            steps=tuple(steps),
            impairs=impairs,
            created=now,
            deadline=ends,
            max_attempts=max_attempts,
            state=MeasureState.PENDING,
            attempts=0,
            next_attempt=now,
            reason=None,
        )
        judge(measure, 1, now, self._specs)
        self._store.add(measure)
        _LOGGER.info(
            "measure %s for %s planned: %d step(s), %s, fixing %s of %s",
            measure_id,
            vin,
            len(measure.steps),
            seconds_text(planned_ms(measure.steps)),
            fault.ref,
            fault.service,
        )
        return measure

    def replan(self, measure_id: str, *, steps: tuple[MeasureStep, ...] | None, max_attempts: int = 10) -> Measure:
        """Give a measure that ran into the cap a new plan (`steps`), or its old one again (`steps=None`:
        a person judged the overrun a one-off). The plan is judged as for `send`; raises
        MeasureRefusedError when the measure waits for no plan or the plan fails."""
        measure = self._store.get(measure_id)
        if measure is None:
            raise MeasureRefusedError(f"no measure {measure_id}")
        if measure.state != MeasureState.NEEDS_PLAN:
            raise MeasureRefusedError(
                f"measure {measure_id} is {measure.state}: only a measure that needs a new plan is re-planned"
            )
        now = self._clock.now()
        new_steps = measure.steps if steps is None else tuple(steps)
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise MeasureRefusedError(f"measure {measure_id}: max_attempts must be a positive integer")
        replanned = replace(measure, steps=new_steps)
        judge(replanned, measure.attempts + 1, now, self._specs)
        how = "re-sent unchanged by decision" if steps is None else "re-planned"
        reason = f"{how}: {len(new_steps)} step(s), {seconds_text(planned_ms(new_steps))} (was: {measure.reason})"
        if not self._store.replan(
            measure_id, steps=new_steps, max_attempts=measure.attempts + max_attempts, at=now, reason=reason[:1000]
        ):
            raise MeasureRefusedError(f"measure {measure_id} changed meanwhile; look at its status again")
        _LOGGER.info("measure %s %s", measure_id, reason)
        stored = self._store.get(measure_id)
        if stored is None:
            raise MeasureRefusedError(f"measure {measure_id} vanished while it was re-planned")
        return stored

    def tick(self) -> list[DueOrder]:
        """Start every attempt that is due; returns their orders, to publish in this order."""
        now = self._clock.now()
        busy: set[str] = set()
        due: list[DueOrder] = []
        for measure in self._store.needing_plan():  # a measure waiting for a person still has its deadline
            if now >= measure.deadline:
                self._store.set_state(
                    measure.measure_id,
                    MeasureState.EXPIRED,
                    f"deadline {measure.deadline.isoformat()} passed while it needed a new plan",
                )
        for measure in self._store.pending():
            if now >= measure.deadline:
                waited = " while the vehicle's SIM was not active" if measure.waiting_for == "sim_active" else ""
                self._store.set_state(
                    measure.measure_id, MeasureState.EXPIRED, f"deadline {measure.deadline.isoformat()} passed{waited}"
                )
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
                tried = self._tried(measure)
                if tried >= measure.max_attempts:
                    self._store.set_state(measure.measure_id, MeasureState.ABANDONED, f"no success in {tried} attempts")
                    continue
            attempt = measure.attempts + 1
            try:
                order = order_for(measure, attempt, now, self._specs)
            except RejectedMessageError as exc:
                reason = f"not sent: the vehicle would refuse it ({exc.code}): {exc}"
                _LOGGER.error("measure %s %s", measure.measure_id, reason)
                self._store.set_state(measure.measure_id, MeasureState.ABANDONED, reason)
                continue
            self._store.start_attempt(measure.measure_id, attempt, now)
            busy.add(measure.vin)
            due.append(
                DueOrder(
                    measure_id=measure.measure_id,
                    attempt=attempt,
                    vin=measure.vin,
                    topic=VehicleTopics(measure.vin).down("measure"),
                    payload=sign_order(order, self._key),
                )
            )
        return due

    def _tried(self, measure: Measure) -> int:
        """Attempts the vehicle could run: refusals for an inactive SIM are not attempts of the measure."""
        refused = sum(1 for a in self._store.history(measure.measure_id) if a.code == SIM_INACTIVE)
        return measure.attempts - refused

    def _due(self, measure: Measure, now: datetime) -> bool:
        if measure.waiting_for == "sim_active":
            # next_attempt holds when the refusal was booked: an older report of an active SIM is stale.
            sim = self._sim(measure.vin)
            return sim is not None and sim.state == "active" and sim.received >= measure.next_attempt
        if measure.waiting_for == "online" and self._online(measure.vin):
            return True  # the reason went away: at once
        if measure.waiting_for == "allowed_state" and self._mode(measure.vin) in measure.allowed_states:
            return True
        return now >= measure.next_attempt

    def _retry(self, measure: Measure, now: datetime, code: str | None, reason: str | None) -> None:
        if code == SIM_INACTIVE:
            _LOGGER.warning(
                "measure %s waits until %s reports an active SIM again (vehicle: %s)",
                measure.measure_id,
                measure.vin,
                reason,
            )
            self._store.schedule(measure.measure_id, now, reason, WAITS_FOR[SIM_INACTIVE])
            return
        delay = self._backoff.delay(max(measure.attempts - 1, 0), self._rng)
        self._store.schedule(measure.measure_id, now + timedelta(seconds=delay), reason, WAITS_FOR.get(code or ""))

    def on_record(self, record: ReceivedRecord) -> None:
        """Book a vehicle's answer; any body gives a booking or a logged warning, never an exception."""
        body = record.body
        if record.kind is not RecordKind.EVENT or body.get("type") != "measure_result":
            return
        measure_id, attempt, status = body.get("measure_id"), body.get("attempt"), body.get("status")
        measure = self._store.get(measure_id) if isinstance(measure_id, str) else None
        if (
            measure is None
            or measure.vin != record.vin
            or not is_int(attempt)
            or not 1 <= attempt <= measure.attempts
            or not isinstance(status, str)
        ):
            _LOGGER.warning(
                "measure result from %s names no attempt we sent (measure %s, attempt %s, status %s); logged only",
                record.vin,
                shown(measure_id),
                shown(attempt),
                shown(status),
            )
            return
        code, reason = answer_text(body.get("code")), answer_text(body.get("reason"))
        impaired = body.get("impaired")
        seconds = impaired_seconds(impaired.get("seconds") if isinstance(impaired, Mapping) else None)
        if not self._store.end_attempt(
            measure.measure_id, attempt, status=status, at=record.created, code=code, reason=reason, impaired_s=seconds
        ):
            return  # a duplicate, or an answer to an attempt already counted lost
        if status in ("succeeded", "already_applied"):
            self._store.set_state(measure.measure_id, MeasureState.SUCCEEDED)
        elif code in CAP_FAILURES and status in ("rolled_back", "rejected"):
            planned = seconds_text(planned_ms(measure.steps))
            why = (
                f"attempt {attempt} ran into the 10-minute cap (AGB 3.4 d; vehicle: {code}: {reason}); the plan "
                f"of {len(measure.steps)} step(s), {planned} declared, misjudged the time, so it is not sent "
                f"again as it is: re-plan it (backend-stub measure replan {measure.measure_id} --step ...) "
                "or re-send it unchanged on purpose (--same-plan)"
            )
            _LOGGER.warning("measure %s needs a new plan: %s", measure.measure_id, why)
            self._store.set_state(measure.measure_id, MeasureState.NEEDS_PLAN, why)
        elif status == "rejected" and code in FINAL_REJECTIONS:
            self._store.set_state(measure.measure_id, MeasureState.ABANDONED, f"vehicle refused it ({code}): {reason}")
        elif status == "rejected" and code == "expired":
            self._store.set_state(measure.measure_id, MeasureState.EXPIRED, reason)
        else:
            self._retry(measure, self._clock.now(), code, reason)
        _LOGGER.info(
            "measure %s attempt %d on %s: %s %s", measure.measure_id, attempt, record.vin, status[:40], code or ""
        )
