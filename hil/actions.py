"""The steps a scenario can take (`[[step]] do = ...`): each an async function of the run (`RunContext`)
and the step, in ACTION_TABLE; FAULTS are the ones drawn as injected faults; `perform` runs one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from backend_stub.provisioning import ProvisioningIssuer
from hil.billing import ACTIONS as BILLING_ACTIONS
from hil.devices.slcan_sim import Door
from hil.ng_ecall_checks import ACTIONS as NG_ECALL_ACTIONS
from hil.ownership import ACTIONS as OWNERSHIP_ACTIONS
from hil.run_context import ByHandError, RunContext
from hil.scenario import Step
from hil.timeline import EventKind, ExpectationResult, Span, SpanKind
from tcu.config import QueueConfig
from tcu.errors import ConfigError
from telematics_wire.measure_plan import Fault, one_step_per_change
from telematics_wire.vehicle_mode import VehicleMode

_LOGGER = logging.getLogger(__name__)


def describe(step: Step) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(step.args.items()))


@contextlib.contextmanager
def fault_span(run: RunContext, label: str, detail: str = "") -> Iterator[list[str]]:
    """The fault as a span on the timeline, from here to the end of the block, with its label; notes
    appended to the yielded list join the detail. A fault cut short still gets its end, and says so."""
    start = run.time.now()
    notes = [detail] if detail else []
    try:
        yield notes
    except asyncio.CancelledError:
        notes.append("cut short: the run ended first")
        raise
    except Exception as exc:
        notes.append(f"cut short: {type(exc).__name__}: {exc}")
        raise
    finally:
        end = round(run.time.now(), 3)
        span = Span(kind=SpanKind.FAULT, label=label, start=round(start, 3), end=end, detail="; ".join(notes))
        run.timeline.spans.append(span)


async def _restart_agent(
    run: RunContext,
    label: str,
    *,
    kill: bool = False,
    down_s: float = 0.0,
    while_down: Callable[[], None] = lambda: None,
) -> None:
    """Kill (a power cut) or stop the agent, keep it down `down_s`, do `while_down`, start it again; the
    time it was not running is an agent-down span with `label`, exact to the moment of each call."""
    start = run.time.now()
    try:
        await (run.bench.agent.kill() if kill else run.bench.agent.stop())
        run.event(EventKind.AGENT, f"agent {'SIGKILLed' if kill else 'stopped'}", label)
        if down_s > 0:
            await run.time.hold(down_s)
        while_down()
        await run.bench.agent.start()
        run.event(EventKind.AGENT, "agent restarted", label)
    finally:
        end = round(run.time.now(), 3)
        how = "SIGKILL, no flush, nothing said to the broker" if kill else "orderly stop (SIGTERM)"
        span = Span(kind=SpanKind.AGENT_DOWN, label=label, start=round(start, 3), end=end, detail=how)
        run.timeline.spans.append(span)


async def _park(run: RunContext, step: Step) -> None:
    """Nothing to do: parked windows are part of the drive cycle the devices follow."""


async def _tunnel(run: RunContext, step: Step) -> None:
    with fault_span(run, "tunnel", "no coverage: every packet black-holed"):
        run.bench.netem.cut()
        try:
            await run.time.hold(float(step.args.get("for_s", 10)))
        finally:
            run.bench.netem.restore()
    run.event(EventKind.FAULT, "tunnel ends", "coverage back")


async def _broker_outage(run: RunContext, step: Step) -> None:
    kill = getattr(run.bench.broker, "kill", None)
    killed = bool(step.args.get("kill")) and kill is not None
    with fault_span(run, "broker_outage", "broker killed" if killed else "broker stopped"):
        if killed and kill is not None:
            await kill()
        else:
            await run.bench.broker.stop()
        await run.time.hold(float(step.args.get("for_s", 10)))
        await run.bench.broker.start()
    run.event(EventKind.FAULT, "broker back")


async def _latency(run: RunContext, step: Step) -> None:
    latency_s, loss = float(step.args.get("latency_s", 0.2)), float(step.args.get("loss", 0.0))
    with fault_span(run, "latency", f"{latency_s * 1000:.0f} ms added, {loss:.0%} of packets lost"):
        run.bench.netem.latency_s, run.bench.netem.loss = latency_s, loss
        try:
            await run.time.hold(float(step.args.get("for_s", 10)))
        finally:
            run.bench.netem.latency_s, run.bench.netem.loss = 0.0, 0.0
    run.event(EventKind.FAULT, "latency ends")


async def _body(run: RunContext, step: Step) -> None:
    bus = run.can_bus().bus
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
            await run.time.hold(1.0)
            bus.press_sos(False)


async def _agent_kill(run: RunContext, step: Step) -> None:
    down_s = float(step.args.get("restart_after_s", 2))
    with fault_span(run, "agent_kill", f"SIGKILL, restarted after {down_s:g} s"):
        await _restart_agent(run, "agent_kill: SIGKILL", kill=True, down_s=down_s)


async def _serial_garbage(run: RunContext, step: Step) -> None:
    name, count = str(step.args.get("device", "can")), int(step.args.get("count", 100))
    with fault_span(run, f"serial_garbage {name}", f"{count} garbage bytes on the {name} line"):
        await run.bench.devices[name].inject_garbage(count)


async def _unplug(run: RunContext, step: Step) -> None:
    name = str(step.args.get("device", "can"))
    device = run.bench.devices[name]
    with fault_span(run, f"unplug {name}", f"the {name} adapter unplugged"):
        device.unplug()
        try:
            await run.time.hold(float(step.args.get("for_s", 5)))
        finally:
            device.plug()
    run.event(EventKind.FAULT, f"{name} replugged")


async def _disk_full(run: RunContext, step: Step) -> None:
    """The agent restarted with its queue capped at the size it has now: SQLite then refuses writes
    with SQLITE_FULL, the same error a full disk gives; afterwards it is restarted uncapped."""
    cap = max(run.outbox.stat().st_size + 8192, 65536)
    with fault_span(run, "disk_full", f"queue capped at {cap} bytes; the agent restarted twice"):
        run.write_agent_config(queue=QueueConfig(max_bytes=cap))
        await _restart_agent(run, f"disk_full: restart 1 of 2 (queue capped at {cap} bytes)")
        await run.time.hold(float(step.args.get("for_s", 10)))
        run.write_agent_config()
        await _restart_agent(run, "disk_full: restart 2 of 2 (queue uncapped)")
    run.event(EventKind.FAULT, "disk space back")


def _issuer(run: RunContext) -> ProvisioningIssuer:
    if run.bench.backend.issuer is None:
        raise ConfigError("the backend has no signing key: it cannot issue provisioning files")
    return run.bench.backend.issuer


async def _provision(run: RunContext, step: Step) -> None:
    issuer, vin, backend = _issuer(run), run.scenario.vin, run.bench.backend
    # On the backend's database thread: its connections are that thread's while it runs.
    match step.do:
        case "book":
            term = step.args.get("term")  # none: the only term the catalogue offers for the code
            issued = await backend.operate(
                issuer.book, vin, str(step.args["service"]), None if term is None else str(term)
            )
        case "cancel":
            sale = bool(step.args.get("sale", False))
            issued = await backend.operate(issuer.cancel, vin, str(step.args["service"]), sale=sale)
        case "suspend":
            issued = await backend.operate(issuer.suspend, vin)
        case _:
            issued = await backend.operate(issuer.resume, vin)
    run.event(EventKind.PROVISIONING, f"file v{issued.version} issued", step.do)


async def _measure(run: RunContext, step: Step) -> None:
    scheduler = run.bench.backend.measures
    if scheduler is None:
        raise ConfigError("the backend has no signing key: it cannot sign measure orders")
    fault = dict(step.args.get("fault", {}))
    step_ms = round(float(step.args.get("step_s", 1.0)) * 1000)
    await run.bench.backend.operate(
        scheduler.send,
        vin=run.scenario.vin,
        measure_id=str(step.args["id"]),
        fault=Fault(ref=str(fault.get("ref", "")), service=str(fault.get("service", ""))),
        steps=one_step_per_change(dict(step.args["changes"]), expected_ms=step_ms),
        allowed_states=tuple(VehicleMode(s) for s in step.args.get("states", ["parked"])),
        impairs=tuple(step.args.get("impairs", ())),
        max_attempts=int(step.args.get("max_attempts", 10)),
    )


async def _advance_calendar(run: RunContext, step: Step) -> None:
    """The car sleeps while the calendar moves on: the agent stops, the bench's wall clock jumps, the agent
    wakes with it. Only the wall clock moves: the backend's own timers (invoices, retention) see the
    new date at their next round."""
    days, hours = float(step.args.get("days", 0)), float(step.args.get("hours", 0))
    # The agent's stop and start are an agent-down span like agent_kill's, so the report names the step
    # that stopped it (not "no step of the scenario had stopped it").
    await _restart_agent(
        run,
        f"advance_calendar: asleep, calendar +{days:g} d" + (f" {hours:g} h" if hours else ""),
        while_down=lambda: run.time.advance_calendar(days * 86400 + hours * 3600),
    )
    run.event(EventKind.ACTION, "calendar moved", f"now {run.time.wall.now().date().isoformat()}; agent woke")


FAULTS = frozenset({"agent_kill", "serial_garbage", "unplug", "disk_full", "latency", "tunnel", "broker_outage"})

ACTION_TABLE: dict[str, Callable[[RunContext, Step], Any]] = {
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
    "advance_calendar": _advance_calendar,
    **BILLING_ACTIONS,
    **OWNERSHIP_ACTIONS,
    **NG_ECALL_ACTIONS,
}


async def perform(run: RunContext, step: Step) -> None:
    """One step, at its time; a step that fails is recorded (`steps_result`), the run goes on."""
    refused = step.args.get("refused")  # the refusal this step expects, if any
    try:
        await ACTION_TABLE[step.do](run, step)
    except ByHandError as exc:  # a bench with real adapters: the engineer does it, the run goes on
        run.event(EventKind.ACTION, f"{step.do}: by hand", str(exc))
    except Exception as exc:  # a failing action is a finding of the run, not a crash of the runner
        if refused is not None and str(refused) in str(exc):
            run.event(EventKind.ACTION, f"{step.do} refused, as expected", str(exc))
            return
        _LOGGER.exception("step %s at %s s failed", step.do, step.at)
        _step_failed(run, step, f"{type(exc).__name__}: {exc}")
    else:
        if refused is not None:
            _step_failed(run, step, f"expected a refusal containing {refused!r}, but it was accepted")


def _step_failed(run: RunContext, step: Step, why: str) -> None:
    run.event(EventKind.FAULT, f"{step.do} failed", why)
    run.failed_steps.append(f"{step.do} at {step.at:g} s: {why}")


def steps_result(run: RunContext) -> list[ExpectationResult]:
    """A step that failed is a failed run, whatever the checks say: its fault was never injected."""
    if not run.failed_steps:
        return []
    detail = f"{len(run.failed_steps)} step(s) failed: " + "; ".join(run.failed_steps)
    return [ExpectationResult(name="every step performed", passed=False, detail=detail)]
