"""Checks of the long-horizon scenarios (virtual time): a measure's real duration, a service's state at a
moment of the scenario, the eCall ended by its T2 fallback.

Each measures what a shortcut would get wrong, on two clocks where there are two:

- `measure_attempt`: one attempt of a remote measure, as the backend recorded it — its status and
  code, the seconds the vehicle says it impaired services (`impaired.seconds` of its
  `measure_result`, AGB 3.4 d), and the span between the backend sending the attempt and receiving
  its answer, on the backend's own clock. An attempt whose steps finished at once, or a vehicle that
  reported a duration it did not spend, fails `min_s`.
- `service_at`: the state of an option code in the vehicle's last capability report made at or before
  a scenario second (after an `advance_calendar` step, the report's wall time is placed in the
  calendar period it belongs to): a term that ends on the right day, not merely at some point.
- `ecall_cleared_by_t2`: the first emergency eCall was connected once (no redial, no drop), its MSD
  acknowledged without a T5/T6/T7 fallback, and ended by the vehicle's T2 clear-down `t2_s` after the
  PSAP answered — on the vehicle's clock (its `ecall` records) and on the PSAP's (who hung up, when).
- `personal_settings`: the driver profiles and paired accounts in the car's personal data file at the
  end, e.g. after a measure was rolled back and retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hil.outcome import Outcome, number
from tcu.errors import ConfigError
from tcu.services.personal import PersonalStore

if TYPE_CHECKING:
    from backend_stub.measure_store import Attempt
    from hil.expectations import Evidence

SERVICE_STATES = ("running", "suspended", "partly suspended", "off")
_TIMER_FALLBACKS = ("T5:", "T6:", "T7:")  # tcu.ecall.state_machine: the MSD phase gave up waiting
_MS_SLACK = 1  # the vehicle stamps transitions in whole milliseconds


def _number(args: dict[str, Any], key: str) -> float | None:
    value = number(args, key)
    if value is not None and value < 0:
        raise ConfigError(f"{key} = {value!r}: expected a number of seconds >= 0")
    return value


def _seconds(args: dict[str, Any], key: str, default: float) -> float:
    value = _number(args, key)
    return default if value is None else value


def _attempt_number(args: dict[str, Any]) -> int | None:
    value = args.get("attempt")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"attempt = {value!r}: expected an attempt number from 1")
    return value


def _bounds_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g}..{high:g} s"
    if low is not None:
        return f">= {low:g} s"
    return "any" if high is None else f"<= {high:g} s"


# -- measure_attempt -------------------------------------------------------------------------------


def _describe(attempt: Attempt) -> str:
    return f"#{attempt.attempt} {attempt.status}{f' ({attempt.code})' if attempt.code else ''}"


def measure_attempt(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """One attempt (default the last) of measure `id`: status, code, and its duration within min_s..max_s."""
    measure_id = str(args["id"])
    wanted = _attempt_number(args)
    low, high = _number(args, "min_s"), _number(args, "max_s")
    limit = _bounds_text(low, high)
    history = evidence.backend.measure_store.history(measure_id)
    attempt = (
        (history[-1] if history else None)
        if wanted is None
        else next((a for a in history if a.attempt == wanted), None)
    )
    if attempt is None:
        which = "any attempt" if wanted is None else f"attempt {wanted}"
        seen = ", ".join(_describe(a) for a in history) or "none"
        return Outcome(passed=False, detail=f"measure {measure_id}: no {which} (attempts: {seen})", limit=limit)
    failures = []
    for key, found in (("status", attempt.status), ("code", attempt.code)):
        if key in args and str(args[key]) != found:
            failures.append(f"{key} {found!r}, expected {args[key]!r}")
    impaired = attempt.impaired_s
    span = None if attempt.ended is None else (attempt.ended - attempt.sent).total_seconds()
    if impaired is None or span is None:
        failures.append("the vehicle reported no duration" if span is not None else "no answer from the vehicle")
    else:
        if (low is not None and impaired < low) or (high is not None and impaired > high):
            failures.append(f"the vehicle impaired services for {impaired:g} s, outside {limit}")
        # The backend sent the order before the vehicle started and received the answer after it ended:
        # on its clock at least as much time passed, or the vehicle's figure is not what happened.
        if span < impaired or (low is not None and span < low):
            failures.append(f"the backend saw only {span:.3f} s between sending and the answer")
    spent = "no duration" if impaired is None else f"impaired {impaired:g} s"
    seen = "no answer" if span is None else f"{span:.3f} s from sending to the answer at the backend"
    detail = f"measure {measure_id} attempt {_describe(attempt)}: {spent} (vehicle), {seen}"
    if failures:
        detail += "; " + "; ".join(failures)
    measured = "none" if impaired is None else f"{impaired:g} s"
    return Outcome(passed=not failures, detail=detail, measured=measured, limit=limit)


# -- service_at ------------------------------------------------------------------------------------


def _state(report: dict[str, Any], service: str) -> str:
    """As hil.billing's service_history names it."""
    running, suspended = service in report.get("running", []), service in report.get("suspended", [])
    if running and suspended:
        return "partly suspended"
    if running:
        return "running"
    return "suspended" if suspended else "off"


