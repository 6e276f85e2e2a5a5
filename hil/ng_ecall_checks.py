"""NG eCall on the bench (issue 17): which transport carried the emergency call, its voice, who cleared it
down, and an MSD the PSAP asked for again — plus the two steps that drive them.

Steps (`[[step]] do = ...`):

- `network` (`offer = "lte_only" | "legacy_only" | "both"`): the simulated network's offer changes, as
  when the car drives out of an area with IMS emergency support (`hil.devices.modem_sim.Network`): the
  modem reports it by `+CNEMS1` / `+CREG` URCs;
- `request_msd`: the PSAP operator asks the vehicle for a fresh MSD in the emergency call that is up
  (an INFO with the send-data request over NG, SEND-MSD over the circuit-switched call).

Checks, each on the first emergency (non-test) call, read from both sides — the vehicle's `ecall`
records (its transitions, `transport` decisions and `ng_call_ended` report, tcu.ecall.ng) and the
backend's PSAPs (the CS stub, the NG stub, and the `psap_msds` table they share):

- `ecall_transport` (`transport`, `tried`): the MSD reached the PSAP over `transport` ("ng" or "cs"),
  decoded and acknowledged there, the vehicle reached msd_acknowledged, and the other PSAP took no
  emergency call; `tried`: the vehicle's transport decisions, in order (["ng", "cs"]: a fall-back);
- `ng_voice` (`min_packets`): RTP flowed both ways in the NG call, counted at both ends, and neither end
  received more than the other sent;
- `cleared_by_psap`: only the PSAP ended the call — its BYE (or CLEARDOWN) on the PSAP's books, "PSAP
  cleared down" on the vehicle's, and no hang-up from the vehicle (an automatic eCall's rule);
- `msd_resent` (`count`): at least `count` MSDs in that one call, each decoded, their message identifiers
  counting up by one, each acknowledged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hil.devices.modem_sim import ModemSimulator, Network
from hil.evidence_reads import ecall_session, ecall_transitions, msds
from hil.outcome import Outcome, number
from hil.run_context import RunContext
from hil.scenario import Step
from hil.scenario_agent_config import MODEM
from hil.timeline import EventKind
from tcu.errors import ConfigError

if TYPE_CHECKING:
    from backend_stub.psap import PsapCall
    from hil.expectations import Evidence

TRANSPORTS = ("cs", "ng")
_POSITIVE_ACK = "al-ack positive"  # both PSAPs' timeline name for an MSD acknowledged as received
_EMERGENCY = ("automatic", "manual")


# -- steps -----------------------------------------------------------------------------------------------
async def _network(run: RunContext, step: Step) -> None:
    modem = run.bench.devices.get(MODEM)
    if not isinstance(modem, ModemSimulator):
        raise ConfigError("network: the bench has no virtual modem (a real one is on a real network)")
    offer = Network(str(step.args.get("offer", "")))
    await modem.set_network(offer)
    run.event(EventKind.ACTION, "network", f"the network now offers {offer.value}")


async def _request_msd(run: RunContext, step: Step) -> None:
    backend = run.bench.backend
    for psap in (backend.psap_ng, backend.psap):
        call = None if psap is None else _up(psap.calls)
        if psap is not None and call is not None:
            await psap.request_msd(call.id)
            return
    raise LookupError("request_msd: no emergency call is up at either PSAP")


def _up(calls: list[Any]) -> Any:
    return next((call for call in reversed(calls) if call.kind in _EMERGENCY and call.active), None)


ACTIONS: dict[str, Callable[[RunContext, Step], Coroutine[Any, Any, None]]] = {
    "network": _network,
    "request_msd": _request_msd,
}


# -- what the evidence says ------------------------------------------------------------------------------
def _vehicle_reports(evidence: Evidence, event: str) -> list[dict[str, Any]]:
    bodies = [record.body for record in evidence.backend.store.records(evidence.vin, kind="ecall")]
    return [dict(body) for body in bodies if body.get("event") == event]


def _psap_calls(evidence: Evidence, transport: str) -> list[PsapCall]:
    psap = evidence.backend.psap_ng if transport == "ng" else evidence.backend.psap
    return [] if psap is None else [call for call in psap.calls if call.kind in _EMERGENCY]


def _first_emergency_rows(evidence: Evidence) -> list[dict[str, Any]]:
    """The PSAP's MSD rows of the first emergency call (both PSAPs share the table; call ids are per PSAP)."""
    rows = [row for row in msds(evidence) if row["kind"] in _EMERGENCY]
    if not rows:
        return []
    first = rows[0]
    return [row for row in rows if (row["transport"], row["call_id"]) == (first["transport"], first["call_id"])]


