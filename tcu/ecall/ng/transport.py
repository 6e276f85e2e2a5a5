"""Which transport carries an eCall: circuit-switched (the in-band modem) or NG over IMS/SIP, sans-I/O.

    decision = choose_transport(EcallTransport.AUTO, NetworkOffer(ims_emergency=True, legacy_cs=True))
    decision.transport        # Transport.NG
    decision.reason           # why, for the log and the call's report

The rules, after EN 17184 (NG eCall) and its fall-back to EN 16062 (CS eCall):

- The network offers NG eCall when the modem reports emergency bearer services in S1 mode (3GPP TS
  27.007 `+CNEMS1: 1`, enabled by `AT+CNEM=1`): then the eCall goes as an IMS emergency call.
- Without IMS emergency support and with 2G/3G present (the modem registered in the CS domain), the
  circuit-switched eCall.
- An NG attempt that fails before the PSAP answered falls back to the CS eCall at once when 2G/3G is
  present (`ng_failed=True`); the next redial tries NG first again.
- Neither offered (no coverage): the modem's dial, which refuses without coverage, so the state machine's
  redial rules ("no network at trigger time": redial when coverage returns) keep trying.
- `transport = "cs"` or `"ng"` in `[ecall]` forces one (benches, interop runs); a forced NG never falls
  back, a forced CS never tries NG.

`choose_transport` is total: every combination has one decision and a reason (the table test walks them).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EcallTransport(StrEnum):
    """`[ecall] transport`: what the configuration allows."""

    AUTO = "auto"
    CS = "cs"
    NG = "ng"


class Transport(StrEnum):
    """What one dial attempt uses."""

    CS = "cs"
    NG = "ng"


@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkOffer:
    """What the network offers, as the modem reports it."""

    ims_emergency: bool  # emergency bearer services in S1 mode (`+CNEMS1: 1`)
    legacy_cs: bool  # registered in the circuit-switched domain (2G/3G, `+CREG`)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportDecision:
    transport: Transport
    reason: str


def choose_transport(
    configured: EcallTransport, network: NetworkOffer, *, ng_failed: bool = False
) -> TransportDecision:
    """The transport for the next dial attempt; `ng_failed`: NG was just tried and failed before connecting."""
    if configured is EcallTransport.CS:
        return TransportDecision(transport=Transport.CS, reason="ecall.transport is cs")
    if configured is EcallTransport.NG:
        why = "ecall.transport is ng"
        if ng_failed:
            why += ": no fall-back to CS, NG again per the redial rules"
        elif not network.ims_emergency:
            why += " (the network reports no IMS emergency support)"
        return TransportDecision(transport=Transport.NG, reason=why)
    if network.ims_emergency and not ng_failed:
        return TransportDecision(transport=Transport.NG, reason="the network offers IMS emergency calls")
    if network.ims_emergency and network.legacy_cs:
        return TransportDecision(
            transport=Transport.CS, reason="the NG attempt failed before connecting: CS fall-back (2G/3G present)"
        )
    if network.ims_emergency:
        return TransportDecision(
            transport=Transport.NG,
            reason="the NG attempt failed before connecting and no 2G/3G is present: NG again per the redial rules",
        )
    if network.legacy_cs:
        return TransportDecision(transport=Transport.CS, reason="no IMS emergency support; 2G/3G present")
    return TransportDecision(
        transport=Transport.CS,
        reason="the network offers neither IMS emergency nor 2G/3G: the modem's dial, redialled per the rules",
    )
