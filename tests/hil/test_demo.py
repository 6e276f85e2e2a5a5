"""The README's first command: the whole pure-software bench runs and checks itself."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from hil.demo import run_demo
from tests.conftest import require_mosquitto


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
async def test_demo_delivers_every_record_exactly_once(tmp_path: Path, broker: str) -> None:
    if broker == "mosquitto":
        require_mosquitto()
    out = io.StringIO()
    result = await run_demo(tmp_path, duration_s=2.5, broker_choice=broker, telemetry_interval_s=0.1, out=out)
    assert result.ok, out.getvalue()
    assert result.stored >= 15
    assert "link=up" in out.getvalue()
    assert out.getvalue().rstrip().splitlines()[-1].startswith("OK: backend stored")
