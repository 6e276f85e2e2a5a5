"""The thread that does a database's work, so the event loop never waits on a lock or an fsync.

SQLite calls block: a commit waits for its fsyncs, a write for another connection's lock (up to
`backend_stub.database.BUSY_TIMEOUT_MS`). The backend's loop also runs the PSAP stub and the MQTT
links, so its database work is handed to one thread per database and awaited. One thread, not a
pool: the stores' connections are then used from one thread at a time, in the order the work was
handed over, as they were on the loop.

    database = DatabaseThread("backend-db")
    acks = await database.run(flush, batch)   # the loop runs other tasks meanwhile
    database.close()                          # runs what was handed over, then ends the thread

A job that has started keeps running when the task awaiting it is cancelled (a thread cannot be
interrupted): its transaction commits or rolls back as a whole. `close` runs every job handed over
before it (a batch queued at shutdown is stored, not dropped) and only then returns, so the
connections close after the last of them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_T = TypeVar("_T")


class DatabaseThread:
    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, job: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """`job(*args, **kwargs)` on the database thread; its result or its exception, here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(job, *args, **kwargs))

    def submit(self, job: Callable[_P, object], *args: _P.args, **kwargs: _P.kwargs) -> None:
        """Queue `job` without waiting for it: for a write nobody waits on, which must handle its own
        failure (log it). It runs after the jobs queued before it; `close` waits for it."""
        self._executor.submit(job, *args, **kwargs)

    def close(self) -> None:
        """Run the job in progress and every queued one, then end the thread; idempotent."""
        self._executor.shutdown(wait=True)
