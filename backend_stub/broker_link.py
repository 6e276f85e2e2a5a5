"""The backend's MQTT clients (ingest, provisioning delivery, measures, accounts): one way to connect.

Each runs `tcu.uplink.mqtt_client.run_reconnecting` (the one reconnect loop, `tcu.reconnect`) with the
same short, jittered backoff — a backend on the broker's own network reconnects within seconds — so the
choice is made here once. The backoff starts again from its base only after a connection stayed up for
the cap (10 s): a broker that accepts and drops the backend at once is retried ever more slowly.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from tcu.backoff import Backoff
from tcu.broker_config import BrokerConfig
from tcu.uplink.mqtt_client import make_client, run_reconnecting
from tcu.uplink.mqtt_port import ClientFactory, MqttClient

RECONNECT = Backoff(base_s=0.2, cap_s=10.0)


async def serve_reconnecting(
    broker: BrokerConfig,
    *,
    identifier: str,
    serve: Callable[[MqttClient], Awaitable[None]],
    on_down: Callable[[str], None],
    max_inflight: int = 100,
    clients: ClientFactory | None = None,
) -> None:
    """Connect as `identifier`, `serve` until the link fails, reconnect; only cancellation ends it.

    `clients` makes the client instead of `make_client` (the in-memory twin, `hil.mqtt_twin`); the
    backend sets no last will."""

    def connect() -> MqttClient:
        if clients is not None:
            return clients(identifier, None)
        return make_client(broker, identifier=identifier, max_inflight=max_inflight)

    await run_reconnecting(
        connect,
        serve,
        broker=broker,
        backoff=RECONNECT,
        rng=random.Random(),  # noqa: S311 - reconnect jitter, not cryptography
        on_down=on_down,
    )
