"""The steps a scenario can take (`[[step]] do = ...`): each an async function of the runner, its bench
and the step, in ACTION_TABLE; FAULTS are the ones drawn as injected faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backend_stub.provisioning import ProvisioningIssuer
from hil.billing import ACTIONS as BILLING_ACTIONS
from hil.devices.slcan_sim import Door
from hil.ownership import ACTIONS as OWNERSHIP_ACTIONS
from hil.scenario import Step
from hil.timeline import EventKind
from tcu.errors import ConfigError
from tcu.services.measure_plan import Fault, one_step_per_change
from tcu.vehicle.drive_cycle import VehicleMode

if TYPE_CHECKING:
    from hil.runner import Bench, ScenarioRunner


def describe(step: Step) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(step.args.items()))


async def _park(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    """Nothing to do: parked windows are part of the drive cycle the devices follow."""


async def _tunnel(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    bench.netem.cut()
    await runner._hold(float(step.args.get("for_s", 10)))
    bench.netem.restore()
    runner.event(EventKind.ACTION, "tunnel ends", "coverage back")


async def _broker_outage(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    kill = getattr(bench.broker, "kill", None)
    if step.args.get("kill") and kill is not None:
        await kill()
    else:
        await bench.broker.stop()
    await runner._hold(float(step.args.get("for_s", 10)))
    await bench.broker.start()
    runner.event(EventKind.ACTION, "broker back")


async def _latency(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    bench.netem.latency_s = float(step.args.get("latency_s", 0.2))
    bench.netem.loss = float(step.args.get("loss", 0.0))
    await runner._hold(float(step.args.get("for_s", 10)))
    bench.netem.latency_s, bench.netem.loss = 0.0, 0.0
    runner.event(EventKind.ACTION, "latency ends")


async def _body(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    bus = runner._can(bench).bus
    match step.do:
        case "lock":
            bus.lock()
        case "unlock":
            bus.unlock()
        case "open_door" | "close_door":
            bus.open_door(Door(step.args.get("door", "FrontLeft")), step.do == "open_door")
        case "crash":
            bus.crash()
        case "sos":
            bus.press_sos(True)
            await runner._hold(1.0)
            bus.press_sos(False)


async def _agent_kill(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    await bench.agent.kill()
    await runner._hold(float(step.args.get("restart_after_s", 2)))
    await bench.agent.start()
    runner.event(EventKind.ACTION, "agent restarted")


async def _serial_garbage(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    device = bench.devices[str(step.args.get("device", "can"))]
    await device.inject_garbage(int(step.args.get("count", 100)))


async def _unplug(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    device = bench.devices[str(step.args.get("device", "can"))]
    device.unplug()
    await runner._hold(float(step.args.get("for_s", 5)))
    device.plug()
    runner.event(EventKind.FAULT, f"{step.args.get('device', 'can')} replugged")


async def _disk_full(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    """The agent restarted with its queue capped at the size it has now: SQLite then refuses writes
    with SQLITE_FULL, the same error a full disk gives; afterwards it is restarted uncapped."""
    outbox = bench.layout.data_dir(runner.scenario.vin) / "outbox.sqlite3"
    cap = max(outbox.stat().st_size + 8192, 65536)
    await bench.agent.stop()
    runner._agent_config(bench.layout, bench.devices, extra=f"\n[queue]\nmax_bytes = {cap}\n")
    await bench.agent.start()
    await runner._hold(float(step.args.get("for_s", 10)))
    await bench.agent.stop()
    runner._agent_config(bench.layout, bench.devices)
    await bench.agent.start()
    runner.event(EventKind.FAULT, "disk space back")


def _issuer(bench: Bench) -> ProvisioningIssuer:
    if bench.backend.issuer is None:
        raise ConfigError("the backend has no signing key: it cannot issue provisioning files")
    return bench.backend.issuer


async def _provision(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    issuer, vin = _issuer(bench), runner.scenario.vin
    match step.do:
        case "book":
            term = step.args.get("term")  # none: the only term the catalogue offers for the code
            issued = issuer.book(vin, str(step.args["service"]), None if term is None else str(term))
        case "cancel":
            issued = issuer.cancel(vin, str(step.args["service"]), sale=bool(step.args.get("sale", False)))
        case "suspend":
            issued = issuer.suspend(vin)
        case _:
            issued = issuer.resume(vin)
    runner.event(EventKind.PROVISIONING, f"file v{issued.version} issued", step.do)


async def _measure(runner: ScenarioRunner, bench: Bench, step: Step) -> None:
    scheduler = bench.backend.measures
    if scheduler is None:
        raise ConfigError("the backend has no signing key: it cannot sign measure orders")
    fault = dict(step.args.get("fault", {}))
    step_ms = round(float(step.args.get("step_s", 1.0)) * 1000)
    scheduler.send(
        vin=runner.scenario.vin,
        measure_id=str(step.args["id"]),
        fault=Fault(ref=str(fault.get("ref", "")), service=str(fault.get("service", ""))),
        steps=one_step_per_change(dict(step.args["changes"]), expected_ms=step_ms),
        allowed_states=tuple(VehicleMode(s) for s in step.args.get("states", ["parked"])),
        impairs=tuple(step.args.get("impairs", ())),
        max_attempts=int(step.args.get("max_attempts", 10)),
    )


FAULTS = frozenset({"agent_kill", "serial_garbage", "unplug", "disk_full", "latency", "tunnel", "broker_outage"})

ACTION_TABLE: dict[str, Callable[[ScenarioRunner, Bench, Step], Any]] = {
    "park": _park,
    "tunnel": _tunnel,
    "broker_outage": _broker_outage,
    "latency": _latency,
    "lock": _body,
    "unlock": _body,
    "open_door": _body,
    "close_door": _body,
    "crash": _body,
    "sos": _body,
    "agent_kill": _agent_kill,
    "serial_garbage": _serial_garbage,
    "unplug": _unplug,
    "disk_full": _disk_full,
    "book": _provision,
    "cancel": _provision,
    "suspend": _provision,
    "resume": _provision,
    "measure": _measure,
    **BILLING_ACTIONS,
    **OWNERSHIP_ACTIONS,
}
