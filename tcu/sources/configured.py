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

    [sources.gnss]
    port = "/dev/ttyACM0"
    baudrate = 9600
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from tcu.clock import Clock
from tcu.errors import ConfigError
from tcu.sources.can_bus import CanBusReader, CanBusSettings
from tcu.sources.elm327_client import Elm327Client, Elm327ClientConfig
from tcu.sources.nmea_reader import NmeaReader, NmeaSettings
from tcu.sources.nmea_track import GnssTrack
from tcu.sources.serial_port import settings_from_table
from tcu.sources.slcan_reader import SlcanReader, SlcanSettings
from tcu.sources.slcan_signals import CanSignalDecoder
from tcu.vehicle.state import VehicleState

KNOWN = ("obd", "can", "gnss", "modem")  # the modem belongs to the eCall, configured there


@dataclass(slots=True)
class ConfiguredSources:
    runners: dict[str, Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=dict)
    gnss: NmeaReader | None = None

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
        return CanBusReader(CanBusSettings.from_table(table), state=state, clock=clock, decoder=decoder)
    bus_only = {"channel", "options"} & set(table)
    if bus_only:
        raise ConfigError(
            f"sources.can: {', '.join(sorted(bus_only))} go(es) with a python-can interface; add "
            'interface = "socketcan" (or pcan, kvaser, vector, slcan, ...), or name a serial port with port = "..."'
        )
    return SlcanReader(SlcanSettings.from_table(table), state=state, clock=clock, decoder=decoder)


def build_sources(sources: Mapping[str, Mapping[str, Any]], *, state: VehicleState, clock: Clock) -> ConfiguredSources:
    """Every configured reader, built (and so validated, naming the section) before anything runs."""
    unknown = set(sources) - set(KNOWN)
    if unknown:
        raise ConfigError(f"sources: unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(KNOWN)}")
    for name, table in sources.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"sources.{name}: expected a table [sources.{name}]")
    built = ConfiguredSources()
    if "obd" in sources:
        obd = settings_from_table(Elm327ClientConfig, _obd_table(sources["obd"]), section="sources.obd")
        built.runners["obd"] = Elm327Client(obd, state=state, clock=clock).run
    if "can" in sources:
        built.runners["can"] = can_reader(sources["can"], state=state, clock=clock).run
    if "gnss" in sources:
        built.gnss = NmeaReader(NmeaSettings.from_table(sources["gnss"]), state=state, clock=clock)
        built.runners["gnss"] = built.gnss.run
    return built
