"""The backend stub's exception tree.

BackendError
├── BackendConfigError   config missing or invalid (names the key)
├── UnknownVehicleError  a VIN that was never enrolled
├── ProvisioningError    a change of desired state the backend refuses to issue (desired_state.py, provisioning.py)
├── MeasureRefusedError  a measure the vehicle would refuse, never signed (measures.py, measure_orders.py)
├── InvoiceError         an invoice or payment refused: service not booked or free, bad amount or date (invoices.py)
├── AccountError         an account operation refused: pairing code wrong or expired, link exists (accounts.py)
├── DatabaseError        the database failed (disk full, I/O error, refused commit); the transaction is undone
└── UnstorableError      a value the store could not hold and read back (names what and why)
"""

from __future__ import annotations


class BackendError(Exception):
    """Root of every error the backend stub raises on purpose."""


class BackendConfigError(BackendError):
    """The backend configuration cannot be used."""


class UnknownVehicleError(BackendError):
    """The VIN has not been enrolled (`backend-stub enroll`)."""


class ProvisioningError(BackendError):
    """A change of desired state refused; the message says why and what to do instead."""


class MeasureRefusedError(BackendError):
    """A measure the backend will not sign because the vehicle would refuse it; the message says why."""


class InvoiceError(BackendError):
    """An invoice or a payment refused; the message says why."""


class AccountError(BackendError):
    """An account, pairing or consent operation refused; the message says why and what to do."""


class DatabaseError(BackendError):
    """The backend's database failed; nothing of the transaction it happened in was stored."""


class UnstorableError(BackendError):
    """A record or value the store refuses because it could not hold it or read it back."""
