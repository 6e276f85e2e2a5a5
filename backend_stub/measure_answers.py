"""What the vehicle says about a measure, as the scheduler reads it: which refusals are final, which
ask a person for a new plan, what a failed attempt waits for, and the SIM as the vehicle's newest
capability report states it. A vehicle's text and numbers are bounded before they are stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

FINAL_REJECTIONS = frozenset(
    {
        "bad_signature",
        "other_vehicle",
        "vehicle_function",
        "personal_data",
        "outside_fault",
        "unknown_service",
        "unknown_key",
        "bad_value",
        "malformed",
        "oversize",
    }
)
# A failure that says the plan misjudged the time (AGB 3.4 d): a person re-plans, no blind retry.
CAP_FAILURES = frozenset({"time_cap", "over_cap"})
MAX_REASON_CHARS = 1000  # a vehicle's reason is stored and shown; longer is cut
MAX_IMPAIRED_S = 86_400.0  # an attempt is capped at 10 minutes; a longer impairment is not a real one
# What a failed attempt waits for before the next one may go at once (else: the backoff). "sim_active"
# has no backoff at all: only a report of an active SIM (or the deadline) ends the wait.
SIM_INACTIVE = "sim_inactive"
WAITS_FOR = {"coverage_lost": "online", "vehicle_state_not_allowed": "allowed_state", SIM_INACTIVE: "sim_active"}


@dataclass(frozen=True, slots=True)
class SimReport:
    """The SIM state of a vehicle's newest capability report, and when the backend received it."""

    state: str  # telematics_wire.sim_state.SimState's value: active, telematics_deactivated, fully_deactivated, ...
    received: datetime


class StoredReport(Protocol):
    """A stored capability report (backend_stub.provisioning_history.CapabilityReport)."""

    @property
    def report(self) -> Mapping[str, Any]: ...
    @property
    def received(self) -> datetime: ...


def sim_of(report: StoredReport | None) -> SimReport | None:
    """What a stored capability report says of the SIM; None without a report or a readable `sim`."""
    if report is None or not isinstance(report.report.get("sim"), str):
        return None
    return SimReport(state=report.report["sim"], received=report.received)


def impaired_seconds(value: object) -> float | None:
    """A vehicle's impaired duration as stored: a finite, non-negative number of seconds, or nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and value > MAX_IMPAIRED_S:
        return None  # also keeps a 5,000-digit integer away from float()
    return float(value) if 0 <= value <= MAX_IMPAIRED_S else None


def answer_text(value: object) -> str | None:
    """A vehicle's code or reason as stored: text (cut to MAX_REASON_CHARS) or nothing."""
    return value[:MAX_REASON_CHARS] if isinstance(value, str) else None
