"""What a call machine reports (a transition or a notice), and the backend record body it becomes.

Both emergency calls report the same way: the 112 eCall (`tcu.ecall.state_machine`) and the call to the
carmaker's call centre (`tcu.ecall.call_centre_call`); only their states differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, Protocol, Self, TypeVar

from tcu.ecall.triggers import CallType
from telematics_wire.records import to_millis

StateT = TypeVar("StateT", bound=StrEnum)


class ReportedSession(Protocol):
    """What a report tells of the session it belongs to."""

    @property
    def number(self) -> int: ...
    @property
    def call_type(self) -> CallType: ...
    @property
    def started(self) -> datetime: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CallReport(Generic[StateT]):
    """A transition (`event == "transition"`) or a notice, for the log and the backend."""

    event: str
    session: int
    call_type: CallType
    from_state: StateT
    to_state: StateT
    reason: str
    at: datetime
    session_started: datetime
    details: Mapping[str, str | int | float | bool] = field(default_factory=dict)

    @classmethod
    def about(
        cls,
        session: ReportedSession,
        *,
        event: str,
        from_state: StateT,
        to_state: StateT,
        reason: str,
        at: datetime,
        details: Mapping[str, str | int | float | bool],
    ) -> Self:
        """The report of `event` in `session`, as both call machines make it."""
        return cls(
            event=event,
            session=session.number,
            call_type=session.call_type,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            at=at,
            session_started=session.started,
            details=dict(details),
        )

    def body(self) -> dict[str, Any]:
        """The `ecall` record body the backend stores."""
        return {
            "event": self.event,
            "session": self.session,
            "session_started_ms": to_millis(self.session_started),
            "call_type": self.call_type.value,
            "from": self.from_state.value,
            "to": self.to_state.value,
            "reason": self.reason,
            "at_ms": to_millis(self.at),
            "elapsed_s": round((self.at - self.session_started).total_seconds(), 3),
            **self.details,
        }
