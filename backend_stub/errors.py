"""The backend stub's exception tree.

BackendError
├── BackendConfigError   config missing or invalid (names the key)
├── UnknownVehicleError  a VIN that was never enrolled
└── ProvisioningError    a change the backend refuses to issue (backend_stub/provisioning.py)
"""

from __future__ import annotations


class BackendError(Exception):
    """Root of every error the backend stub raises on purpose."""


class BackendConfigError(BackendError):
    """The backend configuration cannot be used."""


class UnknownVehicleError(BackendError):
    """The VIN has not been enrolled (`backend-stub enroll`)."""
