"""The `[ecall]` configuration: frozen dataclasses, and the rule that a legal-eCall vehicle never runs without it.

    [ecall]
    legal_ecall = true                 # Regulation (EU) 2015/758 vehicle (the default: presumed until told)
    port = "/dev/ttyUSB2"              # modem AT port, or a pyserial URL (socket://, rfc2217://, spy://)
    baudrate = 115200
    profile = "simcom"                 # modem dialect, see tcu.sources.modem.PROFILES
    msd_version = 2                    # EN 15722:2015 (2) or :2020 (3)
    vehicle_type = "M1"
    propulsion = ["gasoline"]          # gasoline diesel cng lpg electric hydrogen other
    command_timeout_s = 5.0
    sos_hold_s = 0.3                   # the SOS button must stay pressed this long
    position_max_age_s = 30.0          # an older fix is sent but not trusted
    call_centre_number = "+498900000000"   # the intelligent emergency call (6AC): the carmaker's call centre
    call_centre_answer_s = 20.0        # legal-eCall vehicle: no answer by then → the 112 eCall instead
    vehicle_model = "BMW 320d Touring" # told to the call centre with the crash data (empty: unknown)
    vehicle_colour = "Mineralgrau"
    transport = "auto"                 # auto: NG eCall over IMS when the network offers it, else CS | cs | ng
    [ecall.ng]                         # NG eCall (EN 17184, RFC 8147): the SIP user agent, tcu.ecall.ng
    proxy = "127.0.0.1:5060"           # the P-CSCF (host:port, UDP) the emergency INVITE goes to
    local_port = 0                     # SIP port of the vehicle's user agent (0: any free port)
    rtp_port = 0                       # RTP voice port (0: any free port)
    [ecall.timers]                     # seconds; every key optional, defaults in EcallTimers
    t9_s = 3600                        # EN 16062 names: t2_s t5_s t6_s t7_s t9_s t10_s
    redial_interval_s = 30             # also dial_timeout_s, drop_redial_window_s, drop_redial_interval_s, ...
    max_dial_attempts = 0              # 0: no limit (pan-European); ERA-GLONASS uses 10
    [[ecall.trigger]]                  # optional; without rules, the CAN mapping's crash/airbag/SOS paths
    kind = "crash"                     # crash | airbag | sos (at most one rule per kind)
    signal = "ACU_01.CrashSeverity"    # "Message.Signal" of the DBC, or a VSS path the mapping feeds
    values = ["FRONT", "SIDE", "REAR", "ROLLOVER"]   # VAL_ names or raw integers that mean it ...
    # at_least = 4.0 / at_most = ...   # ... or thresholds on the physical value (DBC unit)
    invalid = ["SNA"]                  # values meaning "not available": never a trigger
    # hold_s = 0.5                     # sos only: the button must stay pressed this long

`load_ecall_config(table, vin=...)` is what the agent calls: it returns None only for a vehicle that
says `legal_ecall = false` and configures no modem. Anything else that is missing or invalid raises
`ConfigError` naming the key, so the agent refuses to start instead of running without eCall. The
section is presumed legal when absent: an EU M1/N1 vehicle type-approved since 2018-03-31 must have
eCall, and silently assuming the opposite is the one mistake this module exists to prevent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tcu.ecall.ng.transport import EcallTransport
from tcu.ecall.triggers import TriggerKind, TriggerRule
from tcu.errors import ConfigError
from tcu.sources.modem import PROFILES, ModemProfile
from telematics_wire.errors import MsdError
from telematics_wire.msd_model import Propulsion, VehicleType, check_vin

_PROPULSION = {flag.name.lower(): flag for flag in Propulsion if flag.name}
# A placeholder in the unassigned "0000..." block, not a real call centre: set the carmaker's number.
DEFAULT_CALL_CENTRE_NUMBER = "+498900000000"
_DIAL_NUMBER = re.compile(r"^\+?[0-9]{6,20}$")
_MAX_LABEL = 60
_NO_PROPULSION = Propulsion(0)  # unknown: no storage flag set


@dataclass(frozen=True, slots=True, kw_only=True)
class EcallTimers:
    """HLAP timers and redial rules, in seconds (FIELD-NOTES "eCall facts")."""

    t2_s: float = 3600.0  # call clear-down fallback: the only clearing the vehicle does on its own
    t5_s: float = 5.0  # wait for the PSAP's SEND MSD after the call connects
    t6_s: float = 5.0  # wait for the AL-ACK after the link-layer ACK
    t7_s: float = 20.0  # MSD maximum transmission time
    t9_s: float = 3600.0  # stay registered for the PSAP's callback after the call
    t10_s: float = 12 * 3600.0  # eCall-only mode: deregister at the latest after this
    dial_timeout_s: float = 60.0  # an attempt not connected by then is abandoned and redialled
    redial_interval_s: float = 30.0  # spacing of attempts before the first connection (Legato: 30 s)
    redial_min_gap_s: float = 2.0  # coverage flapping never dials faster than this
    drop_redial_window_s: float = 120.0  # a call dropped before MSD delivery is re-established within this
    drop_redial_interval_s: float = 5.0  # spacing of attempts inside that window
    max_dial_attempts: int | None = None  # None: no limit (pan-European eCall); ERA-GLONASS: 10

    def __post_init__(self) -> None:
        for name in (
            "t2_s",
            "t5_s",
            "t6_s",
            "t7_s",
            "t9_s",
            "t10_s",
            "dial_timeout_s",
            "redial_interval_s",
            "drop_redial_window_s",
            "drop_redial_interval_s",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ecall.timers.{name}: must be > 0, got {getattr(self, name)}")
        if self.redial_min_gap_s < 0:
            raise ConfigError("ecall.timers.redial_min_gap_s: must be >= 0")
        if self.t9_s > self.t10_s:
            raise ConfigError(f"ecall.timers.t9_s: {self.t9_s} exceeds t10_s {self.t10_s} (T9 <= T10)")
        if self.max_dial_attempts is not None and self.max_dial_attempts < 1:
            raise ConfigError("ecall.timers.max_dial_attempts: must be >= 1, or 0 for no limit")


@dataclass(frozen=True, slots=True, kw_only=True)
class NgConfig:
    """`[ecall.ng]`: where the NG eCall's SIP goes and which local ports it uses."""

    proxy_host: str = "127.0.0.1"
    proxy_port: int = 5060
    local_port: int = 0  # 0: any free port (the INVITE's Contact tells the PSAP where to call back)
    rtp_port: int = 0

    def __post_init__(self) -> None:
        if not self.proxy_host or not self.proxy_host.isprintable() or " " in self.proxy_host:
            raise ConfigError(f"ecall.ng.proxy: bad host {self.proxy_host[:80]!r}; expected host:port")
        if not 0 < self.proxy_port < 65536:
            raise ConfigError(f"ecall.ng.proxy: port {self.proxy_port} is not 1 to 65535")
        for name in ("local_port", "rtp_port"):
            if not 0 <= getattr(self, name) < 65536:
                raise ConfigError(f"ecall.ng.{name}: {getattr(self, name)} is not 0 to 65535")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> NgConfig:
        keys = _Keys(table, "ecall.ng")
        proxy = keys.get("proxy", str, 'host:port such as "127.0.0.1:5060"', "127.0.0.1:5060")
        host, _, port = proxy.rpartition(":")
        if not host or not port.isdigit() or len(port) > 5:
            raise ConfigError(f'ecall.ng.proxy: got {proxy[:80]!r}; expected host:port such as "127.0.0.1:5060"')
        config = cls(
            proxy_host=host.removeprefix("[").removesuffix("]"),  # "[::1]:5060"
            proxy_port=int(port),
            local_port=keys.get("local_port", int, "a port number (0: any free port)", 0),
            rtp_port=keys.get("rtp_port", int, "a port number (0: any free port)", 0),
        )
        keys.reject_unknown()
        return config


