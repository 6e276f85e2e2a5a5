"""MQTT brokers for benches and tests: a real Mosquitto process, or amqtt embedded in-process.

Mosquitto is what users run and what the tests exercise (MQTT 5, persistent sessions, ACLs,
kill and restart). The embedded amqtt broker speaks MQTT 3.1.1 only and exists so a first run
needs no system package.

With credentials, the Mosquitto config is the one the README documents: two listeners with their own
password files (`per_listener_settings true`). Vehicles connect to the first, where
`use_username_as_clientid true` makes the client id the username (the VIN), so one car's credentials
cannot take over another car's connection and persistent session by sending its client id. The
backend connects to the second: its several clients (ingest, provisioning, measures) share one
username and need client ids of their own, and a car's credentials are refused there.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, Self

if TYPE_CHECKING:
    from hil.streaming_listener import StreamingListener

_LOGGER = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


class Broker(Protocol):
    port: int

    @property
    def url(self) -> str: ...

    @property
    def protocol(self) -> Literal["5", "3.1.1"]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Lifecycle:
    """`async with thing:` starts it and stops it (a broker, a SIP peer)."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for a TLS listener: the CA that signed the server certificate, and the server's pair."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass
class MosquittoBroker(Lifecycle):
    """A Mosquitto process on a loopback port, with its own config, persistence and optional auth."""

    workdir: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] | None = None  # username → password; None = anonymous allowed
    acl_per_vehicle: bool = False  # vehicles/%u/up/# write, vehicles/%u/down/# read; "backend-stub" all
    tls: TlsFiles | None = None
    # With `users`: these connect to the backend listener (`backend_url`), everyone else to `url`.
    backend_users: frozenset[str] = frozenset({"backend-stub"})
    backend_port: int = field(default_factory=free_port)
    streaming: StreamingListener | None = None  # CarData's TLS + dynamic-security listener (hil.streaming_listener)
    _process: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """Where vehicles connect."""
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def backend_url(self) -> str:
        """Where the backend connects: its own listener when there are credentials, else `url`."""
        if self.users is None:
            return self.url
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.backend_port}"

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        return "5"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        persistence = self.workdir / "persistence"
        persistence.mkdir(exist_ok=True)
        lines = [
            f"user {getpass.getuser()}",  # as root, stay root: the persistence dir is ours
            "persistence true",
            f"persistence_location {persistence}/",
            "autosave_interval 1",
            "max_queued_messages 1000000",  # a vehicle offline for days has a long backlog of commands
            "max_inflight_messages 1000",
            "message_size_limit 1048576",
            f"log_dest file {self.workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if self.streaming is not None:  # the plugin on its listener only: the others keep their auth
            lines.append("per_listener_settings true")
        if self.users is None:
            lines += [f"listener {self.port} 127.0.0.1", *self._tls_lines(), "allow_anonymous true"]
        else:
            acl = self._write_acl() if self.acl_per_vehicle else None
            vehicles = {u: p for u, p in self.users.items() if u not in self.backend_users}
            backend = {u: p for u, p in self.users.items() if u in self.backend_users}
            lines += [
                # Before any listener: each listener then has its own credentials and ACL.
                *([] if self.streaming is not None else ["per_listener_settings true"]),
                f"listener {self.port} 127.0.0.1",
                "use_username_as_clientid true",  # no car can connect under another car's client id
                *self._auth_lines(self._write_passwords("vehicles.passwords", vehicles), acl),
                f"listener {self.backend_port} 127.0.0.1",
                *self._auth_lines(self._write_passwords("backend.passwords", backend), acl),
            ]
        if self.streaming is not None:
            lines += self.streaming.config_lines(self.workdir)
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _tls_lines(self) -> list[str]:
        if self.tls is None:
            return []
        return [f"cafile {self.tls.ca_file}", f"certfile {self.tls.cert_file}", f"keyfile {self.tls.key_file}"]

    def _auth_lines(self, password_file: Path, acl: Path | None) -> list[str]:
        lines = [*self._tls_lines(), "allow_anonymous false", f"password_file {password_file}"]
        return lines if acl is None else [*lines, f"acl_file {acl}"]

    def _write_passwords(self, name: str, users: dict[str, str]) -> Path:
        password_file = self.workdir / name
        password_file.write_text("")
        password_file.chmod(0o600)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in users.items():
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [tool, "-b", str(password_file), user, password],
                check=True,
                capture_output=True,
            )
        return password_file

    def _write_acl(self) -> Path:
        acl = self.workdir / "acl"
        backend = "".join(f"user {user}\ntopic readwrite vehicles/#\n\n" for user in sorted(self.backend_users))
        acl.write_text(backend + "pattern write vehicles/%u/up/#\npattern read vehicles/%u/down/#\n")
        return acl

    async def start(self) -> None:
        binary = mosquitto_path()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install mosquitto)")
        config = self._write_config()
        self._process = await asyncio.create_subprocess_exec(
            binary,
            "-c",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await wait_for_port(self.port)
            if self.users is not None:
                await wait_for_port(self.backend_port)
            if self.streaming is not None:
                await wait_for_port(self.streaming.port)
        except TimeoutError as exc:
            log = self.workdir / "mosquitto.log"
            detail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"mosquitto did not listen on port {self.port}: {detail}") from exc
        _LOGGER.info("mosquitto up on %s (pid %d)", self.url, self._process.pid)

    async def stop(self) -> None:
        """Orderly stop: Mosquitto saves its persistence file on SIGTERM."""
        await self._end(signal.SIGTERM)

    async def kill(self) -> None:
        """A crash: SIGKILL, nothing saved beyond the last autosave."""
        await self._end(signal.SIGKILL)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def pause(self) -> None:
        """SIGSTOP: a wedged broker, its sockets open and silent, which clients notice by keepalive only."""
        self._send(signal.SIGSTOP)

    def resume(self) -> None:
        self._send(signal.SIGCONT)

    def _send(self, signum: signal.Signals) -> None:
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    async def _end(self, signum: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
            os.kill(process.pid, signal.SIGCONT)  # a paused broker handles SIGTERM only once resumed
        await process.wait()


@dataclass
class EmbeddedBroker(Lifecycle):
    """amqtt in this process: MQTT 3.1.1, anonymous, for a zero-install first run."""

    port: int = field(default_factory=free_port)
    _broker: object | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        return "3.1.1"

    async def start(self) -> None:
        from amqtt.broker import Broker as AmqttBroker  # noqa: PLC0415 - optional at run time

        broker = AmqttBroker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await broker.start()
        self._broker = broker
        _LOGGER.info("embedded amqtt broker up on %s (MQTT 3.1.1)", self.url)

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()  # type: ignore[attr-defined]


def choose_broker(workdir: Path, prefer: Literal["auto", "mosquitto", "embedded"] = "auto") -> Broker:
    """A local Mosquitto when installed (or demanded), the embedded broker otherwise."""
    if prefer == "mosquitto" or (prefer == "auto" and mosquitto_path() is not None):
        return MosquittoBroker(workdir / "mosquitto")
    return EmbeddedBroker()
