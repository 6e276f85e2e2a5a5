"""Shared fixtures: keys, clocks, a real Mosquitto on a free loopback port, condition polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nacl.public import Box, PrivateKey

from hil.broker import MosquittoBroker, mosquitto_path
from hil.layout import BenchLayout
from tcu.clock import ManualClock

VIN = "WMWZZZ3CZ2E123456"
OTHER_VIN = "WVWZZZ1JZXW000002"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))


@pytest.fixture
def vehicle_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def backend_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture
def vehicle_box(vehicle_key: PrivateKey, backend_key: PrivateKey) -> Box:
    return Box(vehicle_key, backend_key.public_key)


@pytest.fixture
def backend_box(vehicle_key: PrivateKey, backend_key: PrivateKey) -> Box:
    return Box(backend_key, vehicle_key.public_key)


@pytest.fixture
def layout(tmp_path: Path) -> BenchLayout:
    """A backend and one enrolled vehicle (VIN) on disk, the broker unreachable: for tests of the agent's
    and the backend's parts without a network (tests/integration has its own, with a broker)."""
    bench = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1")
    bench.create_backend()
    bench.add_vehicle(VIN)
    return bench


def require_mosquitto() -> None:
    if mosquitto_path() is None:
        message = "mosquitto is not installed (apt-get install mosquitto)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must test the real broker")
        pytest.skip(message)


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    require_mosquitto()
    broker = MosquittoBroker(tmp_path / "mosquitto")
    await broker.start()
    try:
        yield broker
    finally:
        await broker.kill()


async def eventually(condition: Callable[[], bool], *, within: float = 20.0, what: str = "condition") -> None:
    """Poll a condition that depends on real I/O (brokers, processes) until it holds."""
    try:
        async with asyncio.timeout(within):
            while not condition():  # noqa: ASYNC110 - the condition is state in another process
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


@contextlib.asynccontextmanager
async def running_task(
    coroutine: Coroutine[Any, Any, object], name: str | None = None
) -> AsyncIterator[asyncio.Task[object]]:
    """`coroutine` as a task for the block; cancelled and awaited at its end (any other error it raised escapes)."""
    task = asyncio.create_task(coroutine, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
