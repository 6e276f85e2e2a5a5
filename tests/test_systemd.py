"""Raspberry Pi deployment: the systemd unit verifies, and a real agent speaks sd_notify."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hil.layout import BenchLayout
from tcu.cli import main as tcu_cli
from tcu.service_unit import UnitOptions, render_unit
from tests.conftest import VIN


@pytest.fixture
def layout(tmp_path: Path) -> BenchLayout:
    bench = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:9")  # nothing listens there
    bench.create_backend()
    bench.add_vehicle(VIN)
    return bench


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "tcu-agent.service"
    unit.write_text(render_unit(UnitOptions(config=Path("/etc/tcu/agent.toml"), user="root")))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stderr.strip() == "", result.stderr  # it only warns, on stderr, about bad directives


def test_service_install_writes_the_unit(layout: BenchLayout, tmp_path: Path, capsys) -> None:
    config = layout.agent_config(VIN)
    assert (
        tcu_cli(
            [
                "service",
                "install",
                "--config",
                str(config),
                "--unit-dir",
                str(tmp_path),
                "--python",
                "/opt/tcu/bin/python",
            ]
        )
        == 0
    )
    unit = tmp_path / "tcu-agent.service"
    text = unit.read_text()
    assert f"ExecStart=/opt/tcu/bin/python -m tcu.cli run --config {config.resolve()}" in text
    assert "WatchdogSec=30" in text
    assert "Type=notify" in text
    assert f"ReadWritePaths={layout.data_dir(VIN)}" in text
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert "systemctl enable --now tcu-agent.service" in capsys.readouterr().out


def test_service_install_refuses_a_config_that_could_not_start(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text('vin = "NOT-A-VIN"\n')
    assert tcu_cli(["service", "install", "--config", str(bad), "--unit-dir", str(tmp_path)]) == 2
    assert "not a VIN" in capsys.readouterr().err
    assert not (tmp_path / "tcu-agent.service").exists()


async def test_running_agent_notifies_ready_and_pings_the_watchdog(layout: BenchLayout, tmp_path: Path) -> None:
    address = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(address))
        server.setblocking(False)
        env = {**os.environ, "NOTIFY_SOCKET": str(address), "WATCHDOG_USEC": "100000"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tcu.cli",
            "--log-level",
            "error",
            "run",
            "--config",
            str(layout.agent_config(VIN)),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
        )
        messages: list[str] = []
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(30):
                while sum(m == "WATCHDOG=1" for m in messages) < 3:
                    messages.append((await loop.sock_recv(server, 4096)).decode())
        finally:
            process.terminate()
            assert await process.wait() == 0  # SIGTERM is an orderly stop
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert f"STATUS=VIN {VIN}" in ready


def test_install_script_passes_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is not installed: scripts/test installs it")
        pytest.skip("shellcheck is not installed")
    script = Path(__file__).parents[1] / "hil/deploy/install-pi.sh"
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
