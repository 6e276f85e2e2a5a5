"""The VIN the vehicle reports (OBD mode 09, written as `Vehicle.VehicleIdentification.VIN`) against the
VIN this agent is configured and provisioned for.

A difference means the adapter sits in another car than the one the backend files its data under (a
bench adapter moved, a TCU swapped between vehicles): every record would land on the wrong vehicle.
It is reported once as a `vin_mismatch` event (both VINs) and logged once — not on every reconnect
or read, since the adapter reads the VIN each time it connects. Reading the configured VIN again ends
the mismatch; a later one is reported anew.

The event carries the VIN, so it is sent only while the data policy allows that signal's category.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tcu.clock import Clock
from tcu.vehicle.state import Quality, Signal
from telematics_wire.records import Record, RecordKind

_LOGGER = logging.getLogger(__name__)

VIN_PATH = "Vehicle.VehicleIdentification.VIN"
EVENT = "vin_mismatch"


class VinCheck:
    """A `VehicleState` subscriber: cheap for every other signal, one comparison for the VIN."""

    def __init__(
        self,
        *,
        configured: str,
        clock: Clock,
        report: Callable[[Record], None],
        allowed: Callable[[str], bool],
        path: str = VIN_PATH,
    ) -> None:
        self._configured = configured
        self._clock = clock
        self._report = report
        self._allowed = allowed
        self._path = path
        self._reported: str | None = None  # the differing VIN already reported, until the right one is read

    def on_signal(self, signal: Signal) -> None:
        if signal.path != self._path or signal.quality is not Quality.GOOD or not isinstance(signal.value, str):
            return
        read = signal.value
        if read == self._configured:
            if self._reported is not None:
                _LOGGER.info("VIN read over %s matches the configured VIN %s again", signal.source, read)
            self._reported = None
            return
        if read == self._reported:
            return  # reported already; a reconnect reads it again
        self._reported = read
        _LOGGER.warning(
            "VIN read over %s is %s, but this agent is configured for %s: its data is filed under %s. "
            "Check that the adapter is in the right vehicle or correct `vin` in the agent config",
            signal.source,
            read,
            self._configured,
            self._configured,
        )
        if not self._allowed(self._path):
            _LOGGER.info("%s event not sent: the data policy does not allow %s", EVENT, self._path)
            return
        body = {"type": EVENT, "configured_vin": self._configured, "read_vin": read, "source": signal.source}
        self._report(Record(kind=RecordKind.EVENT, created=self._clock.now(), body=body))
