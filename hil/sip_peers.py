"""Real SIP software on the NG eCall path, for tests and benches: Kamailio as the proxy, SIPp as a peer.

Both are Debian's binaries (`kamailio`, `sip-tester`), started on free loopback UDP ports with their
files in a temporary directory, and stopped on exit:

    async with Kamailio(psap=("127.0.0.1", psap_port)) as proxy:       # routes urn:service:sos.* there
        async with Sipp(SCENARIOS / "psap_uas.xml", port=psap_port) as psap:   # a UAS, one call
            ...                                                         # the vehicle calls proxy.address
            assert await psap.finished() == 0, psap.report()

Kamailio is ready when it answers an OPTIONS to itself; a SIPp UAS when it holds its port (UDP has no
connect to probe). `Sipp.missing()` / `Kamailio.missing()` give a skip reason when the binary is absent.
SIPp exits 0 when every call of its scenario passed, 1 when one failed (a `check_it` regexp that did
not match, an unexpected message, a timeout with `-timeout_error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Collection
from pathlib import Path
from typing import ClassVar

from hil.broker import Lifecycle

_LOGGER = logging.getLogger(__name__)

SCENARIOS = Path(__file__).resolve().parent / "sip"
SIPP = Path(os.environ.get("TCU_SIPP", "/usr/bin/sipp"))
KAMAILIO = Path(os.environ.get("TCU_KAMAILIO", "/usr/sbin/kamailio"))
LOOPBACK = "127.0.0.1"
READY_WITHIN_S = 10.0
STOP_WITHIN_S = 5.0
_PROBE_BRANCH = "z9hG4bK-tcu-ready-"


def free_udp_port(avoid: Collection[int] = ()) -> int:
    """A UDP port free on loopback right now and not in `avoid` (ports chosen for peers not yet started:
    the kernel may hand the same free port out twice). The caller binds it soon after: a small race."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOOPBACK, 0))
            port = int(probe.getsockname()[1])
        if port not in avoid:
            return port


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


class _Process(Lifecycle, ABC):
    """One child process in a working directory of its own: `start` runs `_argv()` there and waits for
    `_ready()`; `stop` sends SIGTERM (then SIGKILL) and removes the directory."""

    name: ClassVar[str]
    binary: ClassVar[Path]
    package: ClassVar[str]  # the Debian package that installs `binary`

    def __init__(self) -> None:
        self.workdir: Path | None = None
        self.files: dict[str, bytes] = {}  # written into `workdir` before the start: name → bytes
        self._process: asyncio.subprocess.Process | None = None

    @classmethod
    def missing(cls) -> str | None:
        """Why the peer cannot run here (a skip reason), or None."""
        if cls.binary.exists() and os.access(cls.binary, os.X_OK):
            return None
        return f"{cls.binary} is not installed (apt-get install {cls.package})"

    @abstractmethod
    def _argv(self) -> list[str]:
        """The command line, once `workdir` exists."""

    @abstractmethod
    async def _ready(self) -> None:
        """Return once the peer serves; raise if it cannot."""

    async def start(self) -> None:
        reason = self.missing()
        if reason is not None:
            raise FileNotFoundError(reason)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"tcu-{self.name}-"))
        for name, data in self.files.items():
            (self.workdir / name).write_bytes(data)
        await self._spawn(self._argv())
        try:
            await self._ready()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self._stop()
        self._cleanup()

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    def output(self) -> str:
        """What the process wrote to stdout and stderr so far (the end of it)."""
        if self.workdir is None or not (self.workdir / "output.log").exists():
            return "(no output)"
        return (self.workdir / "output.log").read_text(errors="replace")[-4000:]

    async def _spawn(self, argv: list[str]) -> None:
        assert self.workdir is not None
        with (self.workdir / "output.log").open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                *argv, cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        _LOGGER.info("%s started (pid %d)", self.name, self._process.pid)

    def _exited_early(self) -> RuntimeError | None:
        if self._process is not None and self._process.returncode is not None:
            return RuntimeError(f"{self.name} exited with {self._process.returncode}: {self.output()}")
        return None

    async def _stop(self) -> None:
        process = self._process  # kept: its returncode stays readable after the stop
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_WITHIN_S):
                    await process.wait()
            except TimeoutError:
                _LOGGER.warning("%s did not stop on SIGTERM within %g s; killed", self.name, STOP_WITHIN_S)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()

    def _cleanup(self) -> None:
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


