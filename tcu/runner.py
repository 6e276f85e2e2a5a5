"""Running a coroutine as a service: SIGTERM/SIGINT cancel it cleanly, so shutdown is orderly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

from tcu.clock import Clock
from tcu.virtual_time import VirtualClock, VirtualTimeLoop


def configure_logging(level: str) -> None:
    # Under systemd the journal stamps each line itself.
    stamp = "" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=stamp + "%(levelname)-7s %(name)s: %(message)s",
    )


async def _until_signalled(main: Coroutine[Any, Any, None]) -> None:
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run_service(main: Coroutine[Any, Any, None], *, clock: Clock | None = None) -> None:
    """`clock`: the one `main` was built with; on a bench's virtual time, the event loop keeps it too."""
    virtual = None
    if isinstance(clock, VirtualClock):
        virtual = clock.base
        logging.getLogger(__name__).warning(
            "virtual time: %g times real time, the wall clock at %s (a HIL bench's, --virtual-time)",
            virtual.scale,
            virtual.now().isoformat(timespec="seconds"),
        )
        _stamp_logs_with(clock)
    with asyncio.Runner(loop_factory=None if virtual is None else lambda: VirtualTimeLoop(virtual)) as runner:
        runner.run(_until_signalled(main))


def _stamp_logs_with(clock: Clock) -> None:
    """Log lines carry the bench's virtual time, so the log reads on the same axis as the records."""
    make_record = logging.getLogRecordFactory()

    def stamped(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.created = clock.now().timestamp()
        record.msecs = (record.created - int(record.created)) * 1000
        return record

    logging.setLogRecordFactory(stamped)
