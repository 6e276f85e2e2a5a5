"""Telling the rest of the agent that an emergency call started pre-empting everything, or stopped.

    unsubscribe = announcer.subscribe(fn)     # fn(EcallActivity)
    announcer.schedule(activity)              # the eCall engine, after its step's modem commands

Listeners are never called inside the eCall engine: `schedule` only queues the call on the event loop, so
whatever a listener does (roll back a remote measure, apply a provisioning file that waited for the call)
happens after the engine has handed its commands to the modem, and a listener that raises is logged and
changes nothing for the call. A listener runs on the event loop: slow work belongs in a task or thread
of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tcu.ecall.state_machine import EcallState
from tcu.ecall.triggers import CallType

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class EcallActivity:
    """Told to subscribers when an eCall session starts pre-empting everything else, and when it stops."""

    started: bool
    session: int
    call_type: CallType
    state: EcallState
    at: datetime


ActivityListener = Callable[[EcallActivity], None]


class ActivityAnnouncer:
    def __init__(self) -> None:
        self._listeners: list[ActivityListener] = []

    def subscribe(self, listener: ActivityListener) -> Callable[[], None]:
        """Be told when an eCall starts (stop and roll back whatever you do) and ends; returns unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def schedule(self, activity: EcallActivity) -> None:
        """Tell every listener soon, on the event loop, in the order the activities happened."""
        asyncio.get_running_loop().call_soon(self._tell, activity)

    def _tell(self, activity: EcallActivity) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(activity)
            except Exception:  # a listener's bug is its own; the others are still told
                _LOGGER.exception("eCall activity listener %r failed on %s", listener, activity)
