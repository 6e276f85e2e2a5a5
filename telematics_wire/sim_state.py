"""The SIM's service state, as the car reports it and the backend's desired state names it."""

from __future__ import annotations

from enum import StrEnum


class SimState(StrEnum):
    ACTIVE = "active"
    # "eCall-only" in the docs, the README and the terms' sense ("die SIM-Karte ... sowie der gesetzliche
    # Notruf bleiben aktiv", AGB 6.1): only the legal 112 eCall. The wire value stays as it is.
    TELEMATICS_DEACTIVATED = "telematics_deactivated"
    ECALL_ONLY = "telematics_deactivated"  # an alias of TELEMATICS_DEACTIVATED: the same member
    FULLY_DEACTIVATED = "fully_deactivated"
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> SimState:
        return cls.UNKNOWN
