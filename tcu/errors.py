"""The agent's exception tree. Every rejection carries a reason a person can act on.

What the wire protocol refuses (CBOR, envelopes, MSDs, key files, signed backend messages) is a
`telematics_wire.errors.WireError`, shared with the backend; the agent's command line catches both roots.

TcuError
├── ConfigError                 config file missing, unreadable or invalid (names the key)
├── UplinkError
│   ├── RecordTooLargeError     a record too large to ever be sent
│   └── StorageError            the durable queue cannot write (disk full, I/O error)
│       └── StorageFullError    ... because the disk or the queue's size limit is full
├── SourceError                 a vehicle signal source failed
│   ├── ProtocolError           a device said something the protocol does not allow
│   ├── DeviceGoneError         the serial device vanished (unplugged)
│   ├── DeviceTimeoutError      the device did not answer within its deadline
│   └── AdapterStatusError      a diagnostic adapter answered with a status word instead of data
├── EcallError
│   ├── ModemCommandError       the eCall modem refused a command (ERROR, +CME ERROR)
│   └── EcallDeactivationRefusedError  a SIM/eCall deactivation the law does not allow
└── ServiceError
    └── ProfileRefusedError     a driver profile the vehicle cannot hold (no paired account, a fourth one)
"""

from __future__ import annotations


class TcuError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(TcuError):
    """The configuration cannot be used; the message names the key and what was expected."""


class UplinkError(TcuError):
    """Something on the vehicle → backend path failed."""


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
