"""The MSD codec is ready before a crash: nothing is compiled or imported lazily on the eCall path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# asn1tools made unimportable: had the codec kept a compile (0.1-0.25 s) or an import (0.4 s) for its
# first use, which in an agent is a crash, these MSDs would fail instead of coming back.
_PROBE = """
import json, sys
sys.modules["asn1tools"] = None
from telematics_wire.msd import MsdCodec, msd_from_json
codecs = {"omitted": MsdCodec(), "explicit": MsdCodec(explicit_propulsion_defaults=True)}
for vector in json.loads(open(sys.argv[1]).read()):
    msd = msd_from_json(vector["msd"])
    codec = codecs[vector["propulsion_form"]]
    written = codec.encode(msd, vector["version"])
    assert written.hex().upper() == vector["hex"].upper(), vector["name"]
    assert codec.decode(written) == msd
    assert codec.decode(bytes.fromhex(vector["hex"])) == msd
print("ok")
"""


def test_every_vector_encodes_and_decodes_without_asn1tools() -> None:
    vectors = ROOT / "tests" / "data" / "msd" / "vectors.json"
    probe = [sys.executable, "-c", _PROBE, str(vectors)]
    run = subprocess.run(probe, check=False, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["ok"]
