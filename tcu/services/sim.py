"""The SIM's service state, and the policy that keeps the 112 eCall out of reach of any deactivation.

    active                  telematics and eCall; the modem stays registered
    telematics_deactivated  eCall-only: the modem stays dormant (not registered), registers for an
                            eCall and stays registered for the PSAP's callback (T9, at most T10)
    fully_deactivated       no service at all — allowed only on a vehicle without the legal eCall

Regulation (EU) 2015/758 makes the 112 eCall part of the vehicle, not a service a contract can end;
Delegated Regulation 2017/79 Annex IV allows the 112 system to be inactive only while a third-party
eCall service is active and working (not modelled: this TCU has no TPS eCall). So on a legal-eCall
vehicle, ending telematics means eCall-only, never "off". `SimPolicy.decide` is the pure rule;
`Sim` holds the current state, applies the rule to every request and tells its listeners.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from tcu.errors import EcallDeactivationRefusedError
from telematics_wire.sim_state import SimState

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class SimDecision:
    allowed: bool
    current: SimState
    requested: SimState
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SimPolicy:
    legal_ecall: bool

    def decide(self, current: SimState, requested: SimState) -> SimDecision:
        def verdict(allowed: bool, reason: str) -> SimDecision:
            return SimDecision(allowed=allowed, current=current, requested=requested, reason=reason)

        if requested is SimState.UNKNOWN:
            return verdict(False, "the requested SIM state is unknown to this TCU; nothing changed")
        if requested is SimState.FULLY_DEACTIVATED and self.legal_ecall:
            return verdict(
                False,
                "this vehicle has the legal 112 eCall (Regulation (EU) 2015/758), which cannot be deactivated: "
                "its SIM can go eCall-only (telematics_deactivated) but not fully off",
            )
        if requested is current:
            return verdict(True, f"already {current.value}")
        if requested is SimState.TELEMATICS_DEACTIVATED:
            return verdict(True, "telematics off; the modem stays dormant and registers only for an eCall")
        if requested is SimState.FULLY_DEACTIVATED:
            return verdict(True, "SIM fully deactivated (vehicle without legal eCall): no eCall either")
        return verdict(True, "telematics and eCall active")

    def require(self, current: SimState, requested: SimState) -> SimDecision:
        decision = self.decide(current, requested)
        if not decision.allowed:
            raise EcallDeactivationRefusedError(f"SIM {current.value} → {requested.value} refused: {decision.reason}")
        return decision


def registration_wanted(state: SimState, *, ecall_engaged: bool) -> bool:
    """Whether the modem should be registered: always when active, in eCall-only mode only while an
    eCall or its callback window runs, never when fully deactivated."""
    if state is SimState.ACTIVE:
        return True
    if state is SimState.TELEMATICS_DEACTIVATED:
        return ecall_engaged
    return False


SimListener = Callable[[SimState], None]


class Sim:
    """The current SIM state; changed only through `request`, which applies the policy."""

    def __init__(self, policy: SimPolicy, state: SimState = SimState.ACTIVE) -> None:
        self.policy = policy
        self.coerced: str | None = None
        if not policy.decide(SimState.ACTIVE, state).allowed:
            # A stored "fully deactivated" (or unknown) state on a legal-eCall vehicle: refusing to start
            # would take eCall down too, so fall back to eCall-only and say so.
            self.coerced = f"stored SIM state {state.value} not allowed on this vehicle; using eCall-only"
            _LOGGER.error("%s", self.coerced)
            state = SimState.TELEMATICS_DEACTIVATED
        self._state = state
        self._listeners: list[SimListener] = []

    @property
    def state(self) -> SimState:
        return self._state

    @property
    def ecall_available(self) -> bool:
        return self._state is not SimState.FULLY_DEACTIVATED

    def request(self, requested: SimState) -> SimDecision:
        """Move to `requested`; raises `EcallDeactivationRefusedError` with the reason when the policy refuses."""
        decision = self.policy.require(self._state, requested)
        if requested is not self._state:
            _LOGGER.info("SIM %s → %s: %s", self._state.value, requested.value, decision.reason)
            self._state = requested
            for listener in tuple(self._listeners):
                try:
                    listener(requested)
                except Exception:
                    _LOGGER.exception("SIM listener %r failed", listener)
        return decision

    def subscribe(self, listener: SimListener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)
