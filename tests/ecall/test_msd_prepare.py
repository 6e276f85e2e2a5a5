"""The MSD module is compiled before a crash, never at it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asn1tools
import pytest

from telematics_wire.errors import MsdError
from telematics_wire.msd import MsdCodec, msd_from_json

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "msd" / "vectors.json").read_text())


def test_a_prepared_codec_encodes_and_decodes_without_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = MsdCodec()
    codec.prepare()
    compiles: list[Any] = []
    real_compile = asn1tools.compile_string
    monkeypatch.setattr(asn1tools, "compile_string", lambda *a, **k: compiles.append(a) or real_compile(*a, **k))
    for vector in VECTORS:
        msd = msd_from_json(vector["msd"])
        assert codec.decode(codec.encode(msd, vector["version"])) == msd
    assert compiles == []


def test_an_unknown_version_is_refused_by_prepare() -> None:
    with pytest.raises(MsdError, match="version"):
        MsdCodec().prepare(4)
