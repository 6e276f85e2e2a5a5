from __future__ import annotations

import stat
from pathlib import Path

import pytest
from nacl.public import Box

from telematics_wire.errors import KeyFileError
from telematics_wire.keys import (
    load_private_key,
    load_public_key,
    load_signing_key,
    load_verify_key,
    write_box_keypair,
    write_signing_keypair,
)


def test_generated_box_keys_load_and_private_file_is_0600(tmp_path: Path) -> None:
    private, public = write_box_keypair(tmp_path / "keys", "vehicle")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    key = load_private_key(private)
    assert bytes(key.public_key) == bytes(load_public_key(public))
    Box(key, load_public_key(public))  # usable


def test_generated_signing_keys_verify(tmp_path: Path) -> None:
    private, public = write_signing_keypair(tmp_path, "backend")
    signed = load_signing_key(private).sign(b"provisioning")
    assert load_verify_key(public).verify(signed) == b"provisioning"


def test_keygen_never_overwrites_an_identity(tmp_path: Path) -> None:
    write_box_keypair(tmp_path, "vehicle")
    with pytest.raises(KeyFileError, match="already exists"):
        write_box_keypair(tmp_path, "vehicle")


def test_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    private, _ = write_box_keypair(tmp_path, "vehicle")
    private.chmod(0o644)
    with pytest.raises(KeyFileError, match=f"mode 0644.*chmod 600 {private}"):
        load_private_key(private)


@pytest.mark.parametrize(("content", "message"), [("zz", "not hex"), ("abcd", "holds 2 bytes; expected 32")])
def test_malformed_key_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.pub"
    path.write_text(content)
    with pytest.raises(KeyFileError, match=message):
        load_public_key(path)


def test_missing_key_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist \\(create it with 'keygen'\\)"):
        load_private_key(tmp_path / "none.key")
