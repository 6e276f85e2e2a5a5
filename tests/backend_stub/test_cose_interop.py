"""Our COSE_Sign1 provisioning files against an independent implementation: pycose 1.1.0.

pycose 1.1.0 cannot decode with cbor2 >= 6 (pycose issue #141), which this project uses, so pycose runs
in a virtual environment of its own, pinned to cbor2 < 6, built under pytest's cache and reused across
runs (keyed by the pins and this Python), and talks to the tests through files and a small script. A
machine that cannot build it (offline) skips with the reason, unless the CI variable is set: CI must
run this test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from backend_stub.provisioning import ProvisioningIssuer
from backend_stub.provisioning_history import IssuedFile
from backend_stub.provisioning_store import ProvisioningStore
from tcu.clock import ManualClock
from telematics_wire.catalogue import Catalogue
from telematics_wire.provisioning import encode_payload, sign_file, verify_file
from tests.conftest import VIN

pytestmark = pytest.mark.timeout(900)  # the first run builds the environment

PINS = ("pycose==1.1.0", "cbor2<6")

SCRIPT = r"""
import json, pathlib, sys
from pycose.algorithms import EdDSA
from pycose.headers import KID, Algorithm
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import CoseMessage, Sign1Message

mode, work = sys.argv[1], pathlib.Path(sys.argv[2])
if mode == "verify":
    message = CoseMessage.decode((work / "message.cose").read_bytes())
    message.key = OKPKey(crv=Ed25519, x=bytes.fromhex((work / "public.hex").read_text()))
    if not message.verify_signature():
        sys.exit("pycose: bad signature")
    (work / "payload.cbor").write_bytes(message.payload)
    print(json.dumps({"type": type(message).__name__, "alg": message.get_attr(Algorithm).identifier,
                      "kid": message.get_attr(KID).hex()}))
else:
    message = Sign1Message(phdr={Algorithm: EdDSA}, uhdr={KID: b"backend"},
                           payload=(work / "payload.cbor").read_bytes())
    message.key = OKPKey(crv=Ed25519, d=bytes.fromhex((work / "seed.hex").read_text()))
    (work / "message.cose").write_bytes(message.encode())
"""


def _build(venv: Path) -> None:
    shutil.rmtree(venv, ignore_errors=True)  # a half-built environment from an interrupted run
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def pycose_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = hashlib.sha256(f"{PINS} {sys.version}".encode()).hexdigest()[:12]
    name = f"pycose-venv-{key}"
    cache = request.config.cache
    venv = cache.mkdir(name) if cache is not None else tmp_path_factory.mktemp(name)
    ready = venv / "pins.txt"
    if not ready.exists():
        try:
            _build(venv)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or exc
            reason = f"cannot build a virtual environment with {' '.join(PINS)}: {str(detail).strip()[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(f"{reason} (CI must run the pycose interoperability test)")
            pytest.skip(reason)
        ready.write_text("\n".join(PINS) + "\n")
    return venv / "bin" / "python"


def pycose(python: Path, work: Path, mode: str) -> subprocess.CompletedProcess[str]:
    script = work / "pycose_check.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [str(python), str(script), mode, str(work)], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey(bytes(range(32)))


@pytest.fixture
def issued(tmp_path: Path, signing_key: SigningKey, clock: ManualClock) -> IssuedFile:
    """A real backend file with every optional field: first registration, 2+1 notice, extension, 6AF,
    payment default."""
    store = ProvisioningStore(tmp_path / "backend.sqlite3")
    try:
        store.set_legal_ecall(VIN, True)
        store.record_build(VIN, today=clock.now().date())  # first registration: 5y and 2+1y run from it
        issuer = ProvisioningIssuer(store, signing_key=signing_key, clock=clock, enrolled=lambda _vin: True)
        issuer.book(VIN, "6AM", "2+1y")
        issuer.extend(VIN, "6AM", 6)
        issuer.cancel(VIN, "6AM")
        return issuer.suspend(VIN)
    finally:
        store.close()


def _work(tmp_path: Path, files: dict[str, bytes]) -> Path:
    work = tmp_path / "pycose"
    work.mkdir()
    for name, content in files.items():
        (work / name).write_bytes(content)
    return work


def test_pycose_verifies_a_file_the_backend_issued(pycose_python, issued, signing_key, tmp_path) -> None:
    work = _work(tmp_path, {"message.cose": issued.signed, "public.hex": bytes(signing_key.verify_key).hex().encode()})
    run = pycose(pycose_python, work, "verify")
    assert run.returncode == 0, run.stderr
    seen: dict[str, Any] = json.loads(run.stdout)
    assert seen == {"type": "Sign1Message", "alg": -8, "kid": b"backend".hex()}
    assert (work / "payload.cbor").read_bytes() == encode_payload(issued.contents)


def test_pycose_refuses_a_tampered_file(pycose_python, issued, signing_key, tmp_path) -> None:
    tampered = bytearray(issued.signed)
    tampered[-1] ^= 0x01
    public = bytes(signing_key.verify_key).hex().encode()
    work = _work(tmp_path, {"message.cose": bytes(tampered), "public.hex": public})
    run = pycose(pycose_python, work, "verify")
    assert run.returncode != 0
    assert "bad signature" in run.stderr


def test_what_pycose_signs_is_byte_for_byte_our_file_and_the_vehicle_accepts_it(
    pycose_python, issued, signing_key, clock, tmp_path
) -> None:
    payload = encode_payload(issued.contents)
    work = _work(tmp_path, {"payload.cbor": payload, "seed.hex": bytes(signing_key).hex().encode()})
    run = pycose(pycose_python, work, "sign")
    assert run.returncode == 0, run.stderr
    theirs = (work / "message.cose").read_bytes()
    assert theirs == sign_file(issued.contents, signing_key) == issued.signed  # Ed25519 is deterministic
    accepted = verify_file(
        theirs,
        signing_key.verify_key,
        vin=VIN,
        now=clock.now(),
        applied=None,
        applied_version=0,
        legal_ecall_equipped=True,
        catalogue=Catalogue.load(),
    )
    assert accepted.file == issued.contents
