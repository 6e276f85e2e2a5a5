"""Every CLI error a person can cause is one sentence on stderr and a non-zero exit, never a traceback.

A table of bad invocations of `tcu`, `backend-stub` and `tcu-hil` (missing files, folders that are
files, a unit directory that does not exist, a database that cannot be opened, bad arguments) runs
through each command's `main(argv)`; a few run as real processes too, since a traceback would be the
interpreter's, not `main`'s. And `tcu check-config` refuses a legal-eCall car whose modem port is not
there, naming the key and the path, while `tcu run` keeps starting (it waits for a late USB modem).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from backend_stub.cli import main as backend_cli
from hil.cli import main as hil_cli
from hil.layout import BenchLayout
from tcu.cli import main as tcu_cli
from tests.conftest import VIN

REPO = Path(__file__).resolve().parents[1]
Main = Callable[[list[str]], int]


@pytest.fixture
def bench(tmp_path: Path) -> BenchLayout:
    layout = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1")
    layout.create_backend()
    layout.add_vehicle(VIN)
    (tmp_path / "a-file").write_text("not a folder\n")
    return layout


def _config_with(bench: BenchLayout, name: str, old: str, new: str, *, backend: bool = False) -> str:
    source = bench.backend_config if backend else bench.agent_config(VIN)
    text = source.read_text()
    assert old in text
    path = bench.root / name
    path.write_text(text.replace(old, new))
    path.chmod(0o600)
    return str(path)


def _cases(bench: BenchLayout, tmp: Path) -> list[tuple[str, Main, list[str], str]]:
    """(id, main, argv, what the sentence must say)."""
    agent = str(bench.agent_config(VIN))
    backend = str(bench.backend_config)
    a_file = tmp / "a-file"
    agent_data_in_a_file = _config_with(
        bench, "data-in-file.toml", f'data_dir = "vehicles/{VIN}"', f'data_dir = "{a_file}/x"'
    )
    backend_db_in_a_file = _config_with(
        bench, "db-in-file.toml", 'database = "backend.sqlite3"', f'database = "{a_file}/db.sqlite3"', backend=True
    )
    return [
        (
            "service install, unit dir missing",
            tcu_cli,
            ["service", "install", "--config", agent, "--unit-dir", str(tmp / "no")],
            f"the unit directory {tmp / 'no'} does not exist",
        ),
        (
            "service install, unit dir a file",
            tcu_cli,
            ["service", "install", "--config", agent, "--unit-dir", str(a_file)],
            "is not a directory",
        ),
        (
            "service print, config missing",
            tcu_cli,
            ["service", "print", "--config", str(tmp / "none.toml")],
            "does not exist",
        ),
        ("check-config, config a folder", tcu_cli, ["check-config", "--config", str(tmp)], "cannot be read"),
        (
            "keygen into a file",
            tcu_cli,
            ["keygen", "--dir", str(a_file / "keys")],
            f"cannot use {a_file / 'keys'}: not a directory",
        ),
        ("privacy, data dir in a file", tcu_cli, ["privacy", "--config", agent_data_in_a_file], "not a directory"),
        ("account, data dir in a file", tcu_cli, ["account", "--config", agent_data_in_a_file], "not a directory"),
        ("status, data dir in a file", tcu_cli, ["status", "--config", agent_data_in_a_file], "not a directory"),
        (
            "msd, JSON missing",
            tcu_cli,
            ["ecall", "msd", "--json", str(tmp / "none.json")],
            "cannot read the MSD JSON file",
        ),
        ("decode, not hex", tcu_cli, ["ecall", "decode", "zz"], "is not hexadecimal"),
        (
            "backend keygen into a file",
            backend_cli,
            ["keygen", "--dir", str(a_file)],
            f"cannot use {a_file}: file exists",
        ),
        (
            "backend last, config missing",
            backend_cli,
            ["last", VIN, "--config", str(tmp / "none.toml")],
            "does not exist",
        ),
        (
            "backend vehicles, database in a file",
            backend_cli,
            ["vehicles", "--config", backend_db_in_a_file],
            str(a_file),
        ),
        (
            "backend psap-msds, database in a file",
            backend_cli,
            ["psap-msds", "--config", backend_db_in_a_file],
            str(a_file),
        ),
        (
            "backend enroll, key is a folder",
            backend_cli,
            ["enroll", VIN, "--public-key", str(tmp), "--config", backend],
            "cannot be read",
        ),
        (
            "backend enroll, key missing",
            backend_cli,
            ["enroll", VIN, "--public-key", str(tmp / "none.pub"), "--config", backend],
            "does not exist",
        ),
        (
            "backend last, VIN never enrolled",
            backend_cli,
            ["last", "WBA00000000000001", "--config", backend],
            "is not enrolled",
        ),
        ("tcu-hil run, scenario missing", hil_cli, ["run", str(tmp / "none.toml")], "cannot be read"),
        (
            "tcu-hil run, workdir a file",
            hil_cli,
            ["run", "commute", "--workdir", str(a_file)],
            f"cannot use {a_file / 'mosquitto'}: not a directory",
        ),
        ("tcu-hil replay, recording missing", hil_cli, ["replay", str(tmp / "none.log")], "no such file"),
    ]


def test_every_bad_invocation_is_one_sentence_and_exit_2(
    bench: BenchLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = []
    for name, main, argv, expected in _cases(bench, tmp_path):
        try:
            code = main(argv)
        except BaseException as exc:  # the table reports every escape at once
            failures.append(f"{name}: raised {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        sentence = lines[-1] if lines else ""
        if code != 2 or "Traceback" in err or expected not in sentence or sentence.split(": ")[1:2] != ["error"]:
            failures.append(f"{name}: exit {code}, stderr {err!r}")
    assert failures == []


@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("tcu.cli", ["service", "install", "--config", "{agent}", "--unit-dir", "{tmp}/no-such-dir"], "does not exist"),
        ("backend_stub.cli", ["keygen", "--dir", "{tmp}/a-file"], "file exists"),
    ],
)
def test_a_real_process_prints_the_sentence_not_a_traceback(
    bench: BenchLayout, tmp_path: Path, module: str, args: list[str], expected: str
) -> None:
    argv = [a.format(agent=bench.agent_config(VIN), tmp=tmp_path) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert expected in line
    assert line.split(": ")[1] == "error"


def _legal_ecall_config(bench: BenchLayout, port: str) -> Path:
    return bench.write_agent_config(
        VIN, name="legal.toml", simulation=False, ecall=f'[ecall]\nlegal_ecall = true\nport = "{port}"\n'
    )


def test_check_config_refuses_a_legal_ecall_car_whose_modem_port_does_not_exist(
    bench: BenchLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "dev/serial/by-id/usb-SimTech-if02-port0"
    config = _legal_ecall_config(bench, str(missing))
    assert tcu_cli(["check-config", "--config", str(config)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"tcu: error: ecall.port in {config}: {missing} does not exist")
    assert "legal-eCall vehicle cannot call 112" in line

    missing.parent.mkdir(parents=True)
    missing.symlink_to(tmp_path / "unplugged")  # a by-id link left dangling is no modem either
    assert tcu_cli(["check-config", "--config", str(config)]) == 2
    assert "does not exist" in capsys.readouterr().err

    (tmp_path / "unplugged").touch()
    assert tcu_cli(["check-config", "--config", str(config)]) == 0
    assert capsys.readouterr().out.startswith(f"{config}: OK")


def test_a_pyserial_url_is_not_a_path_and_not_checked(bench: BenchLayout, capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("socket://127.0.0.1:7000", "rfc2217://modem.example:2217"):
        config = _legal_ecall_config(bench, url)
        assert tcu_cli(["check-config", "--config", str(config)]) == 0, capsys.readouterr().err
        assert capsys.readouterr().err == ""


def test_a_missing_source_port_or_optional_modem_is_a_warning(
    bench: BenchLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = bench.write_agent_config(
        VIN,
        name="optional.toml",
        ecall=f'[ecall]\nlegal_ecall = false\nport = "{tmp_path}/ttyMODEM"\n',
        extra=f'\n[sources.obd]\nport = "{tmp_path}/ttyOBD"\n',
    )
    assert tcu_cli(["check-config", "--config", str(config)]) == 0
    warnings = capsys.readouterr().err.strip().splitlines()
    assert warnings == [
        f"tcu: warning: ecall.port in {config}: {tmp_path}/ttyMODEM does not exist "
        "(is the adapter plugged in? see ls -l /dev/serial/by-id/)",
        f"tcu: warning: sources.obd.port in {config}: {tmp_path}/ttyOBD does not exist "
        "(is the adapter plugged in? see ls -l /dev/serial/by-id/)",
    ]