def _acks(call: PsapCall | None) -> int:
    return 0 if call is None else sum(1 for _, name in call.timeline if name == _POSITIVE_ACK)


def _call_of(evidence: Evidence, row: dict[str, Any]) -> PsapCall | None:
    return next((call for call in _psap_calls(evidence, row["transport"]) if call.id == row["call_id"]), None)


# -- checks ----------------------------------------------------------------------------------------------
def ecall_transport(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    expected = args.get("transport")
    if expected not in TRANSPORTS:
        raise ConfigError(f"transport = {expected!r}: expected one of {', '.join(TRANSPORTS)}")
    tried = args.get("tried")
    if tried is not None and (not isinstance(tried, list) or any(t not in TRANSPORTS for t in tried)):
        raise ConfigError(f"tried = {tried!r}: expected a list of {', '.join(TRANSPORTS)}")
    limit = f"MSD over {expected}" + ("" if tried is None else f", tried {'→'.join(tried)}")
    rows = _first_emergency_rows(evidence)
    if not rows:
        return Outcome(passed=False, detail="no emergency MSD at either PSAP", measured="no MSD", limit=limit)
    first = rows[0]
    failures = []
    if first["transport"] != expected:
        failures.append(f"the MSD came over {first['transport']}, not {expected}")
    if first["error"] is not None:
        failures.append(f"the PSAP could not decode it: {first['error']}")
    if _acks(_call_of(evidence, first)) == 0:
        failures.append("the PSAP never acknowledged it")
    other = next(t for t in TRANSPORTS if t != expected)
    if strays := _psap_calls(evidence, other):
        failures.append(f"the {other} PSAP took {len(strays)} emergency call(s) too")
    if not any(body.get("to") == "msd_acknowledged" for body in ecall_session(ecall_transitions(evidence))):
        failures.append("the vehicle never saw its MSD acknowledged")
    decisions = _vehicle_reports(evidence, "transport")
    chosen = [str(body.get("transport")) for body in decisions]
    if tried is not None and chosen != tried:
        failures.append(f"the vehicle tried {'→'.join(chosen) or 'nothing it reported'}, expected {'→'.join(tried)}")
    reasons = "; ".join(str(body.get("reason")) for body in decisions) or "no transport reports"
    detail = (
        f"MSD #{first['message_identifier']} of {first['kind']} call {first['call_id']} over {first['transport']}; "
        f"the vehicle chose {'→'.join(chosen) or '-'} ({reasons})"
    )
    return Outcome.unless(failures, detail, measured=f"over {first['transport']}", limit=limit)


def ng_voice(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    least = number(args, "min_packets", 25.0)  # half a second of 20 ms packets
    assert least is not None
    limit = f">= {least:.0f} RTP packets each way, at both ends"
    calls = _psap_calls(evidence, "ng")
    reports = [body for body in _vehicle_reports(evidence, "ng_call_ended") if body.get("role") == "uac"]
    if not calls or not reports:
        detail = f"{len(calls)} NG emergency call(s) at the PSAP, {len(reports)} NG call report(s) from the vehicle"
        return Outcome(passed=False, detail=detail, measured="no NG call", limit=limit)
    psap_sent, psap_received = int(getattr(calls[0], "rtp_sent", 0)), int(getattr(calls[0], "rtp_received", 0))
    car_sent, car_received = int(reports[0].get("rtp_sent", 0)), int(reports[0].get("rtp_received", 0))
    failures = [
        f"{name} {count} < {least:.0f}"
        for name, count in (
            ("vehicle sent", car_sent),
            ("PSAP received", psap_received),
            ("PSAP sent", psap_sent),
            ("vehicle received", car_received),
        )
        if count < least
    ]
    if psap_received > car_sent or car_received > psap_sent:
        failures.append("one end counted more packets than the other sent")
    measured = f"vehicle→PSAP {car_sent}/{psap_received}, PSAP→vehicle {psap_sent}/{car_received} (sent/received)"
    return Outcome.unless(failures, f"NG call {calls[0].id}: RTP {measured}", measured=measured, limit=limit)


def cleared_by_psap(evidence: Evidence, _args: dict[str, Any]) -> Outcome:
    limit = "ended by the PSAP alone"
    rows = _first_emergency_rows(evidence)
    call = None if not rows else _call_of(evidence, rows[0])
    bodies = ecall_session(ecall_transitions(evidence))
    cleared = next((body for body in bodies if body.get("to") == "cleared"), None)
    failures = []
    if call is None:
        failures.append("no emergency call with an MSD at either PSAP")
    elif call.ended_by != "psap":
        failures.append(f"the PSAP's books say it was ended by {call.ended_by or 'nobody (still up)'}")
    if cleared is None:
        failures.append("the vehicle never cleared the call")
    elif not str(cleared.get("reason", "")).startswith("PSAP cleared down"):
        failures.append(f"the vehicle cleared it by {cleared.get('reason')!r}")
    ended = [b for b in _vehicle_reports(evidence, "ng_call_ended") if b.get("role") == "uac"]
    if ended and "PSAP cleared down" not in str(ended[0].get("reason", "")):
        failures.append(f"the vehicle's NG call ended by {ended[0].get('reason')!r}")
    who = "-" if call is None else f"{rows[0]['transport']} call {call.id} ended by {call.ended_by}"
    detail = f"{who}; vehicle: {'-' if cleared is None else cleared.get('reason')}"
    return Outcome.unless(failures, detail, measured=who, limit=limit)


def msd_resent(evidence: Evidence, args: dict[str, Any]) -> Outcome:
    count = number(args, "count", 2.0)
    assert count is not None
    limit = f">= {count:.0f} MSDs in the call, identifiers +1 each, each acknowledged"
    rows = _first_emergency_rows(evidence)
    if not rows:
        return Outcome(passed=False, detail="no emergency MSD at either PSAP", measured="no MSD", limit=limit)
    identifiers = [row["message_identifier"] for row in rows]
    failures = []
    if len(rows) < count:
        failures.append(f"{len(rows)} MSD(s), expected {count:.0f}")
    if any(row["error"] is not None for row in rows):
        failures.append("an MSD did not decode")
    elif any(later != earlier + 1 for earlier, later in itertools.pairwise(identifiers)):
        failures.append(f"message identifiers {identifiers} do not count up by one")
    acks = _acks(_call_of(evidence, rows[0]))
    if acks < len(rows):
        failures.append(f"{acks} acknowledgement(s) for {len(rows)} MSDs")
    measured = f"{len(rows)} MSDs #{', #'.join(str(i) for i in identifiers)}, {acks} acknowledged"
    detail = f"{rows[0]['transport']} call {rows[0]['call_id']}: {measured}"
    return Outcome.unless(failures, detail, measured=measured, limit=limit)


CHECKS: dict[str, Callable[[Evidence, dict[str, Any]], Outcome]] = {
    "ecall_transport": ecall_transport,
    "ng_voice": ng_voice,
    "cleared_by_psap": cleared_by_psap,
    "msd_resent": msd_resent,
}
