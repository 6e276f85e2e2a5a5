from __future__ import annotations

from pathlib import Path

import pytest

from tcu.config import load_agent_config
from tcu.errors import ConfigError

MINIMAL = """
vin = "WMWZZZ3CZ2E123456"
data_dir = "data"
[ecall]
legal_ecall = false
[keys]
vehicle_private_key = "keys/v.key"
backend_public_key = "/etc/tcu/backend.pub"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    config = load_agent_config(_write(tmp_path, MINIMAL), env={})
    assert config.vin == "WMWZZZ3CZ2E123456"
    assert config.data_dir == tmp_path / "data"
    assert config.keys.vehicle_private_key == tmp_path / "keys/v.key"
    assert config.keys.backend_public_key == Path("/etc/tcu/backend.pub")
    assert (config.broker.host, config.broker.port, config.broker.protocol) == ("127.0.0.1", 1883, "5")
    assert config.queue.synchronous == "full"


def test_broker_url_with_tls_and_env_override(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + '[broker]\nurl = "mqtts://broker.example:8884"\nusername = "u"\n')
    config = load_agent_config(path, env={})
    assert (config.broker.host, config.broker.port, config.broker.tls) == ("broker.example", 8884, True)
    overridden = load_agent_config(path, env={"TCU_BROKER_URL": "mqtt://127.0.0.1:2000"})
    assert (overridden.broker.port, overridden.broker.tls) == (2000, False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL.replace('vin = "WMWZZZ3CZ2E123456"', ""), "vin: missing; expected a string"),
        (MINIMAL.replace("WMWZZZ3CZ2E123456", "WMWZZZ3CZ2E12345O"), "not a VIN: expected 17 characters"),
        (MINIMAL.replace('data_dir = "data"', "data_dir = 5"), "data_dir: got 5; expected a file path"),
        (MINIMAL.replace('vehicle_private_key = "keys/v.key"', ""), "keys.vehicle_private_key: missing"),
        (MINIMAL + "[queue]\nmax_records = true\n", "queue.max_records: got True; expected an integer"),
        (MINIMAL + '[queue]\nsynchronous = "off"\n', "queue.synchronous: got 'off'; expected one of full, normal"),
        (MINIMAL + '[broker]\nurl = "http://x"\n', "broker.url: 'http://x' is not a broker URL"),
        (MINIMAL + '[broker]\nprotocol = "4"\n', "broker.protocol"),
        (MINIMAL + "[telemetry]\ninterval_s = 0\n", "telemetry.interval_s: must be > 0"),
        (MINIMAL + "[uplink]\nwindow = 3\n", "uplink: unknown key\\(s\\) window"),
        ("colour = 1\n" + MINIMAL, "top level: unknown key\\(s\\) colour"),
        ("vin = [", "not valid TOML"),
    ],
)
def test_invalid_config_names_the_key_and_what_was_expected(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_agent_config(_write(tmp_path, text), env={})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_agent_config(tmp_path / "nope.toml", env={})


def test_a_config_without_ecall_is_presumed_legal_ecall_and_refused(tmp_path: Path) -> None:
    """Never run without eCall by mistake: no [ecall] section means legal eCall, which needs a modem."""
    text = MINIMAL.replace("[ecall]\nlegal_ecall = false\n", "")
    with pytest.raises(ConfigError, match=r"(?s)ecall\.port.*will not start without a working eCall configuration"):
        load_agent_config(_write(tmp_path, text), env={})


def test_legal_ecall_with_a_modem_is_configured(tmp_path: Path) -> None:
    text = MINIMAL.replace("legal_ecall = false", 'legal_ecall = true\nport = "/dev/ttyUSB2"\nprofile = "simcom"')
    config = load_agent_config(_write(tmp_path, text), env={})
    assert config.legal_ecall
    assert config.ecall is not None
    assert config.ecall.port == "/dev/ttyUSB2"
