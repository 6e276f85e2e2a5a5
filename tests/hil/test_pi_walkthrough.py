"""docs/raspberry-pi.md, run step by step: the commands are read from the page, so the test fails when it drifts.

The Pi is a temporary root: `install-pi.sh --root DIR --python <this interpreter>` installs under DIR
as the current user (no apt-get, useradd, chown or systemctl), and the adapters of the page's
`/dev/serial/by-id/...` paths are virtual devices at DIR + that path (the modem simulator for the legal
eCall, an ELM327 and a GNSS receiver for the sources). The backend stub and the agent run as processes
(the agent from the installed unit's ExecStart line) against a real Mosquitto, and the walk ends when
the car's telemetry is at the backend, shown by the page's own `backend-stub last`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from hil.broker import MosquittoBroker, free_port
from hil.devices.elm327_sim import Elm327Simulator, Elm327Timing
from hil.devices.modem_sim import ModemSimulator
from hil.devices.nmea_sim import NmeaSimulator
from hil.devices.pty_device import PtyDevice
from telematics_wire.keys import write_box_keypair, write_signing_keypair
from tests.conftest import eventually

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs/raspberry-pi.md"
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
_ENV_NO_CI_BROKER = {k: v for k, v in ENV.items() if k != "TCU_BROKER_URL"}


# -- the page --------------------------------------------------------------------------------------------------
def _blocks(language: str, text: str | None = None) -> list[str]:
    text = DOC.read_text() if text is None else text
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def _doc_commands() -> list[list[str]]:
    """Every command of the page's bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = [t for t in shlex.split(line, comments=True) if t != "&"]  # `&`: in the background
            if tokens:
                commands.append(tokens)
    return commands


def _doc_command(*words: str) -> list[str]:
    """The one command of the page that starts with `words` (`sudo`, `bash` and the script's folder aside)."""
    found = [
        c
        for c in _doc_commands()
        if [Path(t).name if t.endswith(".sh") else t for t in _strip_sudo(c)][: len(words)] == list(words)
    ]
    assert len(found) == 1, f"docs/raspberry-pi.md should have exactly one `{' '.join(words)} ...` command: {found}"
    return found[0]


def _strip_sudo(tokens: list[str]) -> list[str]:
    while tokens and tokens[0] in ("sudo", "bash"):
        tokens = tokens[1:]
    return tokens


def _option(tokens: list[str], name: str) -> str:
    assert name in tokens, f"docs/raspberry-pi.md: {' '.join(tokens[:3])} ... has no {name}"
    return tokens[tokens.index(name) + 1]


def _replace(tokens: list[str], name: str, value: str) -> list[str]:
    index = tokens.index(name) + 1 if name in tokens else pytest.fail(f"the page's command has no {name}: {tokens}")
    return [*tokens[:index], value, *tokens[index + 1 :]]


# -- processes -------------------------------------------------------------------------------------------------
def _run(argv: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, cwd=cwd, env=_ENV_NO_CI_BROKER, capture_output=True, text=True, timeout=120, check=False
    )
    if check:
        assert result.returncode == 0, f"{shlex.join(argv)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        assert "Traceback" not in result.stderr
    return result


