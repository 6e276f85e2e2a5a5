"""The serial sources an agent config names: `[sources.obd]` (ELM327), `[sources.can]` (SLCAN + DBC),
`[sources.gnss]` (NMEA). Each becomes one long-lived task; a failing device never stops the others.

    [sources.obd]
    port = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"
    baudrate = 38400

    [sources.can]
    port = "/dev/serial/by-id/usb-CANable_..."      # or socket://host:port, rfc2217://...
    bitrate = 500000
    # listen_only = true   (Lawicel `L`)   passive = true   (send nothing: a stream deaf to Lawicel)

    [sources.can]                                    # or any python-can interface instead of `port`:
    interface = "socketcan"                          # pcan, kvaser, vector, gs_usb, slcan, virtual, ...
    channel = "can0"
    # bitrate = 500000     options = { ... }   (more can.Bus() keyword arguments)

    [sources.can]                                    # either reader, your own vehicle:
    dbc = "mycar.dbc"                                # or ["powertrain.dbc", "body.kcd"]; DBC KCD ARXML SYM
    mapping = "mycar-can.toml"                       # format: tcu/vehicle/mapping/can.toml

    [sources.obd]
    mapping = "mycar-obd.toml"                       # format: tcu/vehicle/mapping/obd.toml

    [sources.gnss]
    port = "/dev/ttyACM0"
    baudrate = 9600

Relative `dbc` and `mapping` paths are resolved against the config file's folder. Without them, the
packaged fictional car. A legal-eCall agent with a CAN source refuses to start unless the CAN mapping
(or its `[[ecall.trigger]]` rules) feeds a crash or airbag trigger from the loaded database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tcu.clock import Clock
from tcu.ecall.triggers import AUTOMATIC_PATHS, SOS_BUTTON, TriggerRule
from tcu.errors import ConfigError
from tcu.vehicle.state import VehicleState

# Each device's modules are imported when a config names it: python-can and cantools alone cost ~15 MB
# and 0.3 s, the ELM327 client and its PID tables ~2 MB, pyserial ~0.6 MB, in an agent that may have no
# adapter at all (the simulated drive).
if TYPE_CHECKING:
    from tcu.sources.can_bus import CanBusReader
    from tcu.sources.elm327_mapping import ObdMapping
    from tcu.sources.nmea_reader import NmeaReader
    from tcu.sources.nmea_track import GnssTrack
    from tcu.sources.slcan_reader import SlcanReader
    from tcu.sources.slcan_signals import CanSignalDecoder

_LOGGER = logging.getLogger(__name__)
KNOWN = ("obd", "can", "gnss", "modem")  # the modem belongs to the eCall, configured there


@dataclass(slots=True)
class ConfiguredSources:
    runners: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)
    gnss: NmeaReader | None = None
    can_decoder: CanSignalDecoder | None = None  # what `tcu check-config` shows
    obd_mapping: ObdMapping | None = None

    @property
    def track(self) -> GnssTrack | None:
        """The last three positions and the direction of travel, for the eCall MSD."""
        return None if self.gnss is None else self.gnss.track


def _obd_table(table: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {"port", "baudrate", "max_timeouts", "stale_after_failures", "reconnect_base_s", "reconnect_cap_s"}
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"sources.obd: unknown key(s) {', '.join(sorted(unknown))}")
    return dict(table)


def can_reader(
    table: Mapping[str, Any], *, state: VehicleState, clock: Clock, decoder: CanSignalDecoder | None = None
) -> SlcanReader | CanBusReader:
    """`interface` picks a python-can bus; without it, our own SLCAN reader on a serial `port`."""
    if "interface" in table:
        from tcu.sources.can_bus import CanBusConfig, CanBusReader  # noqa: PLC0415 - see above

        return CanBusReader(CanBusConfig.from_table(table), state=state, clock=clock, decoder=decoder)
    bus_only = {"channel", "options"} & set(table)
    if bus_only:
        raise ConfigError(
            f"sources.can: {', '.join(sorted(bus_only))} go(es) with a python-can interface; add "
            'interface = "socketcan" (or pcan, kvaser, vector, slcan, ...), or name a serial port with port = "..."'
        )
    from tcu.sources.slcan_reader import SlcanConfig, SlcanReader  # noqa: PLC0415 - see above

    return SlcanReader(SlcanConfig.from_table(table), state=state, clock=clock, decoder=decoder)


def _file_list(value: object, key: str, base: Path) -> list[Path]:
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(name, str) and name for name in names):
        raise ConfigError(f"sources.{key}: got {value!r}; expected a file path or a list of them")
    paths = [Path(str(name)).expanduser() for name in names]
    return [path if path.is_absolute() else base / path for path in paths]


def can_decoder(
    table: Mapping[str, Any], *, base: Path, triggers: Sequence[TriggerRule] = (), legal_ecall: bool = False
) -> CanSignalDecoder:
    """The decoder `[sources.can]` asks for (`dbc`, `mapping`), with the eCall trigger rules compiled in.

    A legal-eCall vehicle must get a crash or airbag trigger out of it: a DBC without one would make
    an agent that looks fine and never calls, so that is refused like a missing modem port.
    """
    dbc = _file_list(table["dbc"], "can.dbc", base) if "dbc" in table else []
    if isinstance(table.get("mapping"), list):
        raise ConfigError("sources.can.mapping: expected one file path")
    mapping = _file_list(table["mapping"], "can.mapping", base)[0] if "mapping" in table else None
    from tcu.sources.slcan_signals import CanSignalDecoder  # noqa: PLC0415 - see above

    decoder = CanSignalDecoder.from_files(mapping, dbc_paths=dbc, triggers=triggers)
    published = decoder.paths
    if legal_ecall and not published & AUTOMATIC_PATHS:
        raise ConfigError(
            f"sources.can: the CAN mapping feeds no crash or airbag trigger ({', '.join(sorted(AUTOMATIC_PATHS))}) "
            "from the loaded CAN database, so this legal-eCall vehicle could never make an automatic eCall; "
            'map the crash signal, or add [[ecall.trigger]] kind = "crash" signal = "Message.Signal" values = [...]'
        )
    if legal_ecall and SOS_BUTTON not in published:
        _LOGGER.warning("sources.can: no SOS button (%s) in the CAN mapping; no manual eCall from the bus", SOS_BUTTON)
    return decoder


def build_sources(
    sources: Mapping[str, Mapping[str, Any]],
    *,
    state: VehicleState,
    clock: Clock,
    base: Path | None = None,
    triggers: Sequence[TriggerRule] = (),
    legal_ecall: bool = False,
) -> ConfiguredSources:
    """Every configured reader, built (and so validated, naming the section) before anything runs.

    `base` is the config file's folder (relative `dbc`/`mapping` paths); `triggers` the eCall rules.
    """
    unknown = set(sources) - set(KNOWN)
    if unknown:
        raise ConfigError(f"sources: unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(KNOWN)}")
    for name, table in sources.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"sources.{name}: expected a table [sources.{name}]")
    built = ConfiguredSources()
    base = base or Path.cwd()
    if "obd" in sources:
        from tcu.sources.elm327_client import Elm327Client, Elm327ClientConfig  # noqa: PLC0415 - see above
        from tcu.sources.elm327_mapping import load_obd_mapping  # noqa: PLC0415 - see above
        from tcu.sources.serial_port import config_from_table  # noqa: PLC0415 - see above

        obd_table = dict(sources["obd"])
        mapping_path = _file_list(obd_table.pop("mapping"), "obd.mapping", base)[0] if "mapping" in obd_table else None
        obd = config_from_table(Elm327ClientConfig, _obd_table(obd_table), section="sources.obd")
        built.obd_mapping = load_obd_mapping(mapping_path)
        built.runners["obd"] = Elm327Client(obd, state=state, clock=clock, mapping=built.obd_mapping).run
    if "can" in sources:
        can_table = {k: v for k, v in sources["can"].items() if k not in ("dbc", "mapping")}
        built.can_decoder = can_decoder(sources["can"], base=base, triggers=triggers, legal_ecall=legal_ecall)
        built.runners["can"] = can_reader(can_table, state=state, clock=clock, decoder=built.can_decoder).run
    elif triggers:
        raise ConfigError(f"{triggers[0].where}: trigger rules name CAN signals, but there is no [sources.can]")
    if "gnss" in sources:
        from tcu.sources.nmea_reader import NmeaConfig, NmeaReader  # noqa: PLC0415 - see above

        built.gnss = NmeaReader(NmeaConfig.from_table(sources["gnss"]), state=state, clock=clock)
        built.runners["gnss"] = built.gnss.run
    return built
