"""The README's first command: the whole pure-software bench runs and checks itself."""

from __future__ import annotations

import asyncio
import io
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hil.cli import main as hil_cli
from hil.demo import CARDATA_ENV, SIGTERM_EXIT, run_demo
from hil.streaming_listener import DYNSEC_PLUGIN
from tests.conftest import eventually, require_mosquitto


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


@pytest.mark.parametrize("keep", [False, True])
def test_the_demo_removes_its_own_bench_folder_and_keeps_one_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    """The folder holds keys and a database: one made for the run goes with it; `--workdir DIR` is kept."""
    require_mosquitto()
    made = tmp_path / "made-for-the-run"
    monkeypatch.setattr("hil.demo.tempfile.mkdtemp", lambda prefix: str(made.mkdir() or made))
    given = ["--workdir", str(tmp_path / "given")] if keep else []
    assert hil_cli(["demo", "--duration", "1.5", "--interval", "0.1", *given]) == 0
    assert made.exists() is False
    assert (tmp_path / "given" / "backend.toml").exists() is keep


def test_a_second_demo_in_a_kept_bench_folder_is_refused_in_one_line_and_keeps_its_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-running the README's command in the same --workdir crashed with a traceback (the keys exist)."""
    require_mosquitto()
    given = ["--workdir", str(tmp_path / "bench")]
    assert hil_cli(["demo", "--duration", "1.0", "--interval", "0.1", *given]) == 0
    keys = {path: path.read_bytes() for path in (tmp_path / "bench" / "keys").iterdir()}
    capsys.readouterr()
    assert hil_cli(["demo", "--duration", "1.0", *given]) == 2
    error = capsys.readouterr().err
    assert error.strip().splitlines() == [
        f"tcu-hil: error: {tmp_path / 'bench'} holds an earlier bench (keys/): remove it or choose another --workdir"
    ]
    assert {path: path.read_bytes() for path in (tmp_path / "bench" / "keys").iterdir()} == keys


async def test_the_demo_with_cardata_serves_third_parties_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in a relative workdir, as a newcomer types `--workdir bench`: it used to fail (backend.toml's
    relative paths are read against its own folder, so the backend found no CA file)."""
    require_mosquitto()
    if not DYNSEC_PLUGIN.exists():
        pytest.skip(f"Mosquitto's dynamic-security plugin is not installed ({DYNSEC_PLUGIN})")
    monkeypatch.chdir(tmp_path.parent)
    out = io.StringIO()
    demo = asyncio.create_task(
        run_demo(
            Path(tmp_path.name),
            duration_s=1.5,
            broker_choice="mosquitto",
            telemetry_interval_s=0.2,
            cardata=True,
            out=out,
        )
    )
    await eventually(lambda: "CarData streaming" in out.getvalue() or demo.done(), within=30, what="CarData lines")
    url = re.search(r"CarData API (http://\S+)", out.getvalue())
    assert url is not None, out.getvalue()
    async with httpx.AsyncClient(base_url=url[1]) as http:  # the owner was paired with the demo car
        assert (await http.get("/simulator/device")).status_code == 200
    result = await demo
    assert result.ok, out.getvalue()
    assert "[cardata.streaming]" in (tmp_path / "backend.toml").read_text()
    assert re.search(r"CarData streaming mqtts://127\.0\.0\.1:\d+ \(CA \S+ca\.pem\)", out.getvalue())
    # What the README sources instead of copying ports: the same URL and port as printed
    env = dict(word.split("=", 1) for word in shlex.split((tmp_path / CARDATA_ENV).read_text(), comments=True))
    sourced = [env["API"], env["MQTT_PORT"], env["CA"]]
    assert sourced[0] == url[1]
    assert f"mqtts://127.0.0.1:{sourced[1]} (CA {sourced[2]})" in out.getvalue()


def _mosquittos_of(workdir: Path) -> list[str]:
    """Running Mosquitto processes whose configuration lies in `workdir`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended while we looked
        if words and words[0].endswith(b"mosquitto") and str(workdir).encode() in b" ".join(words):
            found.append(cmdline.parent.name)
    return found


def test_sigterm_stops_the_demo_and_its_mosquitto(tmp_path: Path) -> None:
    require_mosquitto()
    workdir = tmp_path / "bench"
    command = [
        sys.executable,
        "-m",
        "hil.cli",
        "demo",
        "--duration",
        "60",
        "--interval",
        "0.2",
        "--broker",
        "mosquitto",
    ]
    with subprocess.Popen([*command, "--workdir", str(workdir)], stdout=subprocess.PIPE, text=True) as demo:
        assert demo.stdout is not None
        for line in demo.stdout:
            if line.startswith("t="):  # running: broker, backend and agent up
                break
        assert _mosquittos_of(workdir), "the demo's Mosquitto should be running"
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=15) == SIGTERM_EXIT
    assert _mosquittos_of(workdir) == []
