"""MQTT brokers for benches and tests: a real Mosquitto process, or amqtt embedded in-process.

Mosquitto is what users run and what the tests exercise (MQTT 5, persistent sessions, ACLs,
kill and restart). The embedded amqtt broker speaks MQTT 3.1.1 only and exists so a first run
needs no system package.
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
from typing import Literal, Protocol, Self

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


class _Lifecycle:
    """`async with broker:` starts it and stops it."""

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
class MosquittoBroker(_Lifecycle):
    """A Mosquitto process on a loopback port, with its own config, persistence and optional auth."""

    workdir: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] | None = None  # username → password; None = anonymous allowed
    acl_per_vehicle: bool = False  # vehicles/%u/up/# write, vehicles/%u/down/# read; "backend-stub" all
    tls: TlsFiles | None = None
    _process: asyncio.subprocess.Process | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        return "5"

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        persistence = self.workdir / "persistence"
        persistence.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
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
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
            ]
        if self.users is None:
            lines.append("allow_anonymous true")
        else:
            password_file = self.workdir / "passwords"
            password_file.write_text("")
            password_file.chmod(0o600)
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for user, password in self.users.items():
                subprocess.run(  # noqa: S603 - fixed argv, no shell
                    [tool, "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        if self.acl_per_vehicle:
            acl = self.workdir / "acl"
            acl.write_text(
                "user backend-stub\ntopic readwrite vehicles/#\n\n"
                "pattern write vehicles/%u/up/#\npattern read vehicles/%u/down/#\n"
            )
            lines.append(f"acl_file {acl}")
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

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

    async def _end(self, signum: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
        await process.wait()


@dataclass
class EmbeddedBroker(_Lifecycle):
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
