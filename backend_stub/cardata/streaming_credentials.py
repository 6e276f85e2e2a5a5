"""Keeps Mosquitto's dynamic-security clients in step with the CarData tokens: who may stream, until when.

username = gcid, password = the newest id_token, a role confining it to `<gcid>/#` (the commands:
`backend_stub.cardata.dynsec_commands`). A gcid is disabled — and its connection ended — when its
newest id_token expires (a check every `check_every_s` against the injected clock) or when the backend
says so (`revoke_all`: every consent ended, an owner change, a revoked sign-in).

Desired state, then reconciliation: each change replaces what is still to be sent for that gcid, and
a sender applies it whenever the admin connection is up, again after every reconnect (the commands are
idempotent), until the broker answers. A caller that must know (a test, a bench) awaits `applied(gcid)`;
the token endpoint never waits on the broker. The sync entry points (`tokens_issued`, `tokens_revoked`,
`revoke_all`) may be called from another thread (the database thread): they hop onto the loop.

BMW allows one streaming connection per account; the plugin client is per gcid, so two third parties of
one owner share it, and the newest token wins (see `dynsec_commands`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from backend_stub.broker_link import serve_reconnecting
from backend_stub.cardata.dynsec_commands import (
    CONTROL_TOPIC,
    RESPONSE_TOPIC,
    DynsecError,
    command_message,
    disable_commands,
    enable_commands,
    failures,
    parse_responses,
)
from backend_stub.cardata.tokens import SCOPE_STREAMING, TokenSet
from tcu.broker_config import BrokerConfig
from tcu.clock import Clock
from tcu.uplink.mqtt_port import ClientFactory, MqttClient

__all__ = ["StreamingCredentials"]
_LOGGER = logging.getLogger(__name__)


@dataclass(slots=True)
class _Batch:
    """Commands published for one gcid, waiting for the broker's answers."""

    gcid: str
    generation: int
    waiting: set[str]
    results: list[Any] = field(default_factory=list)


