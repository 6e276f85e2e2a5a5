"""Scenario files (`hil/scenarios/*.toml`): a timeline of a drive and the expectations checked after it.

    name = "commute"
    description = "Drive, a tunnel, a broker outage; nothing may be lost."
    duration_s = 90
    time_scale = 4.0                 # the bench's virtual time: scenario seconds per real second
    devices = ["obd", "can", "gnss"] # virtual serial devices; [] feeds the agent the simulated drive
    network = "legacy_only"          # what the virtual modem's network offers: legacy_only, lte_only, both
    telemetry_interval_s = 1.0

    [vehicle]
    vin = "WMWZZZ3CZ2E123456"
    legal_ecall = true
    first_registration_days_ago = 0  # "Erstzulassung": 5y and 2+1y terms run from it
    dbc = "mycar.dbc"                # optional: the agent's [sources.can] dbc (a path or a list) and
    mapping = "mycar-can.toml"       # mapping, relative to the scenario file; default the fictional car

    [[step]]                         # at: seconds into the scenario
    at = 20
    do = "tunnel"                    # see ACTIONS for what `do` can be and the keys each one takes
    for_s = 15

    [[expect]]
    check = "records_without_gaps"   # see CHECKS

    [drive]                          # optional: the CAN device replays a recording (hil/devices/replay.py)
    replay = "recordings/commute.blf"  # candump .log, Vector .asc/.blf; relative to the scenario file
    speed = 1.0                      # times the recorded speed (multiplied by time_scale)
    loop = false                     # start over at the end; else the bus goes quiet
    channel = "0"                    # optional: only this channel of a multi-channel log

    [ecall]                          # optional: more keys of the agent's [ecall] section
    command_timeout_s = 30

    [psap]                           # optional: more keys of the backend's [psap] section
    voice_s = 7200                   # the operator never clears down: the vehicle's T2 must

`time_scale` runs the whole bench on virtual time (`tcu.virtual_time`): the agent, the backend, the
devices, the network emulator and every protocol timer among them (backoff, ack timeouts, eCall
timers, the measure cap, the PSAP's voice time) run that many times faster, and every duration in a
scenario is in its seconds. What keeps real time: MQTT keepalive (paho and Mosquitto; the runner sets
it to the 1 s MQTT allows on a fast bench), serial and process start-up. So a tunnel must last longer
than 1.5 real seconds to be noticed by keepalive, an agent takes `time_scale` times its real start-up
in scenario seconds to come up, and an AT command timeout is `time_scale` times shorter in real time
than its value — a scenario at a high scale raises it (`[ecall] command_timeout_s`). The calendar can
move on without time passing (`advance_calendar`: a car parked for weeks; the agent sleeps meanwhile).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcu.errors import ConfigError
from telematics_wire.vin import validate_vin

# action → keys it takes (besides `at` and `do`)
ACTIONS: dict[str, frozenset[str]] = {
    "park": frozenset({"for_s"}),  # ignition off, standing still, for a while
    "tunnel": frozenset({"for_s"}),  # coverage lost between agent and broker (and modem)
    "broker_outage": frozenset({"for_s", "kill"}),  # the broker stops (kill = SIGKILL, else orderly)
    "latency": frozenset({"for_s", "latency_s", "loss"}),
    "lock": frozenset(),
    "unlock": frozenset(),
    "open_door": frozenset({"door"}),
    "close_door": frozenset({"door"}),
    "crash": frozenset(),
    "sos": frozenset(),
    # refused = "text": the backend must refuse the order, with a reason containing the text (the step
    # fails if it is accepted); without it, a refusal fails the step
    "book": frozenset({"service", "term", "refused"}),
    "cancel": frozenset({"service", "sale", "refused"}),  # sale = true: a fixed term on sale (AGB 7.4)
    "suspend": frozenset({"refused"}),
    "resume": frozenset({"refused"}),
    "measure": frozenset({"id", "fault", "changes", "states", "impairs", "step_s", "max_attempts"}),
    "agent_kill": frozenset({"restart_after_s"}),  # SIGKILL the agent, start it again
    "serial_garbage": frozenset({"device", "count"}),
    "unplug": frozenset({"device", "for_s"}),
    "disk_full": frozenset({"for_s"}),
    # hil.billing: an invoice dated `days_ago` days back (day 31: payment default), paying every unpaid one
    "invoice": frozenset({"service", "amount", "days_ago"}),
    "pay": frozenset(),
    # hil.ownership: an account paired by the security code the car shows, a driver profile, the sale
    "pair": frozenset({"account"}),
    "profile": frozenset({"name"}),
    "consent": frozenset({"recipient"}),
    "owner_change": frozenset(),
    # the calendar moves on by days (and hours) while the car sleeps: the agent stops, the bench's
    # wall clock jumps, the agent starts again; scenario time does not pass (tcu.virtual_time)
    "advance_calendar": frozenset({"days", "hours"}),
    # hil.ng_ecall_checks: the network's offer changes (the modem's +CNEMS1/+CREG); the PSAP asks for the MSD again
    "network": frozenset({"offer"}),
    "request_msd": frozenset(),
}

# check → keys it takes
CHECKS: dict[str, frozenset[str]] = {
    "records_without_gaps": frozenset(),  # every sequence number 1..N stored exactly once, queue empty
    "records_accounted": frozenset(),  # stored exactly once or named by a queue_overflow event (hil.audit)
    "signal_reported": frozenset({"path"}),  # the backend has a last value for this signal (smoke only)
    # hil.signal_checks, over every reading the backend received, on the vehicle's stamps in scenario s.
    # A value: equals = bool/str/number (tolerance = for a number); at = s: the last reading at or
    # before then; window = [from_s, to_s]: every reading in it; neither: the last reading of the run.
    "signal_value": frozenset({"path", "equals", "tolerance", "at", "window"}),
    # Every reading in window (default the run) within min..max, and at least min_count (1) of them.
    "signal_range": frozenset({"path", "min", "max", "window", "min_count"}),
    # A change from → to (e.g. false → true), the one nearest near = s within within_s (1); its time measured.
    "signal_edge": frozenset({"path", "from", "to", "near", "within_s"}),
    # Each open_door/close_door/lock/unlock (a record with the new value) and crash/sos step (the MSD at
    # the PSAP) → the backend received it: p50/p99/max over the run's steps (default all of those kinds).
    "event_latency": frozenset({"steps", "p50_max_s", "p99_max_s", "max_s"}),
    # Telemetry created → received, p50/p99/max; window on the created time; exclude = ["tunnel", ...]
    # leaves out the records created from 1 s before such a step until the agent's link is back after it,
    # plus settle_s (default 5, more on a fast bench: real I/O counted time_scale times; hil.latency_checks).
    "telemetry_latency": frozenset({"p50_max_s", "p99_max_s", "max_s", "window", "exclude", "settle_s", "min_count"}),
    # hil.ecall_checks: ms from the trigger to each stage (dial, answered, msd_acknowledged, voice,
    # cleared), each <stage>_max_ms / <stage>_min_ms; session = n (default the first emergency call).
    "ecall_timings": frozenset(
        {"session"}
        | {
            f"{stage}_{bound}_ms"
            for stage in ("dial", "answered", "msd_acknowledged", "voice", "cleared")
            for bound in ("min", "max")
        }
    ),
    # The PSAP decoded an MSD with this VIN within within_m (200) of the drive's position at the crash/sos
    # step (or the eCall trigger record's time when no step caused the call).
    "msd_received": frozenset({"within_m"}),
    "service_active": frozenset({"service"}),  # the vehicle's last capability report lists it running
    "service_inactive": frozenset({"service"}),
    "measure_succeeded": frozenset({"id", "min_attempts"}),
    "ecall_before_measure_result": frozenset({"id"}),  # the MSD reached the PSAP before the measure's rollback
    "no_rejections": frozenset(),  # the backend refused nothing the vehicle sent
    # hil.service_checks: a service's states in the capability reports, in order; the MSD arrived while it was
    # suspended
    "service_history": frozenset({"service", "states"}),
    "msd_while_suspended": frozenset({"service"}),
    "intelligent_call_history": frozenset({"states"}),  # whether the call-centre call was available, in order
    # hil.ownership, after an owner_change step:
    "car_personal_data_wiped": frozenset(),  # no profile, account, code or blocked category left in the car
    "backend_personal_data_gone": frozenset(),  # no personal value from before the owner change at the backend
    "account_unlinked": frozenset(),  # the link and its consents ended
    "handover_lists": frozenset({"services", "cancelled_on_sale"}),  # the new owner's list names these services
    # a measure attempt's status, code and duration, vehicle and backend clocks (hil.measure_checks); a code's
    # state in the last capability report by scenario second `at` (hil.service_checks); the eCall ended by
    # its T2 (hil.ecall_checks); exactly these profiles and accounts in the car (hil.ownership)
    "measure_attempt": frozenset({"id", "attempt", "status", "code", "min_s", "max_s"}),
    "service_at": frozenset({"service", "at", "state"}),
    "ecall_cleared_by_t2": frozenset({"t2_s", "tolerance_s"}),
    "personal_settings": frozenset({"profiles", "accounts"}),  # exactly these in the car's personal file
    # hil.ng_ecall_checks, on the first emergency call: the transport that carried its MSD (and the vehicle's
    # choices in order), RTP both ways, only the PSAP cleared it down, MSDs resent with identifiers +1
    "ecall_transport": frozenset({"transport", "tried"}),
    "ng_voice": frozenset({"min_packets"}),
    "cleared_by_psap": frozenset(),
    "msd_resent": frozenset({"count"}),
}

DEVICES = ("obd", "can", "gnss")
NETWORKS = ("legacy_only", "lte_only", "both")  # hil.devices.modem_sim.Network
DRIVE_KEYS = frozenset({"replay", "speed", "loop", "channel"})
# Steps that change the simulated CAN bus: a recording cannot be changed.
BUS_STEPS = frozenset({"lock", "unlock", "open_door", "close_door", "crash", "sos"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveReplay:
    """`[drive]`: the CAN device replays this recording instead of the simulated drive."""

    recording: Path
    speed: float = 1.0
    loop: bool = False
    channel: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    at: float
    do: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    check: str
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        return f"{self.check}({detail})" if detail else self.check


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    time_scale: float
    devices: tuple[str, ...]
    telemetry_interval_s: float
    vin: str
    legal_ecall: bool
    steps: tuple[Step, ...]
    expectations: tuple[Expectation, ...]
    drive: DriveReplay | None = None  # None: the simulated drive cycle
    can_dbc: tuple[Path, ...] = ()  # [vehicle] dbc: the agent's CAN database instead of the packaged car
    can_mapping: Path | None = None  # [vehicle] mapping
    first_registration_days_ago: int = 0  # [vehicle]: the car was first registered this many days back
    ecall_settings: dict[str, Any] = field(default_factory=dict)  # [ecall]: more keys of the agent's [ecall]
    psap_settings: dict[str, Any] = field(default_factory=dict)  # [psap]: more keys of the backend's [psap]
    network: str = "legacy_only"  # NETWORKS: the virtual modem's network offer (NG eCall needs IMS emergency)

    def parked_windows(self) -> tuple[tuple[float, float], ...]:
        return tuple((s.at, s.at + float(s.args.get("for_s", self.duration_s))) for s in self.steps if s.do == "park")


def _entries(raw: Any, what: str, known: dict[str, frozenset[str]], key: str) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(raw, list):
        raise ConfigError(f"{what}: expected [[{what}]] tables")
    return [_entry(item, f"{what}[{index}]", what, known, key) for index, item in enumerate(raw)]


def _entry(item: Any, where: str, what: str, known: dict[str, frozenset[str]], key: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(item, dict) or not isinstance(item.get(key), str):
        raise ConfigError(f'{where}: needs {key} = "..."')
    name = item[key]
    if name not in known:
        raise ConfigError(f"{where}: unknown {key} {name!r}; expected one of {', '.join(sorted(known))}")
    # A step's `at` is when it runs; a check takes `at` only where CHECKS lists it (signal_value,
    # service_at), so an `at` on any other check is refused rather than silently ignored.
    args = {k: v for k, v in item.items() if k != key and not (what == "step" and k == "at")}
    unknown = set(args) - known[name]
    if unknown:
        takes = ", ".join(sorted(known[name])) or "no keys"
        raise ConfigError(f"{where} ({name}): unknown key(s) {', '.join(sorted(unknown))}; it takes {takes}")
    return name, item


def parse_step(item: dict[str, Any], *, duration_s: float, where: str) -> Step:
    """One `[[step]]` table (or a `tcu-hil run --step`), checked as a whole before any run: its action,
    its keys, its time within the run and the type and range of each value."""
    name, _ = _entry(item, where, "step", ACTIONS, "do")
    at = item.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ConfigError(f"{where} ({name}): needs at = <seconds into the run>; got {at!r}")
    if not 0 <= at <= duration_s:
        raise ConfigError(f"{where}: step {name} at {float(at)} s is outside 0..{duration_s} s")
    args = {k: v for k, v in item.items() if k not in ("at", "do")}
    for key, value in args.items():
        if problem := _step_value_problem(key, value):
            raise ConfigError(f"{where} ({name}): {key} = {value!r}: {problem}")
    return Step(at=float(at), do=name, args=args)


_DOORS = ("FrontLeft", "FrontRight", "RearLeft", "RearRight")  # hil.devices.slcan_sim.Door


def _step_value_problem(key: str, value: Any) -> str | None:
    """Why a step's value cannot work (None: it can), judged before the run rather than by a step
    that fails halfway through it."""
    number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    duration = key.endswith("_s") or key in ("days", "hours", "days_ago")
    choices = {"door": _DOORS, "device": (*DEVICES, "modem"), "offer": NETWORKS}.get(key)
    if duration and (not number or value < 0):
        return "expected a number of seconds (days, hours) of 0 or more"
    if key == "for_s" and value == 0:
        return "a fault of 0 s injects nothing; expected more than 0"
    if key == "loss" and (not number or not 0 <= value <= 1):
        return "expected a probability from 0 to 1"
    if key == "count" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return "expected a whole number of 1 or more"
    if choices is not None and value not in choices:
        return f"expected one of {', '.join(choices)}"
    return None


def _drive(raw: Any, *, source: str, base: Path | None, devices: tuple[str, ...]) -> DriveReplay | None:
    if raw is None:
        return None
    where = f"{source}: [drive]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(raw) - DRIVE_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(DRIVE_KEYS))}"
        )
    recording = raw.get("replay")
    if not isinstance(recording, str) or not recording:
        raise ConfigError(f'{where}: needs replay = "path/to/recording.blf" (.log, .asc or .blf)')
    path = Path(recording).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    if not path.is_file():
        raise ConfigError(f"{where}: replay = {recording!r}: no such file ({path})")
    if "can" not in devices:
        raise ConfigError(f'{where}: the recording is replayed by the CAN device: add "can" to devices')
    speed = raw.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not 0 < speed < float("inf"):
        raise ConfigError(f"{where}: speed = {speed!r}: expected a positive number (2.0 = twice as fast)")
    loop = raw.get("loop", False)
    if not isinstance(loop, bool):
        raise ConfigError(f"{where}: loop = {loop!r}: expected true or false")
    channel = raw.get("channel")
    if channel is not None and not isinstance(channel, str | int):
        raise ConfigError(f"{where}: channel = {channel!r}: expected a channel name or number")
    return DriveReplay(recording=path, speed=float(speed), loop=loop, channel=None if channel is None else str(channel))


def parse_scenario(text: str, *, source: str = "scenario", base: Path | None = None) -> Scenario:
    """`base`: the folder a relative `[drive] replay` path is resolved in (the scenario file's)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
    try:
        duration = float(raw["duration_s"])
        vehicle = raw.get("vehicle", {})
        devices = tuple(raw.get("devices", ()))
        unknown = set(devices) - set(DEVICES)
        if unknown:
            raise ConfigError(f"{source}: unknown device(s) {', '.join(sorted(unknown))}; expected {DEVICES}")
        raw_steps = raw.get("step", [])
        if not isinstance(raw_steps, list):
            raise ConfigError(f"{source}: step: expected [[step]] tables")
        steps = [
            parse_step(item, duration_s=duration, where=f"{source}: step[{index}]")
            for index, item in enumerate(raw_steps)
        ]
        expectations = [
            Expectation(check=name, args={k: v for k, v in item.items() if k != "check"})
            for name, item in _entries(raw.get("expect", []), "expect", CHECKS, "check")
        ]
        if "can" not in devices and (bus := sorted({s.do for s in steps} & BUS_STEPS)):
            raise ConfigError(f'{source}: step(s) {", ".join(bus)} drive the CAN bus: add "can" to devices')
        drive = _drive(raw.get("drive"), source=source, base=base, devices=devices)
        network = raw.get("network", "legacy_only")
        if network not in NETWORKS:
            raise ConfigError(f"{source}: network = {network!r}: expected one of {', '.join(NETWORKS)}")
        if drive is not None and (fixed := sorted({s.do for s in steps} & BUS_STEPS)):
            raise ConfigError(
                f"{source}: step(s) {', '.join(fixed)} change the simulated CAN bus, but [drive] replays "
                f"{drive.recording.name}: a recording cannot be changed"
            )
        return Scenario(
            name=str(raw["name"]),
            description=str(raw.get("description", "")),
            duration_s=duration,
            time_scale=float(raw.get("time_scale", 1.0)),
            devices=devices,
            telemetry_interval_s=float(raw.get("telemetry_interval_s", 1.0)),
            vin=validate_vin(str(vehicle.get("vin", "WMWZZZ3CZ2E123456")), where=f"{source}: vehicle.vin"),
            legal_ecall=bool(vehicle.get("legal_ecall", True)),
            steps=tuple(sorted(steps, key=lambda s: s.at)),
            expectations=tuple(expectations),
            drive=drive,
            can_dbc=tuple(_vehicle_files(vehicle.get("dbc"), base, f"{source}: vehicle.dbc")),
            can_mapping=next(iter(_vehicle_files(vehicle.get("mapping"), base, f"{source}: vehicle.mapping")), None),
            first_registration_days_ago=_days_ago(vehicle.get("first_registration_days_ago", 0), source),
            ecall_settings=_settings(raw.get("ecall", {}), f"{source}: [ecall]", reserved={"legal_ecall", "port"}),
            psap_settings=_settings(raw.get("psap", {}), f"{source}: [psap]", reserved={"port", "sip_port"}),
            network=network,
        )
    except KeyError as exc:
        raise ConfigError(f"{source}: missing {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def _days_ago(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 36500:
        raise ConfigError(f"{source}: vehicle.first_registration_days_ago = {value!r}: expected 0 to 36500 days")
    return value


def _settings(raw: Any, where: str, *, reserved: set[str]) -> dict[str, Any]:
    """Extra keys for a section the runner writes: plain numbers, strings and booleans, never the keys the
    runner itself sets (the ports of this bench)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    for key, value in raw.items():
        if key in reserved:
            raise ConfigError(f"{where}: {key} is set by the bench itself")
        if not isinstance(value, bool | int | float | str):
            raise ConfigError(f"{where}: {key} = {value!r}: expected a number, a string or a boolean")
    return dict(raw)


def _vehicle_files(value: Any, base: Path | None, where: str) -> list[Path]:
    """`[vehicle] dbc` / `mapping`: a path or a list of them, relative to the scenario file."""
    if value is None:
        return []
    names = value if isinstance(value, list) else [value]
    if (
        not names
        or not all(isinstance(name, str) and name for name in names)
        or (where.endswith("mapping") and len(names) != 1)
    ):
        raise ConfigError(
            f"{where}: got {value!r}; expected a file path{'' if where.endswith('mapping') else ' or a list'}"
        )
    paths = [Path(name).expanduser() for name in names]
    return [path if path.is_absolute() or base is None else base / path for path in paths]


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"scenario {path} cannot be read: {exc.strerror}") from exc
    return parse_scenario(text, source=str(path), base=path.parent)


def library() -> dict[str, Path]:
    """The scenarios shipped with hil/, by name."""
    folder = Path(__file__).parent / "scenarios"
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}
