"""Keeps Mosquitto's dynamic-security clients in step with the CarData tokens: who may stream, until when.

username = gcid, password = the newest id_token, a role confining it to `<gcid>/#` (the commands:
`backend_stub.cardata.dynsec_commands`). A gcid is disabled — and its connection ended — when its
newest id_token expires (a check every `check_every_s` against the injected clock) or when the backend
says so (`revoke_all`, `tokens_revoked`: a revoked sign-in).

Consent decides too (`may_stream(gcid)`: the owner consents to some client on some vehicle). A token
issued while there is none is kept back, not enabled; a gcid whose last consent ended is disabled and
its token kept back. The backend says when a gcid's consents changed (`consents_changed`: a grant or
revoke through the backend, an owner change), and every check also reviews all gcids we hold a token
for, which catches changes made by another process (`backend-stub cardata revoke`, an unlink).
`may_stream` is a database read: it runs on the thread that calls `tokens_issued`/`consents_changed`
(the backend's database thread) and, for the periodic review, through `run` (the same thread).

`holder(gcid)` is the client whose token holds the gcid's streaming login now (the newest wins): the
streamer sends it the keys that client may receive (`backend_stub.cardata.streaming`). A new client
becomes the holder only once the broker confirmed its password (and so ended the old client's
connection); a disabled gcid has none at once.

Desired state, then reconciliation: each change replaces what is still to be sent for that gcid, and
a sender applies it whenever the admin connection is up, again after every reconnect (the commands are
idempotent), until the broker answers. A caller that must know awaits `applied(gcid)`: the token
endpoint does, for at most a moment (oauth_routes.STREAMING_WAIT_S), so a client that connects as soon
as it has its id_token finds the login there. The sync entry points (`tokens_issued`, `tokens_revoked`,
`revoke_all`) may be called from another thread (the database thread): they hop onto the loop.

BMW allows one streaming connection per account; the plugin client is per gcid, so two third parties of
one owner share it, and the newest token wins (see `dynsec_commands`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
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
        run: Callable[[Callable[[], dict[str, bool]]], Awaitable[dict[str, bool]]] | None = None,
        clients: ClientFactory | None = None,
    ) -> None:
        self._broker, self._clock, self._identifier = broker, clock, identifier
        self._check_every_s, self._may_stream, self._clients = check_every_s, may_stream, clients
        self._run = run  # where `may_stream` runs for the periodic review; None: inline
        self._expiries: dict[str, datetime] = {}  # enabled gcids → their newest id_token's expiry
        self._holders: dict[str, str] = {}  # enabled gcids → the client whose token the broker holds as password
        # gcid → (generation, client) that becomes the holder once the broker confirms that generation: until
        # then the old holder's connection is still up, and must not be sent the new client's keys
        self._promoting: dict[str, tuple[int, str]] = {}
        self._kept: dict[str, TokenSet] = {}  # gcids with a live streaming token → it (enabled or kept back)
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
        if tokens.id_token is None or SCOPE_STREAMING not in tokens.scope.split():
            return
        self._on_loop(self._issue, tokens, self._allowed(tokens.gcid))

    def tokens_revoked(self, gcid: str) -> None:
        """A revoked sign-in (`DeviceFlow` listener): the gcid may no longer stream."""
        self._on_loop(self._forget, gcid, "its sign-in was revoked")

    def revoke_all(self, gcid: str) -> None:
        """Every consent of `gcid` ended (or the owner changed): refuse and disconnect it now. Its token
        is kept back: a consent granted again before it expires lets it stream again."""
        self._on_loop(self._disable, gcid, "every consent ended")

    def consents_changed(self, gcid: str) -> None:
        """A consent of `gcid` was granted or ended (or its link ended): enable or disable it to match."""
        self._on_loop(self._review, {gcid: self._allowed(gcid)})

    def holder(self, gcid: str) -> str | None:
        """The client whose token holds the gcid's streaming login now; None when it may not stream.
        Any thread may ask (the streamer's database thread does)."""
        return self._holders.get(gcid)

    def track(self, expiries: Mapping[str, datetime], *, holders: Mapping[str, str] | None = None) -> None:
        """At start, the accounts the token store knows (`DeviceFlow.streaming_expiries()` and
        `.streaming_holders()`): those already expired are disabled (they may have expired while the
        backend was down), the others watched."""
        for gcid, expires in expiries.items():
            self._expiries.setdefault(gcid, expires)
            if holders is not None and gcid in holders:
                self._holders.setdefault(gcid, holders[gcid])
        self.expire_due()

    # -- the checks ------------------------------------------------------------------------------

    def expire_due(self, now: datetime | None = None) -> list[str]:
        """Disable every gcid whose newest id_token has expired by `now`; the gcids disabled."""
        now = now or self._clock.now()
        expired = sorted(gcid for gcid, expires in self._expiries.items() if expires <= now)
        for gcid in expired:
            self._forget(gcid, "its id_token expired")
        for gcid in [gcid for gcid, tokens in self._kept.items() if tokens.expires <= now]:
            del self._kept[gcid]  # kept back and expired: nothing left to enable
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
            try:
                self.expire_due()
                await self.review_all()
            except Exception as exc:
                # one failed pass (a locked database, a bad gcid) must not end the backend's TaskGroup,
                # ingest included: log it and check again at the next pass
                _LOGGER.error("CarData streaming check failed, retrying in %.0f s: %r", self._check_every_s, exc)
            await asyncio.sleep(self._check_every_s)

    async def review_all(self) -> None:
        """Re-check consent for every gcid we hold a token for (changes another process made)."""
        gcids = sorted(self._kept.keys() | self._expiries.keys())
        if self._may_stream is None or not gcids:
            return

        def verdicts() -> dict[str, bool]:
            return {gcid: self._allowed(gcid) for gcid in gcids}

        self._review(await self._run(verdicts) if self._run is not None else verdicts())

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
        promoting = self._promoting.get(batch.gcid)
        if promoting is not None and promoting[0] == batch.generation:
            del self._promoting[batch.gcid]
            if wrong:  # the broker's login is uncertain now: nobody is sent anything
                self._holders.pop(batch.gcid, None)
            else:
                self._holders[batch.gcid] = promoting[1]
        async with self._changed:
            self._changed.notify_all()

    # -- inside ----------------------------------------------------------------------------------

    def _allowed(self, gcid: str) -> bool:
        return self._may_stream is None or self._may_stream(gcid)

    def _issue(self, tokens: TokenSet, allowed: bool) -> None:
        self._kept[tokens.gcid] = tokens
        if allowed:
            self._enable(tokens)
        elif tokens.gcid in self._expiries:  # its consents ended since its last token
            self._disable(tokens.gcid, "no consent to stream")
        else:
            _LOGGER.info("CarData streaming stays off for gcid %s: no consent to stream", tokens.gcid)

    def _enable(self, tokens: TokenSet) -> None:
        assert tokens.id_token is not None  # tokens_issued keeps only tokens with one
        commands = enable_commands(tokens.gcid, tokens.id_token)
        self._expiries[tokens.gcid] = tokens.expires
        self._want(tokens.gcid, commands)
        self._promoting[tokens.gcid] = (self._generation, tokens.client_id)  # the holder once the broker confirms

    def _review(self, verdicts: Mapping[str, bool]) -> None:
        for gcid, allowed in verdicts.items():
            try:
                self._review_one(gcid, allowed)
            except ValueError as exc:  # a gcid no command may carry (dynsec_commands): the others still count
                _LOGGER.error("CarData streaming review skipped gcid %r: %s", gcid[:80], exc)

    def _review_one(self, gcid: str, allowed: bool) -> None:
        kept = self._kept.get(gcid)
        if allowed and gcid not in self._expiries and kept is not None and kept.expires > self._clock.now():
            _LOGGER.info("CarData streaming enabled for gcid %s: a consent was granted", gcid)
            self._enable(kept)
        elif not allowed and gcid in self._expiries:
            self._disable(gcid, "every consent ended")

    def _disable(self, gcid: str, why: str) -> None:
        self._expiries.pop(gcid, None)
        self._holders.pop(gcid, None)
        self._promoting.pop(gcid, None)
        _LOGGER.info("CarData streaming disabled for gcid %s: %s", gcid, why)
        self._want(gcid, disable_commands(gcid))

    def _forget(self, gcid: str, why: str) -> None:
        self._kept.pop(gcid, None)
        self._disable(gcid, why)

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
