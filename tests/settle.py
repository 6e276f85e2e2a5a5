"""Waiting in tests for work that runs on a state file's writer thread (tcu.persist.AtomicFile).

The agent's saves return once the bytes are on a real disk, so a test cannot count event-loop turns
until they are done: it waits for the outcome it expects, bounded in real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

WITHIN_S = 10.0  # a write takes milliseconds; this only bounds a test that would otherwise hang


async def settle(done: Callable[[], bool], *, within_s: float = WITHIN_S) -> bool:
    """Let the loop and the writer threads run until `done()`; False if it is still not done after `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    await asyncio.sleep(0)
    while not done():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.001)  # the disk is real: give its thread the CPU, not a spinning loop
    return True
