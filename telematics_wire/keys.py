"""Key files: X25519 (sealing records) and Ed25519 (signing backend messages) as hex text.

A private key file must be mode 0600: a key others can read is refused with the chmod to run,
because the vehicle's identity and the confidentiality of its data rest on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from telematics_wire.errors import KeyFileError
from telematics_wire.private_files import refuse_exposed

_KEY_BYTES = 32


def _write(path: Path, data: bytes, *, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = 0o600 if private else 0o644
    # O_EXCL: never overwrite an identity by accident.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise KeyFileError(f"{path} already exists; remove it first if you really mean to replace the key") from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(data.hex() + "\n")
    path.chmod(mode)  # the umask may have narrowed a public key's mode


def _read(path: Path, *, private: bool) -> bytes:
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist (create it with 'keygen')") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc}") from exc
    if private:
        refuse_exposed(path, info, "private key", KeyFileError)
    try:
        raw = bytes.fromhex(text)
    except ValueError as exc:
        raise KeyFileError(f"key file {path} is not hex text") from exc
    if len(raw) != _KEY_BYTES:
        raise KeyFileError(f"key file {path} holds {len(raw)} bytes; expected {_KEY_BYTES}")
    return raw


def write_box_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Create `<name>.x25519.key` (0600) and `<name>.x25519.pub` in directory."""
    key = PrivateKey.generate()
    private, public = directory / f"{name}.x25519.key", directory / f"{name}.x25519.pub"
    _write(private, bytes(key), private=True)
    _write(public, bytes(key.public_key), private=False)
    return private, public


def write_signing_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Create `<name>.ed25519.key` (0600) and `<name>.ed25519.pub` in directory."""
    key = SigningKey.generate()
    private, public = directory / f"{name}.ed25519.key", directory / f"{name}.ed25519.pub"
    _write(private, bytes(key), private=True)
    _write(public, bytes(key.verify_key), private=False)
    return private, public


def load_private_key(path: Path) -> PrivateKey:
    return PrivateKey(_read(path, private=True))


def load_public_key(path: Path) -> PublicKey:
    return PublicKey(_read(path, private=False))


def load_signing_key(path: Path) -> SigningKey:
    return SigningKey(_read(path, private=True))


def load_verify_key(path: Path) -> VerifyKey:
    return VerifyKey(_read(path, private=False))


@dataclass(frozen=True, slots=True)
class VehicleKeys:
    """What the agent holds: its own X25519 key and the backend's pinned public keys."""

    vehicle: PrivateKey
    backend: PublicKey
    backend_verify: VerifyKey | None = None
