"""The backend hears of the event records ingest workers on other hosts stored: PostgreSQL's LISTEN/NOTIFY.

A worker's batch writes a row of `event_relay` per stored non-telemetry record and a NOTIFY, in the
batch's own transaction (`PostgresStore.relay`): PostgreSQL delivers the notification at the commit,
and the rows stand or fall with the records. The backend LISTENs, reads the rows with their records,
hands each record to its services and deletes the rows.

The rows are the backend's durable high-water mark: what is left in the table is what it has not handed
over. A notification missed while its connection was down, or while the backend was stopped, loses
nothing — after each (re)connect it reads the table before it waits. A counter would not do: identity
values are taken at INSERT, so a batch that commits later can hold a lower one than a row already read.

Exactly once: a row is handed over, then deleted in the same transaction; when that transaction is lost
(the connection dropped), the row comes back on the next read and this listener, which remembers what it
handed over until the deletion is committed, deletes it without handing it over again. (A backend that
stops in between hands it over again after its restart: its services' in-memory queues died with it.)
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
import psycopg

from backend_stub.store_postgres import RELAY_CHANNEL
from backend_stub.store_postgres_connection import CONNECT_TIMEOUT_S
from backend_stub.store_url import PostgresUrl
from tcu.backoff import Backoff
from telematics_wire.records import ReceivedRecord, RecordKind, from_millis

_LOGGER = logging.getLogger(__name__)
BATCH = 500  # rows read per transaction: a long catch-up hands over in slices
RECONNECT = Backoff(base_s=0.5, cap_s=30.0)
APPLICATION_NAME = "tcu-backend-relay"  # how pg_stat_activity names the backend's LISTENing connection
_READ = (
    "SELECT q.id, r.vin, r.epoch, r.seq, r.kind, r.created_ms, r.body FROM event_relay q "
    "LEFT JOIN records r ON r.vin = q.vin AND r.epoch = q.epoch AND r.seq = q.seq ORDER BY q.id LIMIT %s"
)


class RelayListener:
    """Hands each relayed record to `deliver` (on the event loop), once, until cancelled."""

    def __init__(
        self,
        url: PostgresUrl,
        deliver: Callable[[ReceivedRecord], None],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._url = url
        self._deliver = deliver
        self._sleep = sleep  # before connecting again
        self._handed_over: set[int] = set()  # rows handed over whose deletion has not committed yet
        self._random = random.Random()  # noqa: S311 - reconnect jitter, not cryptography
        self._failures = 0  # connection attempts failed in a row
        self.connected = asyncio.Event()  # set once LISTENing and caught up, cleared when the link drops
        self.delivered = 0

    async def run(self) -> None:
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as exc:
                self.connected.clear()
                delay = RECONNECT.delay(self._failures, self._random)
                self._failures += 1
                _LOGGER.warning(
                    "relay from the ingest workers at %s lost (%s); listening again in %.1f s", self._url, exc, delay
                )
                await self._sleep(delay)

    async def _listen(self) -> None:
        connection = await psycopg.AsyncConnection.connect(
            self._url.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name=APPLICATION_NAME
        )
        async with connection:
            await connection.execute(f"LISTEN {RELAY_CHANNEL}")
            await self.catch_up(connection)  # after LISTEN: a commit from here on is heard of
            self.connected.set()
            self._failures = 0
            while True:
                # One notice at a time: the generator holds the connection while it runs, and notices
                # that come while catching up wait in psycopg's backlog for the next call.
                async for _ in connection.notifies(stop_after=1):
                    pass
                await self.catch_up(connection)

    async def catch_up(self, connection: psycopg.AsyncConnection[Any]) -> None:
        """Hand over every row left in `event_relay`, oldest first, and delete them."""
        while True:
            async with connection.transaction():
                rows = await (await connection.execute(_READ, (BATCH,))).fetchall()
                for row in rows:
                    self._hand_over(row)
                ids = [row[0] for row in rows]
                if ids:
                    await connection.execute("DELETE FROM event_relay WHERE id = ANY(%s)", (ids,))
            if len(rows) < BATCH:  # every row left was seen in this read: none handed over is pending
                self._handed_over.clear()
                return
            self._handed_over.difference_update(ids)

    def _hand_over(self, row: tuple[Any, ...]) -> None:
        key, vin, epoch, seq, kind, created_ms, body = row
        if key in self._handed_over:
            return  # handed over before a connection loss undid its deletion
        self._handed_over.add(key)
        if vin is None:  # retention deleted the record first; nothing left to tell
            _LOGGER.warning("relayed record %d is no longer in the record store", key)
            return
        record = ReceivedRecord(
            vin=vin,
            seq=seq,
            kind=RecordKind(kind),
            kind_name=kind,
            epoch=bytes(epoch),
            created=from_millis(created_ms),
            body=cbor2.loads(body),
        )
        self.delivered += 1
        try:
            self._deliver(record)
        except Exception:  # a consumer's bug must not stop the relay of everything else
            _LOGGER.exception("handing relayed record %s seq %d over failed", vin, seq)
