"""One reconnect loop for every link we keep up: the serial device sources, the agent's MQTT uplink and
the backend's broker clients (the backoff itself is the pure `tcu.backoff.Backoff`).

    loop = ReconnectLoop(name="obd", backoff=Backoff(base_s=0.5, cap_s=30.0), rng=random.Random(),
                         on_down=lambda reason: state.mark_stale("obd", clock), failure_reason=describe)
    await loop.run(session)   # session: async () -> None, opens the link and serves until it fails

The backoff resets only after the link proved itself: `session` calls `loop.healthy()` once the link
works (a device initialised and answered, the broker accepted the connection), and the link then stays
up for `proven_after_s` (by default the backoff's cap). Opening a port or connecting is no proof — a pty
opens while the adapter behind it is mute, a broker accepts a connection and drops it at once (a
client-id takeover, an ACL, a proxy) — and resetting on either would hammer the far end at the base
rate forever. A link that stays up as long as the longest wait has earned a quick retry; one that drops
sooner keeps its delay growing.

`failure_reason(exc)` turns an exception that ended a session into the reason `on_down` is given, or
None for an exception that is no link failure (a bug): with `retry_unexpected` such a bug is logged with
its traceback and retried too (one broken device source must never take the vehicle picture down with
it), otherwise it propagates. Only cancellation (or a propagated bug) ends `run`.

Uptime is measured on `monotonic`, by default the running loop's clock: the clock `asyncio.sleep` runs
on, virtual on a HIL bench. A test that injects `sleep` injects `monotonic` with it.

This module is a leaf (the backend imports it): nothing here may import the agent's config or devices.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import NoReturn

from tcu.backoff import Backoff

_LOGGER = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
FailureReason = Callable[[Exception], str | None]


class ReconnectLoop:
    """Run a link's session again and again, waiting a capped, jittered backoff between failures."""

    def __init__(
        self,
        *,
        name: str,
        backoff: Backoff,
        rng: random.Random,
        on_down: Callable[[str], None],
        failure_reason: FailureReason,
        retry_unexpected: bool = True,
        proven_after_s: float | None = None,
        monotonic: Callable[[], float] | None = None,
        sleep: Sleep = asyncio.sleep,
        log_retries: bool = True,
    ) -> None:
        proven = backoff.cap_s if proven_after_s is None else proven_after_s
        if not proven >= 0:  # also refuses NaN, which would never prove anything
            raise ValueError(f"{name}: proven_after_s {proven_after_s} must be a number of seconds >= 0")
        self._name = name
        # False: the owner's `on_down` tells people about an outage once; each retry is only debug.
        self._retry_level = logging.WARNING if log_retries else logging.DEBUG
        self._backoff = backoff
        self._rng = rng
        self._on_down = on_down
        self._failure_reason = failure_reason
        self._retry_unexpected = retry_unexpected
        self._proven_after_s = proven
        self._monotonic = monotonic
        self._sleep = sleep
        self._attempt = 0
        self._up_since: float | None = None  # when the current session first said it works

    @property
    def attempt(self) -> int:
        """Failures since the last session that proved itself."""
        return self._attempt

    @property
    def proven_after_s(self) -> float:
        return self._proven_after_s

    def healthy(self) -> None:
        """The current session works: from now on its uptime counts towards the proof.

        Cheap and idempotent, so a reader may call it on every frame: only the first call of a session counts.
        """
        if self._up_since is None:
            self._up_since = self._now()

    def _now(self) -> float:
        return self._monotonic() if self._monotonic is not None else asyncio.get_running_loop().time()

    def _proven(self) -> bool:
        return self._up_since is not None and self._now() - self._up_since >= self._proven_after_s

    async def run(self, session: Callable[[], Awaitable[None]]) -> NoReturn:
        while True:
            self._up_since = None
            try:
                await session()
                reason = "session ended"
            except Exception as exc:
                described = self._failure_reason(exc)
                if described is None:
                    if not self._retry_unexpected:
                        raise  # not a link failure: a bug, let it surface
                    _LOGGER.exception("%s: unexpected failure", self._name)  # keep the rest alive, say so loudly
                    described = f"unexpected {type(exc).__name__}: {exc}"
                reason = described
            if self._proven():
                self._attempt = 0
            try:
                self._on_down(reason)
            except Exception:
                _LOGGER.exception("%s: on_down callback failed", self._name)
            delay = self._backoff.delay(self._attempt, self._rng)
            self._attempt += 1
            _LOGGER.log(
                self._retry_level, "%s: %s; retrying in %.2f s (attempt %d)", self._name, reason, delay, self._attempt
            )
            await self._sleep(delay)
