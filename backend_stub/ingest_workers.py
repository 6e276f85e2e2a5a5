"""The backend's extra ingest worker processes: started, kept running, and heard from.

Ingest is CPU-bound Python (open the envelope, decode CBOR, check and store each record), so workers
are processes, not more clients on one event loop, which would share one core through the GIL. With
N workers the backend's own ingest is one member of the shared subscription on every vehicle's
records and this pool runs the other N - 1 (`backend_stub.ingest_worker`). Statuses stay on the
backend's own, unshared subscription: a shared subscription gets no retained messages (MQTT 5,
4.8.2), and the vehicles' retained online/offline statuses must reach the backend after a restart.

A worker that dies is started again under the same client identifier, so its persistent session —
and what the broker queued for it meanwhile — is taken up again; what it had not acknowledged end to
end the vehicles send again. The records a worker relays (`RelayingIngest`) reach this process's
ingest observers on the event loop: through each worker's pipe when the record store is the SQLite
file; from PostgreSQL (`store_postgres_relay.RelayListener`) when it is there, which also hears the
workers that run on other hosts (`backend-stub ingest-worker`) — then this pool runs even with no
worker of its own.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from backend_stub.config import BackendConfig
from backend_stub.ingest_worker import run_worker
from telematics_wire.records import ReceivedRecord

if TYPE_CHECKING:
    from backend_stub.store_postgres_relay import RelayListener

_LOGGER = logging.getLogger(__name__)
RESTART_S = 1.0  # a worker that died is started again after this pause, so a crash loop stays slow
_STOP_S = 5.0  # a worker's batch in progress commits within the busy timeout; then it is killed


class IngestWorkers:
    """Workers 1 .. `count - 1` of the backend's ingest (worker 0 is the backend's own ingest)."""

    def __init__(
        self, config: BackendConfig, count: int, *, relayed: Callable[[ReceivedRecord], None], log_level: str
    ) -> None:
        self._config = config
        self._count = count
        self._relayed = relayed
        self._log_level = log_level
        self._context = multiprocessing.get_context("spawn")  # no forked copy of the backend's threads
        self.restarts = 0
        self.listener: RelayListener | None = None  # PostgreSQL: what every worker, here or not, relays
        if config.store_url is not None:
            from backend_stub.store_postgres_relay import RelayListener  # noqa: PLC0415 - psycopg: optional

            self.listener = RelayListener(config.store_url, relayed)

    async def run(self) -> None:
        """Run the workers until cancelled; then stop them (SIGTERM, then SIGKILL after `_STOP_S`)."""
        async with asyncio.TaskGroup() as tasks:
            if self.listener is not None:
                tasks.create_task(self.listener.run(), name="ingest-relay-listener")
            for index in range(1, self._count):
                tasks.create_task(self._keep_running(index), name=f"ingest-worker-{index}")

    async def _keep_running(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # SQLite: a pipe per worker. PostgreSQL: the worker relays through the database.
            receiver, sender = self._context.Pipe(duplex=False) if self.listener is None else (None, None)
            process = self._context.Process(
                target=run_worker,
                args=(self._config, index, sender, self._log_level),
                name=f"backend-ingest-{index}",
                daemon=True,  # never outlives the backend, even when it is killed
            )
            process.start()
            if receiver is not None and sender is not None:
                sender.close()  # the worker holds the only writing end: its exit ends the reader below
                reader = threading.Thread(
                    target=self._read_relay, args=(receiver, loop), name=f"ingest-relay-{index}", daemon=True
                )
                reader.start()
            try:
                await loop.run_in_executor(None, process.join)
            finally:
                await _stop(process)
            _LOGGER.error(
                "ingest worker %d exited with status %s; starting it again in %.0f s",
                index,
                process.exitcode,
                RESTART_S,
            )
            self.restarts += 1
            await asyncio.sleep(RESTART_S)

    def _read_relay(self, receiver: Connection, loop: asyncio.AbstractEventLoop) -> None:
        """On a thread of its own: each relayed record to the observers, on the loop, until the worker ends."""
        with receiver:
            while True:
                try:
                    record = receiver.recv()
                except (EOFError, OSError):
                    return
                try:
                    loop.call_soon_threadsafe(self._relayed, record)
                except RuntimeError:  # the loop has closed: the backend is gone
                    return


async def _stop(process: BaseProcess) -> None:
    if process.exitcode is not None:
        return
    process.terminate()
    loop = asyncio.get_running_loop()
    await asyncio.shield(loop.run_in_executor(None, process.join, _STOP_S))
    if process.exitcode is None:
        _LOGGER.warning("ingest worker %s did not stop within %.0f s; killed", process.name, _STOP_S)
        process.kill()
        process.join()