def service_at(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """The option code's state in the vehicle's last capability report made at or before scenario second `at`."""
    service, wanted = str(args["service"]), str(args["state"])
    if wanted not in SERVICE_STATES:
        raise ConfigError(f"state = {wanted!r}: expected one of {', '.join(SERVICE_STATES)}")
    at = _number(args, "at")
    if at is None:
        raise ConfigError("needs at = the scenario second to look at")
    if evidence.scenario_seconds is None:
        raise ConfigError("the runner gave no scenario time axis for the vehicle's stamps")
    reports = [
        (evidence.scenario_seconds(record.created), record)
        for record in evidence.backend.store.records(evidence.vin, kind="event")
        if record.body.get("type") == "capabilities"
    ]
    before = [(t, record) for t, record in reports if t <= at]
    limit = f"{wanted} at {at:g} s"
    if not before:
        return Outcome(
            passed=False,
            detail=f"no capability report made by {at:g} s ({len(reports)} in all)",
            measured="no report",
            limit=limit,
        )
    t, record = before[-1]
    state = _state(dict(record.body), service)
    detail = (
        f"{service} {state} in the report made at {t:.1f} s, dated {record.created.date().isoformat()} "
        f"(provisioning version {record.body.get('provisioning_version')})"
    )
    return Outcome(passed=state == wanted, detail=detail, measured=state, limit=limit)


# -- ecall_cleared_by_t2 ---------------------------------------------------------------------------


def _emergency_session(evidence: Evidence) -> list[dict[str, Any]]:
    bodies = [
        record.body
        for record in evidence.backend.store.records(evidence.vin, kind="ecall")
        if record.body.get("event") == "transition"
        and isinstance(record.body.get("at_ms"), int)
        and not isinstance(record.body["at_ms"], bool)
    ]
    first = next((b for b in bodies if b.get("to") == "triggered" and b.get("call_type") != "test"), None)
    if first is None:
        return []
    return sorted((b for b in bodies if b.get("session") == first.get("session")), key=lambda b: int(b["at_ms"]))


def _psap_side(evidence: Evidence, t2_s: float, tolerance: float) -> tuple[str, str | None]:
    """What the PSAP saw of the first emergency call: a description, and what is wrong with it (or None).
    Its clock is the backend's and its stamps include the network, so it gets the tolerance both ways."""
    psap = evidence.backend.psap
    call = None if psap is None else next((c for c in psap.calls if c.kind in ("automatic", "manual")), None)
    if call is None:
        return "no PSAP call", "the PSAP took no emergency call"
    connected = call.at("connected")
    ended = next((t for t, name in call.timeline if name.startswith("ended by")), None)
    if connected is None or ended is None:
        text = f"PSAP call {call.id} {'never answered' if connected is None else 'not ended'}"
        return text, text
    text = f"PSAP call {call.id} ended by {call.ended_by} {ended - connected:.1f} s after it answered"
    if call.ended_by != "ivs":
        return text, f"{text}: the vehicle should have hung up"
    if not t2_s - tolerance <= ended - connected <= t2_s + tolerance:
        return text, f"{text}: not at T2"
    return text, None


def ecall_cleared_by_t2(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    t2_s, tolerance = _seconds(args, "t2_s", 3600.0), _seconds(args, "tolerance_s", 5.0)
    limit = f"T2 clear-down {t2_s:g}..{t2_s + tolerance:g} s after the PSAP answered"
    bodies = _emergency_session(evidence)
    if not bodies:
        return Outcome(passed=False, detail="no emergency eCall at the backend", measured="no call", limit=limit)
    failures = []
    dials = sum(1 for b in bodies if b.get("to") == "dialling")
    if dials != 1:
        failures.append(f"{dials} dial attempts, expected 1")
    established = next((b for b in bodies if b.get("to") == "call_established"), None)
    if established is None:
        return Outcome(passed=False, detail="the eCall never connected", measured="not connected", limit=limit)
    after = [b for b in bodies if int(b["at_ms"]) >= int(established["at_ms"])]
    if not any(b.get("to") == "msd_acknowledged" for b in after):
        failures.append("the MSD was never acknowledged")
    failures += [f"{b.get('from')} → {b.get('to')}: {b.get('reason')}" for b in after if b.get("to") == "triggered"]
    failures += [f"fallback {b.get('reason')}" for b in after if str(b.get("reason", "")).startswith(_TIMER_FALLBACKS)]
    cleared = next((b for b in after if b.get("to") == "cleared"), None)
    if cleared is None:
        failures.append("the call was never cleared")
        vehicle_s = None
    else:
        vehicle_s = (int(cleared["at_ms"]) - int(established["at_ms"])) / 1000
        if not str(cleared.get("reason", "")).startswith("T2"):
            failures.append(f"cleared by {cleared.get('reason')!r}, not by T2")
        if not t2_s - _MS_SLACK / 1000 <= vehicle_s <= t2_s + tolerance:
            failures.append(f"cleared {vehicle_s:.3f} s after the PSAP answered")
    psap_text, psap_problem = _psap_side(evidence, t2_s, tolerance)
    if psap_problem is not None:
        failures.append(psap_problem)
    vehicle_text = "never cleared" if vehicle_s is None else f"cleared {vehicle_s:.3f} s after the PSAP answered"
    detail = f"eCall session {bodies[0].get('session')}: {dials} dial(s), {vehicle_text} (vehicle); {psap_text}"
    if failures:
        detail += "; " + "; ".join(failures)
    measured = "never" if vehicle_s is None else f"{vehicle_s:.3f} s"
    return Outcome(passed=not failures, detail=detail, measured=measured, limit=limit)


# -- personal_settings -----------------------------------------------------------------------------


def _names(args: dict[str, Any], key: str) -> list[str] | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"{key} = {value!r}: expected a list of names")
    return list(value)


def personal_settings(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    """The car's personal data file holds exactly these driver profiles and paired accounts, in order:
    what a remote measure must never lose (AGB 3.4 d), whatever it rolled back."""
    profiles, accounts = _names(args, "profiles"), _names(args, "accounts")
    if profiles is None and accounts is None:
        raise ConfigError("needs profiles = [...] or accounts = [...]")
    if evidence.personal_path is None:
        raise ConfigError("the runner gave no personal data file of the car")
    data = PersonalStore(evidence.personal_path).load()
    found_profiles, found_accounts = [p.name for p in data.profiles], list(data.paired_accounts)
    failures = []
    if profiles is not None and found_profiles != profiles:
        failures.append(f"driver profiles {found_profiles}, expected {profiles}")
    if accounts is not None and found_accounts != accounts:
        failures.append(f"paired accounts {found_accounts}, expected {accounts}")
    detail = f"the car holds driver profiles {found_profiles} and paired accounts {found_accounts}"
    if failures:
        detail += "; " + "; ".join(failures)
    limit = ", ".join(f"{k} {v}" for k, v in (("profiles", profiles), ("accounts", accounts)) if v is not None)
    return Outcome(passed=not failures, detail=detail, measured=f"profiles {found_profiles}", limit=limit)


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], Outcome]] = {
    "measure_attempt": measure_attempt,
    "service_at": service_at,
    "ecall_cleared_by_t2": ecall_cleared_by_t2,
    "personal_settings": personal_settings,
}
