"""Running a coroutine as a service: SIGTERM/SIGINT cancel it cleanly, so shutdown is orderly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any


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


def run_service(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(_until_signalled(main))