def _backend_stub(tokens: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert tokens[0] == "backend-stub"
    return _run([sys.executable, "-m", "backend_stub.cli", "--log-level", "warning", *tokens[1:]], cwd)


@contextlib.asynccontextmanager
async def _process(
    argv: list[str], cwd: Path, *, until: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A long-running command (the backend, the agent), stopped with SIGTERM as systemd stops it."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=_ENV_NO_CI_BROKER, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert process.stderr is not None
    log: list[str] = []

    async def read_log() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            log.append(raw.decode(errors="replace"))

    reader = asyncio.create_task(read_log(), name=f"log of {argv[2]}")
    try:
        if until is not None:
            await eventually(lambda: any(until in line for line in log), within=30, what=f"{until!r} in the log")
        yield process
        assert process.returncode is None, f"{shlex.join(argv)} ended early:\n{''.join(log)}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        await reader
        assert not any("Traceback" in line for line in log), "".join(log)


def _devices(root: Path, modem_port: str, sources: dict[str, dict[str, object]], psap_port: int) -> list[PtyDevice]:
    """The page's adapters as virtual devices at root + the page's path."""
    kinds = {
        "obd": lambda link: Elm327Simulator(timing=Elm327Timing.instant(), link_path=str(link)),
        "gnss": lambda link: NmeaSimulator(link_path=link, interval_s=0.2),
    }
    devices: list[PtyDevice] = [ModemSimulator(psap_address=("127.0.0.1", psap_port), link_path=root / modem_port[1:])]
    for name, section in sources.items():
        assert name in kinds, f"the page configures [sources.{name}]: give the test a virtual {name} device"
        devices.append(kinds[name](root / str(section["port"])[1:]))
    return devices


# -- the walk --------------------------------------------------------------------------------------------------
async def test_the_walkthrough_ends_with_telemetry_at_the_backend(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    root, pi, server = tmp_path / "pi-root", tmp_path / "pi-home", tmp_path / "backend"
    for folder in (pi, server):
        folder.mkdir()
    install = _strip_sudo(_doc_command("install-pi.sh"))
    enroll = _doc_command("backend-stub", "enroll")
    vin = _option(install, "--vin")
    sources = tomllib.loads("\n".join(_blocks("toml")))["sources"]

    # The page's enrolment must describe the car the installer configures, or every file is refused.
    assert enroll[2] == vin
    assert "--legal-ecall" in enroll, "the installed config has legal eCall: enrol with --legal-ecall"
    for name in ("--brand", "--first-registration"):
        assert _option(enroll, name) == _option(install, name), f"enroll {name} differs from the installer's"

    # 2. The backend: keys, backend.toml (the README's), running.
    _backend_stub(_doc_command("backend-stub", "keygen"), server)
    psap_port = free_port()
    [readme_backend] = [b for b in _blocks("toml", (REPO / "README.md").read_text()) if b.startswith("database =")]
    backend_toml = re.sub(r'^url = ".*"$', f'url = "{mosquitto.url}"', readme_backend, flags=re.M)
    (server / "backend.toml").write_text(backend_toml + f"\n[psap]\nport = {psap_port}\n")
    (server / "backend.toml").chmod(0o600)
    run_backend = _doc_command("backend-stub", "run")
    backend_argv = [sys.executable, "-m", "backend_stub.cli", "--log-level", "info", *run_backend[1:]]

    # 3. The ports: the page's /dev/serial/by-id paths, under the root.
    modem_port = _option(install, "--modem-port")
    devices = _devices(root, modem_port, sources, psap_port)
    for device in devices:
        assert device._link is not None
        device._link.parent.mkdir(parents=True, exist_ok=True)

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_process(backend_argv, server, until="backend ingest subscribed"))
        for device in devices:
            await stack.enter_async_context(device)

        # 4. Install, as the page says, under the root and with this interpreter.
        for key in ("backend.x25519.pub", "backend.ed25519.pub"):
            shutil.copy(server / "keys" / key, pi / key)
        (pi / "tcu-sim").symlink_to(REPO)
        argv = _replace(install, "--broker", mosquitto.url)
        argv = _replace(argv, "--modem-port", str(root / modem_port[1:]))
        installed = _run(["bash", *argv, "--root", str(root), "--python", sys.executable], pi)
        for skipped in ("useradd", "chown", "systemctl enable --now tcu-agent.service"):
            assert f"skipped under --root: {skipped}" in installed.stdout
        config = root / "etc/tcu/agent.toml"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert stat.S_IMODE((root / f"etc/tcu/keys/{vin}.x25519.key").stat().st_mode) == 0o600
        unit = (root / "etc/systemd/system/tcu-agent.service").read_text()
        [exec_start] = [line.removeprefix("ExecStart=") for line in unit.splitlines() if line.startswith("ExecStart=")]
        agent_argv = shlex.split(exec_start)
        assert agent_argv[0] == sys.executable
        assert agent_argv[-2:] == ["--config", str(config)]

        # `systemctl enable --now`: the agent runs before the backend knows the car.
        async with _process(agent_argv, pi, until="starting; data in"):
            # 5. Enrol and book, the page's commands verbatim, with the key the installer made.
            shutil.copy(root / f"etc/tcu/keys/{vin}.x25519.pub", server / f"{vin}.x25519.pub")
            _backend_stub(enroll, server)
            _backend_stub(_doc_command("backend-stub", "provision", "book"), server)

            # 6. The sources, then `systemctl restart tcu-agent`.
            text = "\n".join(_blocks("toml"))
            for section in sources.values():
                text = text.replace(f'"{section["port"]}"', f'"{root}{section["port"]}"')
            with config.open("a") as handle:
                handle.write("\n" + text)
        # 7. `tcu check-config`, as the page runs it, on the installed config.
        [check] = [c for c in _doc_commands() if "check-config" in c]
        assert _option(check, "--config") == "/etc/tcu/agent.toml"
        checked = _run([sys.executable, "-m", "tcu.cli", "check-config", "--config", str(config)], pi)
        assert checked.stdout.startswith(f"{config}: OK")
        async with _process(agent_argv, pi, until="starting; data in"):
            # The values arrive at the backend.
            store = BackendStore(server / "backend.sqlite3")
            stack.callback(store.close)
            await eventually(lambda: bool(store.last_values(vin)), within=40, what="telemetry at the backend")
        last = _backend_stub(_doc_command("backend-stub", "last"), server)
        assert "path=Vehicle." in last.stdout

    provisioning = ProvisioningStore(server / "backend.sqlite3")
    try:
        results = provisioning.results(vin)
    finally:
        provisioning.close()
    assert results, "the car reported no provisioning result"
    assert all(r.code is None for r in results), [(r.version, r.status, r.code, r.reason) for r in results]


# -- the installer's other paths -------------------------------------------------------------------------------
_SYSTEM_COMMANDS = ("apt-get", "useradd", "chown", "chmod", "install", "runuser", "systemctl", "python3", "env")


def _trap_path(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """PATH with every command the installer changes the system with replaced by one that only logs its call.

    `id` says no user `tcu` exists, so the dry run shows the useradd whatever this host has."""
    bin_dir, calls = tmp_path / "trap-bin", tmp_path / "trap-calls"
    bin_dir.mkdir()
    for name in (*_SYSTEM_COMMANDS, "id"):
        script = bin_dir / name
        script.write_text(
            f'#!/bin/sh\n[ "$(basename "$0")" = id ] && exit 1\necho "$0 $*" >>{shlex.quote(str(calls))}\nexit 1\n'
        )
        script.chmod(0o755)
    return {**_ENV_NO_CI_BROKER, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def _pi_home(tmp_path: Path) -> Path:
    pi = tmp_path / "pi-home"
    pi.mkdir()
    for _, public in (
        write_box_keypair(tmp_path / "keys", "backend"),
        write_signing_keypair(tmp_path / "keys", "backend"),
    ):
        shutil.copy(public, pi / public.name)
    (pi / "tcu-sim").symlink_to(REPO)
    return pi


def test_a_dry_run_prints_every_action_of_the_system_install_and_does_none(tmp_path: Path) -> None:
    pi = _pi_home(tmp_path)
    (pi / "ttyUSB2").touch()
    env, calls = _trap_path(tmp_path)
    install = _replace(_strip_sudo(_doc_command("install-pi.sh")), "--modem-port", str(pi / "ttyUSB2"))
    vin = _option(install, "--vin")
    result = subprocess.run(
        ["bash", *install, "--dry-run"], cwd=pi, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert not calls.exists(), calls.read_text()  # nothing was run
    out = result.stdout
    tcu = "/opt/tcu/bin/python -m tcu.cli --log-level warning"
    for action in (
        "would run: apt-get update -qq",
        "would run: useradd --system --home-dir /var/lib/tcu --shell /usr/sbin/nologin --groups dialout tcu",
        "would run: python3 -m venv /opt/tcu",
        f"would run: /opt/tcu/bin/python -m pip install --quiet {_option(install, '--source')}",
        f"would run: {tcu} keygen --dir /etc/tcu/keys --name {vin}",
        "would run: install -m 0644 backend.x25519.pub /etc/tcu/keys/backend.x25519.pub",
        "would run: chown tcu:tcu /etc/tcu/agent.toml",
        "would run: chmod 0600 /etc/tcu/agent.toml",
        f"would run: runuser -u tcu -- {tcu.replace(' --log-level warning', '')} --log-level warning check-config "
        "--config /etc/tcu/agent.toml",
        f"would run: {tcu} service install --config /etc/tcu/agent.toml --python /opt/tcu/bin/python --user tcu "
        "--unit-dir /etc/systemd/system",
        "would run: systemctl enable --now tcu-agent.service",
    ):
        assert action in out.splitlines(), f"{action!r} not in the dry run:\n{out}"
    written = out.split("would write /etc/tcu/agent.toml:\n", 1)[1].split("\nwould run:", 1)[0]
    config = tomllib.loads(written)
    assert config["ecall"] == {"legal_ecall": True, "port": str(pi / "ttyUSB2"), "profile": "simcom"}
    assert config["vehicle"]["brand"] == _option(install, "--brand")
    assert str(config["vehicle"]["first_registration"]) == _option(install, "--first-registration")
    assert config["telemetry"]["require_services"] is True
    assert "would fail" not in out
    # Nothing was written, so the last lines must not read as if the vehicle key were there to enrol.
    assert "vehicle public key, to enrol on the backend" not in out
    assert (
        "no vehicle key was written (dry run): a real run writes its public key, to enrol on the backend, to "
        f"/etc/tcu/keys/{vin}.x25519.pub" in out.splitlines()
    )


def test_a_dry_run_on_a_laptop_previews_everything_and_names_what_would_fail(tmp_path: Path) -> None:
    """The page's exact command, on a machine without the modem, the backend's keys or ./tcu-sim."""
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    env, calls = _trap_path(tmp_path)
    install = _strip_sudo(_doc_command("install-pi.sh"))
    install[0] = str(REPO / "hil/deploy/install-pi.sh")  # the page runs it from ./tcu-sim, not there either
    result = subprocess.run(
        ["bash", *install, "--dry-run"], cwd=laptop, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert not calls.exists(), calls.read_text()
    lines = result.stdout.splitlines()
    keys = _option(install, "--backend-keys").split(",")
    assert [line for line in lines if line.startswith("would fail: ")] == [
        f"would fail: --modem-port {_option(install, '--modem-port')} does not exist "
        "(is the modem plugged in? see ls -l /dev/serial/by-id/)",
        *(
            f"would fail: backend public key {key} does not exist (copy it from the backend's 'backend-stub keygen')"
            for key in keys
        ),
        f"would fail: --source {_option(install, '--source')} does not exist "
        f"(the tcu-sim folder or wheel, relative to {laptop})",
    ]
    # ... and the whole preview still follows, down to the unit.
    assert "would run: systemctl enable --now tcu-agent.service" in lines
    assert "would write /etc/tcu/agent.toml:" in lines
    assert (result.returncode, result.stderr.strip()) == (
        1,
        "install-pi.sh: dry run: a real run would stop at the 4 problem(s) marked 'would fail' above",
    )


def test_a_real_run_refuses_a_source_that_does_not_exist(tmp_path: Path) -> None:
    pi, root = _pi_home(tmp_path), tmp_path / "pi-root"
    (pi / "ttyUSB2").touch()
    install = _replace(_strip_sudo(_doc_command("install-pi.sh")), "--modem-port", str(pi / "ttyUSB2"))
    install = [*_replace(install, "--source", "./tcu-sim-typo"), "--root", str(root)]
    result = _run(["bash", *install], pi, check=False)
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"install-pi.sh: error: --source ./tcu-sim-typo does not exist (the tcu-sim folder or wheel, relative to {pi})",
    )
    assert not root.exists()  # stopped before changing anything


def test_the_installer_stops_with_a_sentence_when_the_modem_port_is_missing(tmp_path: Path) -> None:
    pi, root = _pi_home(tmp_path), tmp_path / "pi-root"
    modem = tmp_path / "ttyUSB2"
    install = [*_strip_sudo(_doc_command("install-pi.sh")), "--root", str(root), "--python", sys.executable]

    def run() -> subprocess.CompletedProcess[str]:
        return _run(["bash", *_replace(install, "--modem-port", str(modem))], pi, check=False)

    missing = run()  # before anything is changed
    assert (missing.returncode, missing.stderr.strip()) == (
        2,
        f"install-pi.sh: error: --modem-port {modem} does not exist "
        "(is the modem plugged in? see ls -l /dev/serial/by-id/)",
    )
    assert not root.exists()

    modem.touch()
    assert run().returncode == 0
    unit = root / "etc/systemd/system/tcu-agent.service"
    unit.unlink()
    modem.rename(tmp_path / "ttyUSB3")  # re-plugged: the kernel named it anew
    # The config of the first run is kept, and its modem is gone: check-config stops the second run.
    again = _run(["bash", *_replace(install, "--modem-port", str(tmp_path / "ttyUSB3"))], pi, check=False)
    assert again.returncode == 2
    assert "Traceback" not in again.stderr
    config = root / "etc/tcu/agent.toml"
    assert (
        again.stderr.strip().splitlines()[-1].startswith(f"tcu: error: ecall.port in {config}: {modem} does not exist")
    )
    assert not unit.exists()  # no unit for a car that could not call 112
    assert f"keeping {config}" in again.stdout


def test_the_installer_ships_in_the_wheel_and_python_m_hil_deploy_finds_it() -> None:
    """The page's ways to get the script: the wheel's package data, and `python3 -m hil.deploy`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "install-pi.sh" in project["tool"]["setuptools"]["package-data"]["hil.deploy"]
    assert (REPO / "hil/deploy/__init__.py").is_file()  # a package, so that setuptools ships its data
    found = _run([sys.executable, "-m", "hil.deploy"], REPO)
    assert Path(found.stdout.strip()) == REPO / "hil/deploy/install-pi.sh"
    assert "unzip -p tcu_sim-*.whl hil/deploy/install-pi.sh" in " ".join(DOC.read_text().split())
    # PEP 639: an SPDX expression and the license text (the table form stops building on 2027-02-18).
    assert project["project"]["license"] == "Apache-2.0"
    assert all((REPO / name).is_file() for name in project["project"]["license-files"])
