"""The backend's periodic database jobs (the retention pass, the payment check), without an MQTT link.

    await every(3600.0, "retention pass", retention.run, database)   # runs until cancelled

A job runs at once, then `interval_s` after the end of each pass, on the database thread (so the loop
that also runs the PSAP never waits on its locks or fsyncs). A pass that fails is logged with its reason
and the job keeps its schedule: the next pass is the retry. Cancelling the task ends it; a pass already
running on the thread finishes there (`backend_stub.database_thread`), its transaction whole.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import NoReturn

from backend_stub.database_thread import DatabaseThread

_LOGGER = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


async def every(
    interval_s: float,
    what: str,
    job: Callable[[], object],
    database: DatabaseThread,
    *,
    sleep: Sleep = asyncio.sleep,
) -> NoReturn:
    """Run `job` on `database`'s thread now and every `interval_s` after, until cancelled."""
    if isinstance(interval_s, bool) or not math.isfinite(interval_s) or interval_s <= 0:
        raise ValueError(f"{what}: the interval must be a positive number of seconds, not {interval_s!r}")
    while True:
        try:
            await database.run(job)
        except Exception:  # any failure of one pass: the next pass is the retry
            _LOGGER.exception("%s failed; trying again in %.0f s", what, interval_s)  # the traceback says why
        await sleep(interval_s)
