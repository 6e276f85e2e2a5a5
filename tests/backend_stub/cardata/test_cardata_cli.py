"""`backend-stub cardata ...`: the operator registers a third party, the owner approves its sign-in,
grants and revokes keys and reads the reports — and every refusal is one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend_stub.cardata.wiring import open_cardata
from backend_stub.cli import main as backend_cli
from backend_stub.config import load_backend_config
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store_location import open_record_store
from tcu.clock import ManualClock, SystemClock
from tests.backend_stub.cardata.http_world import DOOR, OWNER, bench_backend, pkce_pair
from tests.backend_stub.cardata.streaming_world import link_vehicle
from tests.conftest import VIN


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """One bench for the module (its setup is the slow part); the refusals change nothing in it."""
    tmp_path = tmp_path_factory.mktemp("cardata-cli")
    backend = bench_backend(tmp_path, ManualClock(), port=0)  # writes the bench's backend.toml
    assert backend.cardata is not None
    backend.cardata.close()
    backend.accounts.create(OWNER, name="Anna", email="anna@example.org", now=backend.clock.now())
    link_vehicle(backend.config.database, VIN, OWNER, backend.clock.now())
    backend.database.close()
    return ["--config", str(tmp_path / "bench" / "backend.toml")]


def test_an_owner_signs_a_client_in_grants_revokes_and_reads_the_reports(
    config: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend_cli(["cardata", "client-add", "Insurer X", *config]) == 0
    client_id = capsys.readouterr().out.split()[0].removeprefix("client_id=")
    assert backend_cli(["cardata", "grant", VIN, client_id, DOOR, *config]) == 0
    assert DOOR in capsys.readouterr().out
    assert backend_cli(["cardata", "consents", OWNER, *config]) == 0
    [consent] = json.loads(capsys.readouterr().out)
    assert (consent["client_id"], consent["keys"], consent["ended"]) == (client_id, [DOOR], None)
    assert backend_cli(["cardata", "revoke", VIN, client_id, *config]) == 0
    assert backend_cli(["cardata", "consents", OWNER, *config]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])[0]["ended"] is not None
    assert backend_cli(["cardata", "report", OWNER, "--transactions", "--html", *config]) == 0
    assert capsys.readouterr().out.startswith("<!doctype html>")
    assert backend_cli(["cardata", "report", OWNER, *config]) == 0
    assert VIN in capsys.readouterr().out


def test_approve_lets_the_client_poll_its_tokens(config: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert backend_cli(["cardata", "client-add", "Home Assistant", *config]) == 0
    client_id = capsys.readouterr().out.split()[0].removeprefix("client_id=")
    loaded = load_backend_config(Path(config[1]), env={})
    records, provisioning = open_record_store(loaded), ProvisioningStore(loaded.database)
    parts = open_cardata(loaded, clock=SystemClock(), records=records, provisioning=provisioning)  # the client's side
    try:
        verifier, challenge = pkce_pair()
        started = parts.flow.start(client_id, "openid cardata:api:read", challenge, "S256")
        assert backend_cli(["cardata", "approve", started.user_code, "--account", OWNER, *config]) == 0
        assert "approved" in capsys.readouterr().out
        tokens = parts.flow.exchange(client_id, started.device_code, verifier)
        assert tokens.gcid == parts.store.gcid_of(OWNER)
    finally:
        parts.close()
        provisioning.close()
        records.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["approve", "BCDFGHJK", "--account", OWNER], "no sign-in waits"),
        (["approve", "BCDFGHJK"], "--account"),
        (["grant", "NOT-A-VIN", "00000000-0000-4000-8000-000000000000", DOOR], "not a VIN"),
        (["grant", VIN, "00000000-0000-4000-8000-000000000000", DOOR], "no CarData client"),
        (["consents", "nobody@example.org"], "no account"),
    ],
)
def test_a_refusal_is_one_line_and_status_2(
    config: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert backend_cli(["cardata", *argv, *config]) == 2
    error = capsys.readouterr().err
    assert error.startswith("backend-stub: error:")
    assert error.count("\n") == 1
    assert message in error