class Kamailio(_Process):
    """Kamailio as a stateful proxy routing the emergency service URNs to `psap` (`hil/sip/kamailio.cfg`)."""

    name = "kamailio"
    binary = KAMAILIO
    package = "kamailio"

    def __init__(self, *, psap: tuple[str, int], port: int | None = None, config: Path | None = None) -> None:
        super().__init__()
        self.psap = psap
        self.port = free_udp_port(avoid=(psap[1],)) if port is None else port
        self.config = SCENARIOS / "kamailio.cfg" if config is None else config

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def _argv(self) -> list[str]:
        assert self.workdir is not None
        host, port = self.psap
        return [
            str(KAMAILIO),
            *("-f", str(self.config)),
            "-DD",  # in the foreground, as our child: SIGTERM reaches it, its exit is ours to see
            "-E",  # log to stderr (our log file)
            "-T",  # no TCP: the NG eCall path here is UDP
            *("-l", f"udp:{LOOPBACK}:{self.port}"),
            *("-Y", str(self.workdir)),  # runtime files here, not /run/kamailio
            *("-w", str(self.workdir)),
            *("-m", "32", "-M", "4"),  # shared and private memory (MB): a test proxy needs little
            *("-A", f'PSAP_URI="sip:psap@{host}:{port}"'),
        ]

    async def _ready(self) -> None:
        """Kamailio answers an OPTIONS to itself (kamailio.cfg): then it routes."""
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((LOOPBACK, 0))
            probe.setblocking(False)
            local = probe.getsockname()[1]
            async with asyncio.timeout(READY_WITHIN_S):
                for attempt in itertools.count():
                    if (early := self._exited_early()) is not None:
                        raise early
                    await loop.sock_sendto(probe, _options(self.port, local, attempt), self.address)
                    try:
                        async with asyncio.timeout(0.1):
                            answer = await loop.sock_recv(probe, 4096)
                    except (TimeoutError, ConnectionRefusedError):
                        continue
                    if answer.startswith(b"SIP/2.0 200"):
                        _LOGGER.info("kamailio ready on %s:%d, emergency calls to %s:%d", *self.address, *self.psap)
                        return


def _options(port: int, local: int, attempt: int) -> bytes:
    """An OPTIONS to the proxy itself: kamailio.cfg answers it 200 (its readiness probe)."""
    return (
        f"OPTIONS sip:{LOOPBACK}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch={_PROBE_BRANCH}{attempt}\r\n"
        f"From: <sip:ready@{LOOPBACK}>;tag=ready\r\n"
        f"To: <sip:{LOOPBACK}:{port}>\r\n"
        f"Call-ID: ready-{local}@{LOOPBACK}\r\n"
        f"CSeq: {attempt + 1} OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode("ascii")


class Sipp(_Process):
    """SIPp running one scenario: a UAS waiting on `port`, or a UAC calling `remote`.

    `files` are written into SIPp's working directory before it starts, for the scenario's
    `[file name="..."]` (a binary MSD body) or an injection file. `calls` is `-m`: SIPp exits after
    that many; `timeout_s` ends it (as a failure) if they have not finished by then."""

    name = "sipp"
    binary = SIPP
    package = "sip-tester"

    def __init__(
        self,
        scenario: Path,
        *,
        port: int | None = None,
        remote: tuple[str, int] | None = None,
        calls: int = 1,
        timeout_s: float = 10.0,
        service: str | None = None,
        files: dict[str, bytes] | None = None,
        variables: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.scenario = scenario
        self.port = free_udp_port() if port is None else port
        self.remote = remote
        self.calls = calls
        self.timeout_s = timeout_s
        self.service = service
        self.files = dict(files or {})
        self.variables = dict(variables or {})

    @property
    def address(self) -> tuple[str, int]:
        return LOOPBACK, self.port

    def _argv(self) -> list[str]:
        assert self.workdir is not None
        media = free_udp_port(avoid=(self.port, *((self.remote[1],) if self.remote else ())))
        control = free_udp_port(avoid=(self.port, media, media + 2))
        argv = [
            str(SIPP),
            *("-sf", str(self.scenario)),
            *("-i", LOOPBACK, "-p", str(self.port)),
            *("-mi", LOOPBACK, "-mp", str(media)),  # not 6000 (and 6002): benches may run side by side
            *("-cp", str(control)),  # its control socket, else 8888 on every address
            *("-m", str(self.calls)),
            *("-timeout", f"{self.timeout_s:g}s", "-timeout_error"),
            "-nostdin",
            *("-trace_err", "-error_file", str(self.workdir / "errors.log")),
            *("-trace_msg", "-message_file", str(self.workdir / "messages.log")),
            *(("-s", self.service) if self.service is not None else ()),
        ]
        for name, value in self.variables.items():
            argv += ["-set", name, value]
        if self.remote is not None:
            argv.append(f"{self.remote[0]}:{self.remote[1]}")
        return argv

    async def finished(self, within_s: float | None = None) -> int:
        """SIPp's exit code once it has run its calls (0: every call passed)."""
        process = self._process
        if process is None:
            raise RuntimeError("sipp is not running")
        async with asyncio.timeout(self.timeout_s + STOP_WITHIN_S if within_s is None else within_s):
            return await process.wait()

    def report(self) -> str:
        """What went wrong, for an assertion message: SIPp's error log, then its output."""
        errors = "(no error log)"
        if self.workdir is not None and (self.workdir / "errors.log").exists():
            errors = (self.workdir / "errors.log").read_text(errors="replace")[-4000:]
        return f"sipp errors:\n{errors}\nsipp output:\n{self.output()}"

    def messages(self) -> bytes:
        """SIPp's log of the messages it sent and received (`-trace_msg`), raw."""
        if self.workdir is None or not (self.workdir / "messages.log").exists():
            return b""
        return (self.workdir / "messages.log").read_bytes()

    async def _ready(self) -> None:
        """A UAS holds its port (UDP has no connect to probe); a UAC is on its way at once."""
        if self.remote is not None:
            return
        async with asyncio.timeout(READY_WITHIN_S):
            while not _port_taken(self.port):
                if (early := self._exited_early()) is not None:
                    raise early
                await asyncio.sleep(0.02)
