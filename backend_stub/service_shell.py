"""One shell for the backend's MQTT services (ingest, provisioning, measures, accounts).

A service is its handlers; the shell does the rest, the same way for each:

- the MQTT link: connect as the service's own client, subscribe, hand the client to the service's
  `serve`, and reconnect when the link fails (`backend_stub.broker_link`), keeping `connected` up to date;
- the service's loops, named, in one `asyncio.TaskGroup`; a loop step that fails for any reason but the
  link is logged with its reason and tried again at the next wake-up: the service keeps running;
- database work, handed to the backend's database thread (`offload`) so the loop that also runs the
  PSAP never waits on a lock or an fsync; without a thread (unit tests, one-shot tools) it runs inline;
- the `EventInbox` through which ingest's observers hand a service the events it books.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Generic, NoReturn, ParamSpec, TypeVar

import aiomqtt

from backend_stub.broker_link import serve_reconnecting
from backend_stub.database_thread import DatabaseThread
from backend_stub.wakeup import Wakeup
from tcu.broker_config import BrokerConfig
from tcu.uplink.mqtt_port import ClientFactory, MqttClient

_LOGGER = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")
_Item = TypeVar("_Item")

Serve = Callable[[MqttClient], Awaitable[None]]
Step = Callable[[], Coroutine[Any, Any, object]]


class EventInbox(Generic[_Item]):
    """What an ingest observer queued for a service, taken by the service once ingest has committed.

    Observers run inside ingest's transaction (on the database thread when the app runs), so they only
    `put`; the service `take`s everything queued, in order, and books it through its own store.
    """

    def __init__(self) -> None:
        self._items: deque[_Item] = deque()  # appends and pops are atomic across threads
        self.wakeup = Wakeup()

    def put(self, item: _Item) -> None:
        self._items.append(item)
        self.wakeup.set()

    def take(self) -> list[_Item]:
        taken = []
        while self._items:
            taken.append(self._items.popleft())
        return taken

    def __len__(self) -> int:
        return len(self._items)


def _is_link_failure(exc: Exception) -> bool:
    if isinstance(exc, aiomqtt.MqttError):
        return True
    return isinstance(exc, BaseExceptionGroup) and exc.subgroup(aiomqtt.MqttError) is not None


class ServiceShell:
    """The shell one backend service runs in; see the module docstring."""

    def __init__(
        self,
        name: str,
        broker: BrokerConfig,
        *,
        identifier: str,
        database: DatabaseThread | None = None,
        subscriptions: tuple[str, ...] = (),
        max_inflight: int = 100,
        clients: ClientFactory | None = None,
    ) -> None:
        self.name = name
        self.connected = asyncio.Event()
        self._broker = broker
        self._identifier = identifier
        self._database = database
        self._subscriptions = subscriptions
        self._max_inflight = max_inflight
        self._clients = clients  # None: a real client to the broker (`make_client`)

    async def offload(self, job: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run database work on the database thread (inline without one) and return its result."""
        if self._database is None:
            return job(*args, **kwargs)
        return await self._database.run(job, *args, **kwargs)

    async def run(self, *, serve: Serve | None = None, loops: Mapping[str, Step] | None = None) -> None:
        """`serve` on the MQTT link (reconnecting) and run each `loops` task until cancelled.

        A loop task is a step run forever by `repeat`, or any coroutine function that never returns.
        """
        async with asyncio.TaskGroup() as tasks:
            for task_name, loop in (loops or {}).items():
                tasks.create_task(loop(), name=f"{self.name}-{task_name}")
            if serve is not None:
                tasks.create_task(self._link(serve), name=f"{self.name}-link")

    async def _link(self, serve: Serve) -> None:
        async def connected(client: MqttClient) -> None:
            for topic in self._subscriptions:
                await client.subscribe(topic, qos=1)
            self.connected.set()
            if self._subscriptions:  # "backend ingest subscribed to ...": the line a bench waits for
                _LOGGER.info("%s subscribed to %s on %s", self.name, ", ".join(self._subscriptions), self._broker.url)
            else:
                _LOGGER.info("%s connected to %s as %s", self.name, self._broker.url, self._identifier)
            await serve(client)

        await serve_reconnecting(
            self._broker,
            identifier=self._identifier,
            serve=connected,
            on_down=self._on_down,
            max_inflight=self._max_inflight,
            clients=self._clients,
        )

    def _on_down(self, reason: str) -> None:
        self.connected.clear()
        _LOGGER.warning("%s: MQTT link down: %s", self.name, reason)

    async def repeat(
        self,
        step: Step,
        *,
        what: str,
        wakeup: Wakeup,
        poll_s: float | None,
        due: Callable[[], Awaitable[bool]] | None = None,
    ) -> NoReturn:
        """Run `step` at once, then whenever `wakeup` is set or `poll_s` passed (and `due()` says so).

        A step that fails is logged with its reason and tried again at the next wake-up: the service
        keeps running. Only a failed MQTT link propagates, so that the shell makes the link again.
        """
        while True:
            wakeup.clear()
            try:
                await step()
            except Exception as exc:
                if _is_link_failure(exc):
                    raise
                _LOGGER.exception("%s: %s failed; trying again at the next wake-up", self.name, what)
            while not await wakeup.wait(poll_s) and not await self._is_due(due, what):
                pass

    async def _is_due(self, due: Callable[[], Awaitable[bool]] | None, what: str) -> bool:
        if due is None:
            return True
        try:
            return await due()
        except Exception as exc:  # the step itself will meet the trouble, and say so
            _LOGGER.debug("%s: cannot tell whether %s is due (%s); running it", self.name, what, exc)
            return True
