"""The wire protocol's exception tree: what both the car and the backend refuse about a message or a key.

WireError
├── CborError              bytes that are not one strict CBOR item
├── EnvelopeError          an envelope or ack that cannot be opened (forged, malformed, oversize)
├── MsdError               an MSD that cannot be encoded or decoded
├── KeyFileError           key file missing, wrong size or too permissive
├── RejectedMessageError   a signed backend message refused (signature, VIN, version, expiry)
│   └── RejectedOrderError a measure order refused, naming its id and attempt (measure_order.py)
├── SipError               a SIP message, SDP or NG-eCall body (multipart, MSD part, PIDF-LO, control XML) refused
├── SpecError              a specification table (service catalogue, option codes, ECU keys) that is invalid
└── VinError               text that is not a vehicle identification number

The agent (`tcu.errors.TcuError`) and the backend (`backend_stub.errors.BackendError`) have roots of their
own; their command lines catch `WireError` beside them.
"""

from __future__ import annotations


class WireError(Exception):
    """Root of every error the wire protocol raises on purpose."""


class CborError(WireError):
    """Bytes that are not exactly one well-formed CBOR item with unique, integer or text map keys."""


class EnvelopeError(WireError):
    """An envelope or acknowledgement that must be refused."""


class MsdError(WireError):
    """An MSD that cannot be encoded or decoded."""


class KeyFileError(WireError):
    """A key file is missing, malformed or readable by others."""


class RejectedMessageError(WireError):
    """A signed backend → vehicle message was refused.

    `code` is machine-readable for the backend (bad_signature, other_vehicle, old_version, expired,
    malformed, oversize, forbidden_change); the message says it for a person.
    """

    def __init__(self, message: str, *, code: str = "malformed", version: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.version = version  # of the refused file, when its signature verified and it could be read


class SipError(WireError):
    """A SIP message, SDP offer or NG-eCall body that must be refused (telematics_wire.sip); the message says why."""


class SpecError(WireError):
    """A specification table the protocol is built on is invalid; the message names the table and the fault."""


class VinError(WireError, ValueError):
    """Text that is not a VIN (17 characters from 0-9 and A-Z without I, O, Q)."""