class StreamingCredentials:
    """The broker's CarData streaming accounts; `run()` under the backend's TaskGroup."""

    def __init__(
        self,
        broker: BrokerConfig,
        clock: Clock,
        *,
        identifier: str = "backend-stub-dynsec",
        check_every_s: float = 30.0,
        may_stream: Callable[[str], bool] | None = None,
        clients: ClientFactory | None = None,
    ) -> None:
        self._broker, self._clock, self._identifier = broker, clock, identifier
        self._check_every_s, self._may_stream, self._clients = check_every_s, may_stream, clients
        self._expiries: dict[str, datetime] = {}  # enabled gcids → their newest id_token's expiry
        self._pending: dict[str, tuple[int, list[dict[str, Any]]]] = {}  # gcid → (generation, commands)
        self._generation = 0
        self._batches: dict[str, _Batch] = {}  # correlation → its batch
        self._errors: dict[str, str] = {}  # gcid → why its last change failed
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what the backend tells us (sync, any thread) --------------------------------------------

    def tokens_issued(self, tokens: TokenSet) -> None:
        """New tokens (`DeviceFlow` listener): the id_token becomes the gcid's password, if it may stream."""
        self._on_loop(self._issue, tokens)

    def tokens_revoked(self, gcid: str) -> None:
        """A revoked sign-in (`DeviceFlow` listener): the gcid may no longer stream."""
        self._on_loop(self._disable, gcid, "its sign-in was revoked")

    def revoke_all(self, gcid: str) -> None:
        """Every consent of `gcid` ended (or the owner changed): refuse and disconnect it now."""
        self._on_loop(self._disable, gcid, "every consent ended")

    def track(self, expiries: Mapping[str, datetime]) -> None:
        """At start, the accounts the token store knows (`DeviceFlow.streaming_expiries()`): those already
        expired are disabled (they may have expired while the backend was down), the others watched."""
        for gcid, expires in expiries.items():
            self._expiries.setdefault(gcid, expires)
        self.expire_due()

    # -- the checks ------------------------------------------------------------------------------

    def expire_due(self, now: datetime | None = None) -> list[str]:
        """Disable every gcid whose newest id_token has expired by `now`; the gcids disabled."""
        now = now or self._clock.now()
        expired = sorted(gcid for gcid, expires in self._expiries.items() if expires <= now)
        for gcid in expired:
            self._disable(gcid, "its id_token expired")
        return expired

    def expiry_of(self, gcid: str) -> datetime | None:
        """When the gcid's streaming password expires; None when it may not stream."""
        return self._expiries.get(gcid)

    async def applied(self, gcid: str) -> None:
        """Return once the broker holds what was last asked for `gcid`; `DynsecError` if it refused."""
        async with self._changed:
            await self._changed.wait_for(lambda: gcid not in self._pending)
        error = self._errors.get(gcid)
        if error is not None:
            raise DynsecError(f"the broker refused the streaming account {gcid}: {error}")

    # -- the connection --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect as the dynamic-security admin (reconnecting) and apply changes; check expiries."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._check_expiries(), name="cardata-streaming-expiry")
            tasks.create_task(
                serve_reconnecting(
                    self._broker,
                    identifier=self._identifier,
                    serve=self._serve,
                    on_down=lambda reason: _LOGGER.warning("CarData streaming admin link down: %s", reason),
                    clients=self._clients,
                ),
                name="cardata-streaming-admin",
            )

    async def _check_expiries(self) -> None:
        while True:
            self.expire_due()
            await asyncio.sleep(self._check_every_s)

    async def _serve(self, client: MqttClient) -> None:
        await client.subscribe(RESPONSE_TOPIC, qos=1)
        self._batches.clear()  # answers to a lost connection's commands never come: send them again
        self._wake.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._read(client), name="cardata-streaming-answers")
            tasks.create_task(self._send(client), name="cardata-streaming-commands")

    async def _send(self, client: MqttClient) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            in_flight = {(batch.gcid, batch.generation) for batch in self._batches.values()}
            for gcid, (generation, commands) in list(self._pending.items()):
                if (gcid, generation) in in_flight:
                    continue
                payload, correlations = command_message(commands, secrets.token_hex(6))
                batch = _Batch(gcid=gcid, generation=generation, waiting=set(correlations))
                self._batches.update(dict.fromkeys(correlations, batch))
                await client.publish(CONTROL_TOPIC, payload, qos=1)

    async def _read(self, client: MqttClient) -> None:
        async for message in client.messages:
            try:
                results = parse_responses(message.payload)
            except DynsecError as exc:  # one bad answer is one log line, never the end of the link
                _LOGGER.warning("ignored a dynamic-security answer: %s", exc)
                continue
            for result in results:
                batch = self._batches.pop(result.correlation or "", None)
                if batch is None:
                    continue  # another admin's answer, or one of a batch we already gave up on
                batch.waiting.discard(result.correlation or "")
                batch.results.append(result)
                if not batch.waiting:
                    await self._finish(batch)

    async def _finish(self, batch: _Batch) -> None:
        wrong = failures(batch.results)
        if wrong:
            reason = "; ".join(f"{result.command}: {result.error}" for result in wrong)
            _LOGGER.error("dynamic-security refused the streaming account %s: %s", batch.gcid, reason)
            self._errors[batch.gcid] = reason
        else:
            self._errors.pop(batch.gcid, None)
        if self._pending.get(batch.gcid, (None,))[0] == batch.generation:  # nothing newer was asked since
            del self._pending[batch.gcid]
        async with self._changed:
            self._changed.notify_all()

    # -- inside ----------------------------------------------------------------------------------

    def _issue(self, tokens: TokenSet) -> None:
        if tokens.id_token is None or SCOPE_STREAMING not in tokens.scope.split():
            return
        if self._may_stream is not None and not self._may_stream(tokens.gcid):
            _LOGGER.info("CarData streaming stays off for gcid %s: no consent to stream", tokens.gcid)
            return
        self._expiries[tokens.gcid] = tokens.expires
        self._want(tokens.gcid, enable_commands(tokens.gcid, tokens.id_token))

    def _disable(self, gcid: str, why: str) -> None:
        self._expiries.pop(gcid, None)
        _LOGGER.info("CarData streaming disabled for gcid %s: %s", gcid, why)
        self._want(gcid, disable_commands(gcid))

    def _want(self, gcid: str, commands: list[dict[str, Any]]) -> None:
        self._generation += 1
        self._pending[gcid] = (self._generation, commands)
        self._wake.set()

    def _on_loop(self, action: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            action(*args)
        else:
            loop.call_soon_threadsafe(action, *args)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
