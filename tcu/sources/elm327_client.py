"""The OBD-II source: an ELM327 on a serial port, polled per PID into the vehicle state.

    client = Elm327Client(Elm327ClientConfig(port="/dev/ttyUSB0"), state=state, clock=clock)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(client.run(), name="obd")

`run()` never returns and never raises (only cancellation ends it): each connection opens the port,
initialises the adapter, reads the VIN, then polls the mapped PIDs the vehicle supports, each at its
own interval, plus the stored DTCs. A PID that fails (`NO DATA`, `?`, garbage, a cut line) is logged
with its reason and polling goes on; after `stale_after_failures` failures in a row its signal is
marked stale. A port that vanishes, or `max_timeouts` unanswered requests in a row, ends the
connection: every signal of the source is marked stale and the port is reopened after a capped,
jittered backoff (`tcu.sources.source_loop`). Timestamps come from the injected `Clock`; intervals run
on the event loop's clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import NoReturn

from tcu.backoff import Backoff
from tcu.clock import Clock
from tcu.errors import AdapterStatusError, DeviceGoneError, DeviceTimeoutError, ProtocolError
from tcu.reconnect import Sleep
from tcu.sources.elm327_link import PromptLink, SerialPromptLink
from tcu.sources.elm327_mapping import ObdMapping, PidMapping, load_obd_mapping
from tcu.sources.elm327_session import AdapterInfo, Elm327Session, Elm327SessionConfig
from tcu.sources.source_loop import source_reconnect_loop
from tcu.vehicle.state import Quality, Signal, VehicleState
from telematics_wire.signal_values import MAX_LIST_ITEMS, SignalValue

_LOGGER = logging.getLogger(__name__)

LinkOpener = Callable[[], Awaitable[PromptLink]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Elm327ClientConfig:
    port: str  # device path or pyserial URL (socket://, rfc2217://, spy://...)
    baudrate: int = 38400
    settings: Elm327SessionConfig = field(default_factory=Elm327SessionConfig)
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.5, cap_s=30.0))
    max_timeouts: int = 3  # unanswered requests in a row before the port is reopened
    stale_after_failures: int = 3  # failed polls in a row before that one signal is marked stale

    def __post_init__(self) -> None:
        if self.baudrate <= 0:
            raise ValueError(f"ELM327 baud rate {self.baudrate} must be positive")
        if self.max_timeouts < 1 or self.stale_after_failures < 1:
            raise ValueError("ELM327 max_timeouts and stale_after_failures must be at least 1")


@dataclass(slots=True)
class _Job:
    """One periodic request and how it has been going."""

    name: str
    interval_s: float
    run: Callable[[], Awaitable[None]]
    path: str | None = None
    due: float = 0.0
    failures: int = 0
    last_reason: str = ""


class Elm327Client:
    def __init__(
        self,
        config: Elm327ClientConfig,
        *,
        state: VehicleState,
        clock: Clock,
        mapping: ObdMapping | None = None,
        opener: LinkOpener | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._config = config
        self._state = state
        self._clock = clock
        self._mapping = mapping or load_obd_mapping()
        self._opener = opener or (lambda: SerialPromptLink.open(config.port, config.baudrate))
        self._reconnect = source_reconnect_loop(
            name=f"ELM327 {config.port}",
            backoff=config.backoff,
            rng=rng,
            on_down=self._down,
            sleep=sleep,
            log_retries=False,  # `_down` says it once per outage
        )
        self._session: Elm327Session | None = None
        self._vin: str | None = None
        self._dtcs: tuple[str, ...] | None = None
        self._notes_logged: set[str] = set()
        self._outage_attempts = 0  # failed connections since the adapter last worked (0: not in an outage)

    @property
    def source(self) -> str:
        return self._mapping.source

    @property
    def info(self) -> AdapterInfo | None:
        """What the current connection found; None while disconnected."""
        return None if self._session is None else self._session.info

    @property
    def vin(self) -> str | None:
        return self._vin

    @property
    def dtcs(self) -> tuple[str, ...] | None:
        """Stored DTCs from the last successful mode 03 read."""
        return self._dtcs

    async def run(self) -> NoReturn:
        await self._reconnect.run(self._connection)

    async def read_dtcs(self) -> tuple[str, ...]:
        """Read the stored DTCs now (between two polls); `DeviceGoneError` while disconnected."""
        await self._dtc_job(self._require_session())
        return self._dtcs or ()

    async def read_vin(self) -> str:
        vin = await self._require_session().read_vin()
        self._store_vin(vin)
        return vin

    def _require_session(self) -> Elm327Session:
        if self._session is None or self._session.info is None:
            raise DeviceGoneError(f"ELM327 on {self._config.port} is not connected")
        return self._session

    async def _connection(self) -> None:
        link = await self._opener()
        try:
            session = Elm327Session(link, self._config.settings)
            self._session = session
            info = await session.initialise()
            self._reconnect.healthy()
            if self._outage_attempts:
                attempts = self._outage_attempts
                _LOGGER.info("ELM327 on %s is back after %d failed attempt(s)", self._config.port, attempts)
                self._outage_attempts = 0
            _LOGGER.info(
                "ELM327 %s on %s: protocol %s%s, ECUs %s, %d PIDs supported",
                info.version or "(no banner)",
                self._config.port,
                info.protocol.protocol.name,
                " (auto)" if info.protocol.auto else "",
                ", ".join(info.ecus) or "(headers off)",
                len(info.supported_pids),
            )
            await self._read_vin_once(session)
            await self._poll(session, link, info)
        finally:
            self._session = None
            await link.aclose()

    def _down(self, reason: str) -> None:
        """One line per outage, however many reconnect attempts it takes (those are debug lines)."""
        paths = self._state.mark_stale(self.source, self._clock)
        self._outage_attempts += 1
        if self._outage_attempts > 1:
            _LOGGER.debug("ELM327 on %s still unavailable (%s)", self._config.port, reason)
            return
        _LOGGER.warning(
            "ELM327 on %s is unavailable (%s); %d OBD signal(s) marked stale. Check that the adapter is plugged "
            "in and the port path is right; reconnecting in the background",
            self._config.port,
            reason,
            len(paths),
        )
        if paths:
            _LOGGER.debug("OBD signals stale: %s", ", ".join(sorted(paths)))

    async def _read_vin_once(self, session: Elm327Session) -> None:
        try:
            vin = await session.read_vin()
        except (AdapterStatusError, ProtocolError, DeviceTimeoutError) as exc:
            _LOGGER.warning("OBD: VIN not readable: %s", exc)
            return
        self._store_vin(vin)

    def _store_vin(self, vin: str) -> None:
        if self._vin is not None and vin != self._vin:
            _LOGGER.warning("OBD: VIN changed from %s to %s (adapter moved to another vehicle?)", self._vin, vin)
        self._vin = vin
        if self._mapping.vin_path:
            self._write(self._mapping.vin_path, vin)

    def _jobs(self, session: Elm327Session, info: AdapterInfo) -> list[_Job]:
        jobs = []
        for mapping in self._mapping.pids:
            if mapping.mode == 0x01 and mapping.pid not in info.supported_pids:  # mode 22 DIDs have no bitmap
                _LOGGER.info("OBD: vehicle does not support %s (%s); not polled", mapping.request, mapping.path)
                continue
            jobs.append(
                _Job(
                    name=mapping.request,
                    interval_s=mapping.interval_s,
                    run=functools.partial(self._pid_job, session, mapping),
                    path=mapping.path,
                )
            )
        if self._mapping.dtc_count_path is not None or self._mapping.dtc_list_path is not None:
            jobs.append(
                _Job(
                    name="03",
                    interval_s=self._mapping.dtc_interval_s,
                    run=functools.partial(self._dtc_job, session),
                    path=self._mapping.dtc_count_path or self._mapping.dtc_list_path,
                )
            )
        now = asyncio.get_running_loop().time()
        for job in jobs:
            job.due = now
        return jobs

    async def _poll(self, session: Elm327Session, link: PromptLink, info: AdapterInfo) -> None:
        loop = asyncio.get_running_loop()
        jobs = self._jobs(session, info)
        timeouts = 0
        while True:
            if not jobs:
                _LOGGER.warning("OBD: nothing to poll on %s; idling until it goes away", self._config.port)
                await link.wait_lost()
                raise DeviceGoneError(f"{self._config.port} went away")
            job = min(jobs, key=lambda j: j.due)
            if (delay := job.due - loop.time()) > 0:
                await self._idle(link, delay)
            if session.needs_reinit:
                jobs = self._jobs(session, await session.initialise())
                continue
            job.due = max(job.due + job.interval_s, loop.time())
            try:
                await job.run()
            except DeviceTimeoutError as exc:
                timeouts += 1
                self._failed(job, exc)
                if timeouts >= self._config.max_timeouts:
                    raise DeviceTimeoutError(f"{timeouts} requests in a row went unanswered") from exc
                continue
            except (AdapterStatusError, ProtocolError) as exc:
                self._failed(job, exc)
            else:
                self._recovered(job)
            timeouts = 0

    async def _idle(self, link: PromptLink, delay: float) -> None:
        """Wait `delay` seconds, but notice at once if the port goes away meanwhile."""
        try:
            async with asyncio.timeout(delay):
                await link.wait_lost()
        except TimeoutError:
            return
        raise DeviceGoneError(f"{self._config.port} went away")

    async def _pid_job(self, session: Elm327Session, mapping: PidMapping) -> None:
        self._write(mapping.path, await mapping.read(session))

    async def _dtc_job(self, session: Elm327Session) -> None:
        stored = await session.read_dtcs()
        for note in stored.notes:
            if note not in self._notes_logged:
                self._notes_logged.add(note)
                _LOGGER.warning("OBD mode 03: %s", note)
        if stored.codes != self._dtcs:
            _LOGGER.info("OBD: stored DTCs %s", ", ".join(stored.codes) or "none")
        self._dtcs = stored.codes
        if self._mapping.dtc_count_path:
            self._write(self._mapping.dtc_count_path, len(stored.codes))
        if self._mapping.dtc_list_path:
            self._write(self._mapping.dtc_list_path, self._sendable_dtcs(stored.codes))

    def _sendable_dtcs(self, codes: tuple[str, ...]) -> tuple[str, ...]:
        """The codes as a list signal can carry them; the count signal still says how many there are."""
        if len(codes) <= MAX_LIST_ITEMS:
            return codes
        note = f"{len(codes)} stored DTCs; only the first {MAX_LIST_ITEMS} are sent as a list"
        if note not in self._notes_logged:
            self._notes_logged.add(note)
            _LOGGER.warning("OBD mode 03: %s", note)
        return codes[:MAX_LIST_ITEMS]

    def _write(self, path: str, value: SignalValue, quality: Quality = Quality.GOOD) -> None:
        clock = self._clock
        self._state.update(
            Signal(
                path=path,
                value=value,
                timestamp=clock.now(),
                source=self.source,
                quality=quality,
                monotonic=clock.monotonic(),
            )
        )

    def _failed(self, job: _Job, exc: Exception) -> None:
        job.failures += 1
        reason = str(exc)
        if reason != job.last_reason:
            _LOGGER.warning("OBD %s: %s", job.name, reason)
            job.last_reason = reason
        else:
            _LOGGER.debug("OBD %s: %s (again, %d in a row)", job.name, reason, job.failures)
        if job.path and job.failures == self._config.stale_after_failures:
            current = self._state.get(job.path)
            if current is not None and current.source == self.source and current.quality is Quality.GOOD:
                _LOGGER.warning("OBD %s: %d failures in a row; %s is stale", job.name, job.failures, job.path)
                self._write(job.path, current.value, Quality.STALE)

    def _recovered(self, job: _Job) -> None:
        if job.failures:
            _LOGGER.info("OBD %s: answering again after %d failure(s)", job.name, job.failures)
        job.failures = 0
        job.last_reason = ""
