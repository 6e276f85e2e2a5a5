"""The agent's exception tree. Every rejection carries a reason a person can act on.

TcuError
├── CborError                   a wire-protocol message that is not one strict CBOR item
├── ConfigError                 config file missing, unreadable or invalid (names the key)
├── KeyFileError                key file missing, wrong size or too permissive
├── UplinkError
│   ├── EnvelopeError           an envelope or ack that cannot be opened (forged, malformed, oversize)
│   ├── RecordTooLargeError     a record too large to ever be sent
│   └── StorageError            the durable queue cannot write (disk full, I/O error)
│       └── StorageFullError    ... because the disk or the queue's size limit is full
├── SourceError                 a vehicle signal source failed
│   ├── ProtocolError           a device said something the protocol does not allow
│   ├── DeviceGoneError         the serial device vanished (unplugged)
│   ├── DeviceTimeoutError      the device did not answer within its deadline
│   └── AdapterStatusError      a diagnostic adapter answered with a status word instead of data
├── EcallError
│   ├── MsdError                an MSD that cannot be encoded or decoded
│   ├── ModemCommandError       the eCall modem refused a command (ERROR, +CME ERROR)
│   └── EcallDeactivationRefusedError  a SIM/eCall deactivation the law does not allow
└── ServiceError
    ├── RejectedMessageError    a signed backend message refused (signature, VIN, version, expiry)
    │   └── RejectedOrderError  a measure order refused, naming its id and attempt (services/measure_order.py)
    └── ProfileRefusedError     a driver profile the vehicle cannot hold (no paired account, a fourth one)
"""

from __future__ import annotations


class TcuError(Exception):
    """Root of every error the agent raises on purpose."""


class CborError(TcuError):
    """Bytes that are not exactly one well-formed CBOR item with unique, integer or text map keys."""


class ConfigError(TcuError):
    """The configuration cannot be used; the message names the key and what was expected."""


class KeyFileError(TcuError):
    """A key file is missing, malformed or readable by others."""


class UplinkError(TcuError):
    """Something on the vehicle → backend path failed."""


class EnvelopeError(UplinkError):
    """An envelope or acknowledgement that must be refused."""


class RecordTooLargeError(UplinkError):
    """A record whose sealed envelope exceeds the maximum payload size."""


class StorageError(UplinkError):
    """The durable queue could not persist; nothing it already held is lost."""


class StorageFullError(StorageError):
    """The disk (or the queue's `max_bytes`) is full: room can be made by checkpointing or dropping."""


class SourceError(TcuError):
    """A vehicle signal source failed."""


class ProtocolError(SourceError):
    """A device sent something its protocol does not allow."""


class DeviceGoneError(SourceError):
    """The serial device disappeared (unplugged, port closed)."""


class DeviceTimeoutError(SourceError):
    """The device did not answer within its deadline (stalled, lost its prompt, wrong baud rate)."""


class AdapterStatusError(SourceError):
    """A diagnostic adapter answered with a status word (ELM327 `NO DATA`, `?`, `CAN ERROR`, ...).

    `status` is the normalised word, `command` the request it answered; the message says what to do.
    """

    def __init__(self, message: str, *, status: str, command: str) -> None:
        super().__init__(message)
        self.status = status
        self.command = command


class EcallError(TcuError):
    """The eCall subsystem failed; never silently."""


class MsdError(EcallError):
    """An MSD that cannot be encoded or decoded."""


class ModemCommandError(EcallError):
    """The modem answered a command with ERROR or `+CME ERROR: <code>`; `code` is None for plain ERROR."""

    def __init__(self, message: str, *, command: str, code: int | None) -> None:
        super().__init__(message)
        self.command = command
        self.code = code


class EcallDeactivationRefusedError(EcallError):
    """A request that would leave a legal-eCall vehicle without the 112 eCall; the message says why."""


class ServiceError(TcuError):
    """Service lifecycle (provisioning, measures, SIM) failure."""


class ProfileRefusedError(ServiceError):
    """A driver profile refused: it needs a paired ConnectedDrive account, and a car holds at most three."""


class RejectedMessageError(ServiceError):
    """A signed backend → vehicle message was refused.

    `code` is machine-readable for the backend (bad_signature, other_vehicle, old_version, expired,
    malformed, oversize, forbidden_change); the message says it for a person.
    """

    def __init__(self, message: str, *, code: str = "malformed", version: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.version = version  # of the refused file, when its signature verified and it could be read
