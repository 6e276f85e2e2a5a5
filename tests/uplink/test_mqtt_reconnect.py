"""tcu.uplink.mqtt_client.run_reconnecting: the one reconnect loop with MQTT's rules (agent uplink and backend).

A fake client stands in for aiomqtt's (entering it is the broker accepting the connection); time is a
ManualClock the fake sleep moves on.
"""

from __future__ import annotations

import asyncio
import random
from types import TracebackType

import aiomqtt
import pytest

from tcu.backoff import Backoff
from tcu.broker_config import BrokerConfig
from tcu.clock import ManualClock
from tcu.uplink.mqtt_client import run_reconnecting

BROKER = BrokerConfig(host="broker.test", port=1883)


class AcceptingClient:
    """Connects at once; counts how often it was entered and left."""

    def __init__(self, log: list[str]) -> None:
        self._log = log

    async def __aenter__(self) -> AcceptingClient:
        self._log.append("connect")
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._log.append("disconnect")


async def run(
    uptimes: list[float], *, retries: int, proven_after_s: float | None = None
) -> tuple[list[float], list[str]]:
    """Each connection stays up for the next uptime, then the broker drops it; returns the waits and reasons."""
    clock = ManualClock()
    sleeps: list[float] = []
    reasons: list[str] = []
    log: list[str] = []
    pending = iter(uptimes)

    async def serve(_: aiomqtt.Client) -> None:
        clock.advance(next(pending))
        raise aiomqtt.MqttError("Disconnected during message iteration")

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        clock.advance(delay)
        if len(sleeps) >= retries:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await run_reconnecting(
            lambda: AcceptingClient(log),  # type: ignore[arg-type,return-value]
            serve,
            broker=BROKER,
            backoff=Backoff(base_s=0.5, cap_s=8.0, jitter=0),
            rng=random.Random(0),
            on_down=reasons.append,
            proven_after_s=proven_after_s,
            monotonic=clock.monotonic,
            sleep=sleep,
        )
    assert log == ["connect", "disconnect"] * retries
    return sleeps, reasons


async def test_a_broker_that_accepts_and_drops_at_once_is_retried_ever_more_slowly() -> None:
    """The old loop reset on every accepted connection: 0.5 s forever against such a broker."""
    sleeps, reasons = await run([0.1] * 6, retries=6)
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert reasons == ["broker mqtt://broker.test:1883: Disconnected during message iteration"] * 6


async def test_a_connection_that_stayed_up_for_the_cap_resets_the_backoff() -> None:
    sleeps, _ = await run([0.1, 0.1, 0.1, 8.0, 0.1], retries=5)
    assert sleeps == [0.5, 1.0, 2.0, 0.5, 1.0]


async def test_the_proof_time_can_be_configured() -> None:
    sleeps, _ = await run([0.1, 0.1, 1.0, 0.1], retries=4, proven_after_s=1.0)
    assert sleeps == [0.5, 1.0, 0.5, 1.0]


async def test_an_error_that_is_no_link_failure_propagates() -> None:
    async def serve(_: aiomqtt.Client) -> None:
        raise KeyError("a bug")

    reasons: list[str] = []
    with pytest.raises(KeyError):
        await run_reconnecting(
            lambda: AcceptingClient([]),  # type: ignore[arg-type,return-value]
            serve,
            broker=BROKER,
            backoff=Backoff(),
            rng=random.Random(0),
            on_down=reasons.append,
        )
    assert reasons == []