@dataclass(frozen=True, slots=True, kw_only=True)
class EcallConfig:
    port: str
    legal_ecall: bool = True
    baudrate: int = 115200
    profile: ModemProfile = field(default_factory=lambda: PROFILES["simcom"])
    msd_version: int = 2
    vehicle_type: VehicleType = VehicleType.M1
    propulsion: Propulsion = _NO_PROPULSION
    command_timeout_s: float = 5.0
    sos_hold_s: float = 0.3
    retrigger_suppress_s: float = 10.0
    position_max_age_s: float = 30.0
    timers: EcallTimers = field(default_factory=EcallTimers)
    triggers: tuple[TriggerRule, ...] = ()  # [[ecall.trigger]]; () means the CAN mapping's own paths
    call_centre_number: str = DEFAULT_CALL_CENTRE_NUMBER  # dialled (ATD) for the intelligent call (6AC)
    call_centre_answer_s: float = 20.0  # legal vehicle: the call centre's answer bound before the 112 fall-back
    vehicle_model: str = ""  # for the call centre; "" unknown
    vehicle_colour: str = ""
    transport: EcallTransport = EcallTransport.AUTO  # CS or NG: tcu.ecall.ng.transport.choose_transport
    ng: NgConfig = field(default_factory=NgConfig)

    def __post_init__(self) -> None:
        if not self.port:
            raise ConfigError("ecall.port: empty; expected the modem's device path or pyserial URL")
        if self.baudrate <= 0:
            raise ConfigError(f"ecall.baudrate: {self.baudrate} must be positive")
        if self.msd_version not in (2, 3):
            raise ConfigError(f"ecall.msd_version: {self.msd_version}; expected 2 or 3")
        if not _DIAL_NUMBER.match(self.call_centre_number):
            raise ConfigError(
                f"ecall.call_centre_number: got {self.call_centre_number!r}; expected the call centre's full "
                'number, 6 to 20 digits with an optional leading "+" (a short code such as 112 is the legal '
                "eCall's business, not the call centre's)"
            )
        for name in ("vehicle_model", "vehicle_colour"):
            label = getattr(self, name)
            if len(label) > _MAX_LABEL or not label.isprintable():
                raise ConfigError(f"ecall.{name}: at most {_MAX_LABEL} printable characters, got {label[:80]!r}")
        for name in ("command_timeout_s", "position_max_age_s", "call_centre_answer_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"ecall.{name}: must be > 0")
        for name in ("sos_hold_s", "retrigger_suppress_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ecall.{name}: must be >= 0")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> EcallConfig:
        """Parse an `[ecall]` table; `ConfigError` names the offending key."""
        keys = _Keys(table, "ecall")
        profile_name = keys.get("profile", str, "one of " + ", ".join(PROFILES), "simcom")
        if profile_name not in PROFILES:
            raise ConfigError(f"ecall.profile: got {profile_name!r}; expected one of {', '.join(PROFILES)}")
        vehicle_type = keys.get("vehicle_type", str, "a vehicle category such as M1", "M1")
        vtype = VehicleType(vehicle_type) if vehicle_type in set(VehicleType) else VehicleType.UNKNOWN
        if vtype is VehicleType.UNKNOWN:
            known = ", ".join(t.value for t in VehicleType if t is not VehicleType.UNKNOWN)
            raise ConfigError(f"ecall.vehicle_type: got {vehicle_type!r}; expected one of {known}")
        propulsion = _NO_PROPULSION
        for name in keys.get("propulsion", list, 'a list such as ["gasoline"]', []):
            if name not in _PROPULSION:
                raise ConfigError(f"ecall.propulsion: got {name!r}; expected any of {', '.join(_PROPULSION)}")
            propulsion |= _PROPULSION[name]
        timers = _Keys(keys.get("timers", dict, "a table [ecall.timers]", {}), "ecall.timers")
        defaults = EcallTimers()
        seconds = [name for name in EcallTimers.__dataclass_fields__ if name != "max_dial_attempts"]
        numbers = {name: timers.number(name, getattr(defaults, name)) for name in seconds}
        attempts = timers.get("max_dial_attempts", int, "an integer (0: no limit)", 0)
        rules = _trigger_rules(keys.get("trigger", list, "an array of tables [[ecall.trigger]]", []))
        transports = ", ".join(EcallTransport)
        transport = keys.get("transport", str, transports, EcallTransport.AUTO.value)
        if transport not in set(EcallTransport):
            raise ConfigError(f"ecall.transport: got {transport!r}; expected one of {transports}")
        sos_hold_s = keys.number("sos_hold_s", 0.3)
        for rule in rules:
            if rule.hold_s is not None:
                if "sos_hold_s" in table:
                    raise ConfigError(f"{rule.where}.hold_s: ecall.sos_hold_s is set too; keep one of them")
                sos_hold_s = rule.hold_s
        config = cls(
            port=keys.get("port", str, "the modem's device path or pyserial URL", None),
            legal_ecall=keys.get("legal_ecall", bool, "true or false", True),
            baudrate=keys.get("baudrate", int, "an integer", 115200),
            profile=PROFILES[profile_name],
            msd_version=keys.get("msd_version", int, "2 or 3", 2),
            vehicle_type=vtype,
            propulsion=propulsion,
            command_timeout_s=keys.number("command_timeout_s", 5.0),
            sos_hold_s=sos_hold_s,
            retrigger_suppress_s=keys.number("retrigger_suppress_s", 10.0),
            position_max_age_s=keys.number("position_max_age_s", 30.0),
            call_centre_number=keys.get(
                "call_centre_number", str, 'a number such as "+4989..."', DEFAULT_CALL_CENTRE_NUMBER
            ),
            call_centre_answer_s=keys.number("call_centre_answer_s", 20.0),
            vehicle_model=keys.get("vehicle_model", str, "a text such as the model name", ""),
            vehicle_colour=keys.get("vehicle_colour", str, "a text such as the paint name", ""),
            timers=EcallTimers(**numbers, max_dial_attempts=attempts or None),
            triggers=rules,
            transport=EcallTransport(transport),
            ng=NgConfig.from_table(keys.get("ng", dict, "a table [ecall.ng]", {})),
        )
        timers.reject_unknown()
        keys.reject_unknown()
        return config


def _trigger_rules(items: list[Any]) -> tuple[TriggerRule, ...]:
    rules: list[TriggerRule] = []
    for index, item in enumerate(items):
        where = f"ecall.trigger[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: expected a table [[ecall.trigger]]")
        keys = _Keys(item, where)
        kinds = ", ".join(k.value for k in TriggerKind)
        kind = keys.get("kind", str, kinds, None)
        if kind not in set(TriggerKind):
            raise ConfigError(f"{where}.kind: got {kind!r}; expected one of {kinds}")
        signal = keys.get("signal", str, '"Message.Signal" or a VSS path', None)
        if "." not in signal:
            raise ConfigError(f'{where}.signal: got {signal!r}; expected "Message.Signal" or a VSS path')
        values = keys.get("values", list, "a list of VAL_ names or raw values", [])
        if any(not isinstance(v, str | int | float) for v in values):
            raise ConfigError(f"{where}.values: expected VAL_ names or raw values, got {values!r}")
        invalid = keys.get("invalid", list, "a list of VAL_ names or raw values", [])
        if any(isinstance(v, bool) or not isinstance(v, str | int) for v in invalid):
            raise ConfigError(f"{where}.invalid: expected VAL_ names or raw integers, got {invalid!r}")
        at_least = keys.get("at_least", (int, float), "a number", _ABSENT)
        at_most = keys.get("at_most", (int, float), "a number", _ABSENT)
        hold_s = keys.get("hold_s", (int, float), "a number of seconds", _ABSENT)
        if bool(values) == (at_least is not _ABSENT or at_most is not _ABSENT):
            raise ConfigError(f"{where}: give either values = [...] or at_least / at_most, not both or neither")
        if hold_s is not _ABSENT and (kind != TriggerKind.SOS or hold_s < 0):
            raise ConfigError(
                f"{where}.hold_s: only a sos rule has a hold time (>= 0); a crash or airbag trigger fires on the "
                "first good reading, debounced by its rising edge and ecall.retrigger_suppress_s"
            )
        if any(rule.kind == kind for rule in rules):
            raise ConfigError(f"{where}: a second {kind} rule; one signal per kind (put all its values in one rule)")
        keys.reject_unknown()
        rules.append(
            TriggerRule(
                kind=TriggerKind(kind),
                signal=signal,
                values=tuple(values),
                at_least=None if at_least is _ABSENT else float(at_least),
                at_most=None if at_most is _ABSENT else float(at_most),
                invalid=tuple(invalid),
                hold_s=None if hold_s is _ABSENT else float(hold_s),
                where=where,
            )
        )
    return tuple(rules)


