"""Baseline for the end-to-end benchmark: plain paho-mqtt, QoS 1 publisher → subscriber, one broker.

    python -m bench.baseline_paho --broker mqtt://127.0.0.1:1883 --count 10000 [--sqlite DIR]

What our end-to-end figure stands on: the same broker, the same payload size (a real sealed telemetry
envelope, ~771 bytes), MQTT 5 like the agent and the backend, QoS 1 both ways, paho's default
in-flight window (20) on the publisher, each client on paho's own network thread (`loop_start`).
No sealing, no durable queue, no verification, no end-to-end ack: the transport limit. With
`--sqlite`, the subscriber commits each batch it has received into SQLite with the backend's
durability (WAL, synchronous=FULL), one transaction per batch, on a writer thread: the floor of any
durable ingest behind this transport.

Each measure runs in a fresh interpreter (`python -m bench.baseline_paho`) so nothing the agent's
process imported or configured (the agent's paho settings, a busy event loop, its garbage) touches it.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

TOPIC = "vehicles/BASELINE0000000000/up/records"
_WITHIN_S = 300.0  # a run that takes longer is broken, not slow


def plain_paho_per_s(broker_url: str, count: int, payload_size: int) -> float:
    """Messages/s from paho publisher to paho subscriber through `broker_url`, QoS 1, MQTT 5."""
    return _run_fresh(broker_url, count, payload_size, None)


def paho_into_sqlite_per_s(broker_url: str, directory: Path, count: int, payload_size: int) -> float:
    """As `plain_paho_per_s`, counting a message once the subscriber committed it (WAL + FULL)."""
    return _run_fresh(broker_url, count, payload_size, directory)


def _run_fresh(broker_url: str, count: int, payload_size: int, directory: Path | None) -> float:
    command = [sys.executable, "-m", "bench.baseline_paho", "--broker", broker_url, "--count", str(count)]
    command += ["--payload-size", str(payload_size)]
    if directory is not None:
        command += ["--sqlite", str(directory)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=_WITHIN_S)
    rate: float = json.loads(done.stdout)["per_s"]
    return rate


class _Committer:
    """The subscriber's writer thread: everything received since the last commit, in one transaction."""

    def __init__(self, directory: Path) -> None:
        path = directory / "baseline-paho.sqlite3"
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL)")
        self._pending: list[tuple[str, bytes]] = []
        self._ready = threading.Condition()
        self.committed = 0

    def add(self, topic: str, payload: bytes) -> None:
        with self._ready:
            self._pending.append((topic, payload))
            self._ready.notify()

    def run(self, count: int) -> None:
        while self.committed < count:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
                batch, self._pending = self._pending, []
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO records (topic, payload) VALUES (?, ?)", batch)
            self._db.execute("COMMIT")
            self.committed += len(batch)
        self._db.close()


def _client(identifier: str, host: str, port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=identifier, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    client.on_connect = lambda *_args: connected.set()
    client.connect(host, port)
    client.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"no CONNACK from {host}:{port}")
    return client


def measure(broker_url: str, count: int, payload_size: int, directory: Path | None) -> float:
    url = urlsplit(broker_url)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    payload = os.urandom(payload_size)  # incompressible, like ciphertext
    received = 0
    all_received = threading.Event()
    committer = _Committer(directory) if directory is not None else None

    def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if committer is not None:
            committer.add(message.topic, message.payload)
        elif received >= count:
            all_received.set()

    subscribed = threading.Event()
    subscriber = _client(f"baseline-sub-{os.getpid()}", host, port)
    subscriber.on_message = on_message
    subscriber.on_subscribe = lambda *_args: subscribed.set()
    subscriber.subscribe(TOPIC, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError("no SUBACK")
    publisher = _client(f"baseline-pub-{os.getpid()}", host, port)
    writer = None
    if committer is not None:
        writer = threading.Thread(target=committer.run, args=(count,), name="baseline-committer")
        writer.start()
    start = time.perf_counter()
    for _ in range(count):
        publisher.publish(TOPIC, payload, qos=1)  # paho queues past its in-flight window itself
    if writer is not None:
        writer.join(_WITHIN_S)
    elif not all_received.wait(_WITHIN_S):
        raise RuntimeError(f"only {received} of {count} messages arrived")
    elapsed = time.perf_counter() - start
    for client in (publisher, subscriber):
        client.disconnect()
        client.loop_stop()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--payload-size", type=int, default=771)
    parser.add_argument("--sqlite", type=Path, help="commit what arrives into a database in this directory")
    args = parser.parse_args()
    rate = measure(args.broker, args.count, args.payload_size, args.sqlite)
    print(json.dumps({"per_s": rate}))


if __name__ == "__main__":
    main()
