"""The composition root: the eCall and the telematics side by side, each under its own supervisor,
every long-lived task named in one asyncio.TaskGroup per part."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from tcu.clock import Clock, SystemClock
from tcu.config import AgentConfig, shipped_catalogue
from tcu.errors import RecordTooLargeError
from tcu.services.account_link import AccountMessages
from tcu.services.ecu_config import EcuConfiguration
from tcu.services.manager import ServiceManager
from tcu.services.measure_attempt import Interruption
from tcu.services.measure_journal import MeasureJournal
from tcu.services.measures import MeasureEngine
from tcu.services.personal import PersonalStore
from tcu.services.sim import Sim, SimPolicy
from tcu.sources.configured import build_sources
from tcu.sources.simulated import SimulatedVehicle
from tcu.status import KEY_SIGNALS, StatusWriter
from tcu.systemd import Notifier
from tcu.telemetry.capabilities import NewSignalWatch, capability_report
from tcu.telemetry.data_policy import DataPolicy, uplink_refusal
from tcu.telemetry.events import VehicleEvents
from tcu.telemetry.snapshots import SnapshotTelemetry
from tcu.telemetry.vin_check import VinCheck
from tcu.uplink.outbox import Outbox
from tcu.uplink.session import UplinkSession
from tcu.uplink.writer_thread import WriterThread
from tcu.vehicle.state import VehicleState
from telematics_wire.ecu_keys import load_key_specs
from telematics_wire.entitlements import Entitlements
from telematics_wire.envelope import seal_record, vehicle_box
from telematics_wire.keys import load_private_key, load_public_key, load_verify_key
from telematics_wire.records import Record, RecordKind
from telematics_wire.sim_state import SimState

if TYPE_CHECKING:  # the eCall's modules (modem, state machine, MSD: ~3 MB) load when [ecall] configures one
    from tcu.ecall.activity import EcallActivity
    from tcu.ecall.service import EcallService

_LOGGER = logging.getLogger(__name__)
# The ECU key table is parsed once per process, like the shipped catalogue (tcu.config): a fleet process
# runs thousands of agents. EcuConfiguration copies it.
_shipped_key_specs = functools.cache(load_key_specs)


class Agent:
    """The TCU agent. Construct, then `await run()`; `ready` is set once the queue is open."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        writer: WriterThread | None = None,  # a queue writer shared with other agents in this process (a fleet)
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self._notifier = notifier or Notifier(env={})
        self.state = VehicleState()
        self.ready = asyncio.Event()
        # Loading keys here makes a bad key file fail before anything starts.
        self._box = vehicle_box(
            load_private_key(config.keys.vehicle_private_key), load_public_key(config.keys.backend_public_key)
        )
        self.outbox = Outbox(
            config.queue_path,
            sealer=lambda seq, record, epoch: seal_record(self._box, config.vin, seq, record, epoch=epoch),
            clock=self.clock,
            config=config.queue,
            max_envelope_bytes=config.uplink.max_payload_bytes,
            writer=writer,
        )
        self.sources = build_sources(
            config.sources,
            state=self.state,
            clock=self.clock,
            base=config.config_dir,
            triggers=() if config.ecall is None else config.ecall.triggers,
            legal_ecall=config.legal_ecall,
        )
        self.sim = Sim(SimPolicy(legal_ecall=config.legal_ecall))
        # The eCall depends on nothing of the telematics: not the queue, the MQTT session, the services
        # or consent. Its reports wait in its bounded queue until telematics stores them (_run_telematics).
        self.ecall: EcallService | None = None
        if config.ecall is not None:
            # Imported here, at start-up, never at a crash; the service warms its MSD codec up on creation.
            from tcu.ecall.service import EcallService  # noqa: PLC0415 - see TYPE_CHECKING above

            self.ecall = EcallService(
                config.ecall,
                vin=config.vin,
                state=self.state,
                clock=self.clock,
                track=self.sources.track,
                sim=self.sim,
                # 6AC running, not suspended, SIM active (AGB 5.5 c, 6.1); read at each trigger
                intelligent_call_available=lambda: self.services.entitlements.intelligent_ecall,
            )
        self.session = UplinkSession(
            vin=config.vin,
            broker=config.broker,
            uplink=config.uplink,
            outbox=self.outbox,
            box=self._box,
            clock=self.clock,
            radio_free=None if self.ecall is None else self.ecall.radio_free,  # the eCall before its AL-ACK
        )
        self.catalogue = shipped_catalogue().for_vehicle(config.vehicle.fit)  # files checked against the build
        self.personal = PersonalStore(config.personal_path)
        self.services = ServiceManager(
            vin=config.vin,
            state_file=config.provisioning_path,
            verify_key=load_verify_key(config.keys.backend_verify_key) if config.keys.backend_verify_key else None,
            legal_ecall=config.legal_ecall,
            clock=self.clock,
            catalogue=self.catalogue,
            report=self.queue_record,
            on_change=self._on_entitlements,
            ecall_active=self.ecall_active,
        )
        self.session.add_downlink_handler("provisioning", self.services.handle_downlink)
        self.ecu = EcuConfiguration(config.ecu_config_path, _shipped_key_specs())
        self.measures = MeasureEngine(
            vin=config.vin,
            verify_key=self.services.verify_key,
            ecu=self.ecu,
            journal=MeasureJournal(config.measure_journal_path),
            state=self.state,
            clock=self.clock,
            report=self.queue_record,
            coverage=lambda: self.session.stats.connected,
            ecall_active=self.ecall_active,
            sim_inactive=self.services.sim_inactive,
        )
        self._after_ecall: set[asyncio.Task[None]] = set()  # applies started when an eCall ended (_on_ecall)
        if self.ecall is not None:
            self.ecall.subscribe(self._on_ecall)
        self.session.add_downlink_handler("measure", self.measures.handle_downlink)
        # The pairing security code to show, and the account link (AGB 1.6 a, 7.2).
        self.accounts = AccountMessages(
            vin=config.vin, verify_key=self.services.verify_key, personal=self.personal, clock=self.clock
        )
        self.session.add_downlink_handler("account", self.accounts.handle_downlink)
        self.session.add_link_listener(self._on_link)
        self.policy = DataPolicy(
            catalogue=self.catalogue,
            entitlements=lambda: self.services.entitlements,
            personal=self.personal.current,
            require_services=config.telemetry.require_services,
        )
        self._withheld: set[str] = set()  # kinds of record kept off the uplink in this SIM state, logged once
        self.new_signals = NewSignalWatch(
            policy=self.policy, report=self.report_capabilities, consents=lambda: self.personal.current().consents
        )
        self.state.subscribe(self.new_signals.on_signal)
        self.vin_check = VinCheck(
            configured=config.vin, clock=self.clock, report=self.queue_record, allowed=self.policy.allows
        )
        self.state.subscribe(self.vin_check.on_signal)
        # Event data (service call, parked position, doors and locks): pushed at once, within the data policy.
        self.events = VehicleEvents(
            state=self.state,
            clock=self.clock,
            gate=self.policy,
            report=self.queue_record,
            store_path=config.data_dir / "service_calls.json",
        )
        self.state.subscribe(self.events.on_signal)
        self.telemetry = SnapshotTelemetry(
            state=self.state,
            outbox=self.outbox,
            clock=self.clock,
            interval_s=config.telemetry.interval_s,
            on_queued=self.session.notify,
            select=self.policy.allowed_paths,
        )

    def status(self) -> dict[str, Any]:
        """What `status.json` shows: the agent's state at a glance."""
        queue = self.outbox.stats()
        entitlements = self.services.entitlements
        attempt = self.measures.current
        return {
            "ts": self.clock.now().isoformat(),
            "vin": self.config.vin,
            "link": {"up": self.session.stats.connected, "error": self.session.stats.last_error},
            "queue": {"depth": queue.depth, "next_seq": queue.next_seq, "storage_full": queue.storage_full},
            "acknowledged": self.session.stats.acknowledged,
            "services": {
                "running": sorted(entitlements.running),
                "suspended": sorted(entitlements.suspended),
                "payment_default": entitlements.payment_default,
                "sim": entitlements.sim.value,
                "sim_reason": entitlements.sim_reason,
                "version": entitlements.version,
            },
            "measure": None if attempt is None else {"id": attempt.order.measure_id, "attempt": attempt.order.attempt},
            "ecall": None if self.ecall is None else {"state": self.ecall.state.value, "sim": self.sim.state.value},
            "signals": {path: self.state.value(path) for path in KEY_SIGNALS},
        }

    def ecall_active(self) -> bool:
        return self.ecall is not None and self.ecall.active.is_set()

    def _on_ecall(self, activity: EcallActivity) -> None:
        if activity.started:
            self.measures.interrupt(Interruption.ECALL)  # the eCall goes first; the measure rolls back
        else:
            # A provisioning file that waited for the call: applied in its own task, never inside the
            # eCall's listener (its signature check and fsyncs would hold the eCall engine up).
            followup = asyncio.create_task(self.services.ecall_ended(), name="provisioning-after-ecall")
            self._after_ecall.add(followup)
            followup.add_done_callback(self._after_ecall_done)

    def _after_ecall_done(self, followup: asyncio.Task[None]) -> None:
        self._after_ecall.discard(followup)
        if not followup.cancelled() and (error := followup.exception()) is not None:
            _LOGGER.error("the provisioning file that waited for the eCall was not applied", exc_info=error)

    def _on_entitlements(self, entitlements: Entitlements) -> None:
        if entitlements.sim is not self.sim.state:
            self._withheld.clear()
            if entitlements.sim is not SimState.ACTIVE:
                _LOGGER.warning("SIM %s: %s", entitlements.sim.value, entitlements.sim_reason)
        decision = self.sim.request(entitlements.sim)
        if not decision.allowed:
            _LOGGER.warning("SIM stays %s: %s", self.sim.state.value, decision.reason)
        self.report_capabilities()

    def _on_link(self, up: bool) -> None:
        if not up:
            self.measures.interrupt(Interruption.COVERAGE_LOST)

    def queue_record(self, record: Record) -> None:
        """Hand an event or report to the queue's writer and wake the uplink once it is durable; while the
        SIM is not active only eCall records and answers to the backend (data_policy.uplink_refusal)."""
        refusal = uplink_refusal(record, self.services.entitlements)
        if refusal is not None:
            kind = str(record.body.get("type", record.kind.value))
            if kind not in self._withheld:  # once per kind and SIM state: events can come at bus rate
                self._withheld.add(kind)
                _LOGGER.warning("%s (further ones not logged while the SIM stays so)", refusal)
            return
        # Producers here are synchronous callbacks: they hand over and go on; the writer keeps the order.
        self.outbox.submit([record]).add_done_callback(functools.partial(self._queued, record))

    def _queued(self, record: Record, outcome: asyncio.Future[None]) -> None:
        if outcome.cancelled():
            return
        error = outcome.exception()
        if error is not None:
            _LOGGER.error("%s record not queued: %s", record.kind, error)
            return
        self.session.notify()

    def report_capabilities(self) -> None:
        available = self.state.snapshot().keys()
        body = capability_report(
            entitlements=self.services.entitlements,
            policy=self.policy,
            available_signals=available,
            interval_s=self.config.telemetry.interval_s,
        )
        self.queue_record(Record(kind=RecordKind.EVENT, created=self.clock.now(), body=body))
        self.new_signals.reported(available)

    async def run(self) -> None:
        """The eCall and the telematics each under their own supervisor: neither can stop the other."""
        async with asyncio.TaskGroup() as tasks:
            if self.ecall is not None:
                tasks.create_task(_supervise("ecall", self.ecall.run), name="ecall")
            tasks.create_task(_supervise("telematics", self._run_telematics), name="telematics")

    async def _run_telematics(self) -> None:
        config = self.config
        async with self.outbox:
            self.personal.load()
            self.events.load()  # service items called before a restart are not called again
            self.ecu.load()
            await self.measures.recover()  # an attempt the agent died in is rolled back before anything else
            self.services.load()  # reports the capabilities it derives
            await self.outbox.committed()  # ready: what the start-up reported is queued (and counted)
            self.ready.set()
            self._notifier.ready(f"VIN {config.vin}: {self.outbox.stats().depth} record(s) queued")
            _LOGGER.info("agent for VIN %s starting; data in %s", config.vin, config.data_dir)
            try:
                await self._run_telematics_tasks()
            finally:
                self._hand_over_pending_ecall_reports()

    def _hand_over_pending_ecall_reports(self) -> None:
        """A stop (or a telematics restart) while eCall reports still wait in their queue: hand them to the
        queue's writer, which commits them before the queue closes, so an eCall's records survive it."""
        if self.ecall is None:
            return
        pending = self.ecall.reports.take_pending()
        if pending:
            _LOGGER.info("%d eCall report(s) not yet stored at telematics' stop: handed to the queue", len(pending))
        for record in pending:  # one hand-over each: a record refused (too large) fails only itself
            self.outbox.submit([record]).add_done_callback(functools.partial(self._queued, record))

    async def _run_telematics_tasks(self) -> None:
        config = self.config
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.session.run(), name="uplink")
            if self.ecall is not None:
                store = functools.partial(store_ecall_report, self.outbox, self.session.notify)
                tasks.create_task(self.ecall.reports.drain(store), name="ecall-reports")
            tasks.create_task(self.telemetry.run(), name="telemetry")
            tasks.create_task(self.new_signals.run(), name="capabilities")
            tasks.create_task(self.events.run(), name="events")
            tasks.create_task(self.services.run(config.vehicle.services_tick_s), name="services")
            tasks.create_task(self.measures.run(), name="remote-measures")
            tasks.create_task(self._notifier.watchdog(), name="systemd-watchdog")
            if config.vehicle.status_interval_s > 0:
                status = StatusWriter(config.status_path, self.status, config.vehicle.status_interval_s)
                tasks.create_task(status.run(), name="status-file")
            if config.simulation.enabled:
                simulated = SimulatedVehicle(
                    state=self.state,
                    clock=self.clock,
                    update_interval_s=config.simulation.update_interval_s,
                    speedup=config.simulation.speedup,
                )
                tasks.create_task(simulated.run(), name="source-simulation")
            for name, runner in self.sources.runners.items():
                tasks.create_task(runner(), name=f"source-{name}")


async def store_ecall_report(outbox: Outbox, notify: Callable[[], None], record: Record) -> None:
    """Telematics' end of the eCall's report queue: stored durably off the event loop, then sent (`notify`
    wakes the uplink). The agent drains its eCall reports into this, and so does the slow-disk benchmark."""
    try:
        await outbox.put(record)
    except RecordTooLargeError as exc:
        _LOGGER.error("%s record not queued: %s", record.kind, exc)
        return
    notify()


async def _supervise(name: str, run: Callable[[], Coroutine[Any, Any, object]], restart_s: float = 5.0) -> None:
    """Run forever; a failure is logged with its traceback and the part restarted."""
    while True:
        try:
            await run()
        except Exception:
            _LOGGER.exception("%s failed; restarting it in %.0f s", name, restart_s)
        await asyncio.sleep(restart_s)