_ABSENT: Any = object()


class _Keys:
    """Typed reads of one TOML table, naming `<table>.<key>` in every error. (Not `tcu.config.TomlSection`:
    `tcu.config` will import this module to parse `[ecall]`, and the reverse import would be circular.)"""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self._data, self._where, self._used = data, where, set[str]()

    def get(self, key: str, kind: type | tuple[type, ...], expected: str, default: Any) -> Any:
        self._used.add(key)
        if key not in self._data:
            if default is None:
                raise ConfigError(f"{self._where}.{key}: missing; expected {expected}")
            return default
        value = self._data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{self._where}.{key}: got {value!r}; expected {expected}")
        return value

    def number(self, key: str, default: float) -> float:
        return float(self.get(key, (int, float), "a number", default))

    def reject_unknown(self) -> None:
        if unknown := set(self._data) - self._used:
            raise ConfigError(f"{self._where}: unknown key(s) {', '.join(sorted(unknown))}")


def check_ecall_vin(vin: str) -> str:
    """The VIN as the MSD will carry it; `ConfigError` (key `vin`) when an MSD cannot carry it."""
    try:
        return check_vin(vin)
    except MsdError as exc:
        raise ConfigError(f"vin: {exc}; the eCall MSD needs a valid VIN, so eCall cannot start") from exc


def load_ecall_config(table: Mapping[str, Any] | None, *, vin: str) -> EcallConfig | None:
    """The eCall config, or None for a vehicle declared without legal eCall and without a modem.

    Raises `ConfigError` with an actionable message whenever a legal-eCall vehicle (the default)
    lacks a usable `[ecall]` section or VIN: the agent must refuse to start rather than run without eCall.
    """
    if table is None:
        table = {}
    if not isinstance(table, Mapping):
        raise ConfigError("ecall: expected a table [ecall]")
    legal = table.get("legal_ecall", True)
    if legal is False and "port" not in table:
        return None
    try:
        config = EcallConfig.from_table(table)
        check_ecall_vin(vin)
    except ConfigError as exc:
        if legal is False:
            raise
        raise ConfigError(
            f"{exc}. This vehicle has the legal 112 eCall (ecall.legal_ecall defaults to true, "
            "Regulation (EU) 2015/758): the agent will not start without a working eCall configuration; "
            "fix the key above, or set ecall.legal_ecall = false for a vehicle without legal eCall"
        ) from exc
    return config
