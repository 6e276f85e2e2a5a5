"""The command lines people type: keys, config checks, queue and backend queries."""

from __future__ import annotations

import asyncio
import json
import stat
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from nacl.public import Box

from backend_stub.accounts import AccountStore, Sealer
from backend_stub.cli import main as backend_cli
from backend_stub.ingest import Ingest
from backend_stub.store import BackendStore
from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.cli import main as tcu_cli
from tcu.clock import ManualClock, SystemClock
from tcu.config import load_agent_config
from tcu.services.personal import PersonalStore
from tcu.status import StatusWriter
from tcu.uplink.queue_store import QueuedEnvelope
from tcu.vehicle.state import Signal
from telematics_wire.envelope import open_record, seal_record
from telematics_wire.keys import load_private_key, load_public_key, load_signing_key
from telematics_wire.records import Record, RecordKind, to_millis
from tests.conftest import VIN


@pytest.fixture
def backend_box_for(layout: BenchLayout):  # type: ignore[no-untyped-def]
    box = Box(load_private_key(layout.keys / "backend.x25519.key"), load_public_key(layout.keys / f"{VIN}.x25519.pub"))
    return lambda envelope: open_record(box, envelope, topic_vin=VIN).body


def test_tcu_keygen_writes_a_private_file_only_its_owner_reads(tmp_path: Path, capsys) -> None:
    assert tcu_cli(["keygen", "--dir", str(tmp_path), "--name", VIN]) == 0
    assert stat.S_IMODE((tmp_path / f"{VIN}.x25519.key").stat().st_mode) == 0o600
    assert "0600" in capsys.readouterr().out
    assert tcu_cli(["keygen", "--dir", str(tmp_path), "--name", VIN]) == 2
    assert "already exists" in capsys.readouterr().err


def test_check_config_accepts_a_good_bench_and_names_a_missing_key(layout: BenchLayout, capsys) -> None:
    config = layout.agent_config(VIN)
    assert tcu_cli(["check-config", "--config", str(config)]) == 0
    (layout.keys / f"{VIN}.x25519.key").unlink()
    assert tcu_cli(["check-config", "--config", str(config)]) == 2
    assert f"tcu: error: key file {layout.keys / f'{VIN}.x25519.key'} does not exist" in capsys.readouterr().err


async def _put(agent: Agent, record: Record) -> None:
    async with agent.outbox:
        await agent.outbox.put(record)


async def _queued(agent: Agent) -> list[QueuedEnvelope]:
    async with agent.outbox:
        return await agent.outbox.next_batch(10)


def test_queue_command_shows_what_is_waiting(layout: BenchLayout, capsys) -> None:
    agent = Agent(load_agent_config(layout.agent_config(VIN), env={}))
    asyncio.run(_put(agent, Record(kind=RecordKind.EVENT, created=agent.clock.now(), body={"type": "door_opened"})))
    assert tcu_cli(["queue", "--config", str(layout.agent_config(VIN)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "depth": 1,
        "by_priority": {"event": 1},
        "next_seq": 2,
        "dropped_total": 0,
    }


def test_backend_queries(layout: BenchLayout, clock: ManualClock, capsys) -> None:
    store = BackendStore(layout.root / "backend.sqlite3")
    ingest = Ingest(store, load_private_key(layout.keys / "backend.x25519.key"), clock, 65536)
    box = Box(load_private_key(layout.keys / f"{VIN}.x25519.key"), load_public_key(layout.keys / "backend.x25519.pub"))
    with store.transaction():
        for seq in (1, 2, 3):
            at = clock.now() + timedelta(minutes=seq)
            body = {"signals": {"Vehicle.Speed": {"v": 10.0 * seq, "t": to_millis(at)}}}
            ingest.handle(
                f"vehicles/{VIN}/up/records",
                seal_record(box, VIN, seq, Record(kind=RecordKind.TELEMETRY, created=at, body=body)),
            )
        ingest.handle(f"vehicles/{VIN}/up/records", b"junk")
    store.close()
    config = str(layout.backend_config)

    assert backend_cli(["vehicles", "--config", config, "--json"]) == 0
    [vehicle] = json.loads(capsys.readouterr().out)
    assert (vehicle["vin"], vehicle["records"], vehicle["last_seq"]) == (VIN, 3, 3)

    assert backend_cli(["last", VIN, "--config", config, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["value"] == 30.0

    since = (clock.now() + timedelta(minutes=2)).isoformat()
    assert backend_cli(["records", VIN, "--since", since, "--config", config, "--json"]) == 0
    assert [r["seq"] for r in json.loads(capsys.readouterr().out)] == [2, 3]

    assert backend_cli(["rejections", "--config", config]) == 0
    assert "malformed CBOR" in capsys.readouterr().out

    assert backend_cli(["last", "WVWZZZ1JZXW999999", "--config", config]) == 2
    assert "is not enrolled" in capsys.readouterr().err


def test_ecall_msd_and_decode_round_trip_a_published_vector(tmp_path: Path, capsys) -> None:
    vector = json.loads((Path(__file__).parent / "data/msd/vectors.json").read_text())[0]
    assert tcu_cli(["ecall", "decode", vector["hex"]]) == 0
    described = tmp_path / "msd.json"
    described.write_text(capsys.readouterr().out)
    assert tcu_cli(["ecall", "msd", "--json", str(described), "--explicit-propulsion"]) == 0
    assert capsys.readouterr().out.strip() == vector["hex"].upper()
    assert tcu_cli(["ecall", "decode", "not-hex"]) == 2
    assert "is not hexadecimal" in capsys.readouterr().err


def test_privacy_profiles_and_owner_change(layout: BenchLayout, capsys, backend_box_for) -> None:  # type: ignore[no-untyped-def]
    config = str(layout.agent_config(VIN))
    assert tcu_cli(["privacy", "--config", config, "position", "block"]) == 0
    assert "position        blocked" in capsys.readouterr().out
    assert tcu_cli(["profile", "--config", config, "add", "Anna"]) == 2
    assert "needs a paired ConnectedDrive account" in capsys.readouterr().err
    personal = PersonalStore(load_agent_config(layout.agent_config(VIN), env={}).personal_path)
    # paired (test_account_pairing...)
    asyncio.run(personal.save(replace(personal.load(), paired_accounts=("anna@example.org",))))
    assert tcu_cli(["profile", "--config", config, "add", "Anna", "--seat", "4"]) == 0
    assert tcu_cli(["profile", "--config", config, "add", "Ben"]) == 0
    assert "Ben: seat 0" in capsys.readouterr().out
    assert tcu_cli(["owner-change", "--config", config]) == 0
    assert json.loads(capsys.readouterr().out)["wiped"]["driver_profiles"] == 2
    assert tcu_cli(["profile", "--config", config, "list"]) == 0
    assert capsys.readouterr().out == ""
    assert tcu_cli(["privacy", "--config", config]) == 0
    assert "position        allowed" in capsys.readouterr().out
    # The report waits in the durable queue for the running agent to send.
    agent = Agent(load_agent_config(layout.agent_config(VIN), env={}))
    [queued] = asyncio.run(_queued(agent))
    assert backend_box_for(queued.envelope)["type"] == "owner_change"


async def _load_and_write_status(agent: Agent) -> None:
    async with agent.outbox:
        agent.services.load()
        await agent.outbox.committed()  # the capability report the load hands over
        StatusWriter(agent.config.status_path, agent.status).write()  # what the agent does every second


def test_status_command_shows_the_agents_status_file(layout: BenchLayout, capsys) -> None:  # type: ignore[no-untyped-def]
    config = layout.agent_config(VIN)
    assert tcu_cli(["status", "--config", str(config)]) == 2
    assert "is the agent running?" in capsys.readouterr().err
    agent = Agent(load_agent_config(config, env={}))
    agent.state.update(Signal(path="Vehicle.Speed", value=42.0, timestamp=agent.clock.now(), source="test"))
    asyncio.run(_load_and_write_status(agent))
    assert tcu_cli(["status", "--config", str(config)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["vin"] == VIN
    assert status["link"]["up"] is False
    assert status["queue"]["depth"] == 1  # the capability report queued at load
    assert status["signals"]["Vehicle.Speed"] == 42.0


def test_account_pairing_by_security_code_then_a_driver_profile(layout: BenchLayout, capsys) -> None:  # type: ignore[no-untyped-def]
    """AGB 1.6 a): the portal sends a code into the car, the customer types what the car shows."""
    backend_config, agent_config = str(layout.backend_config), str(layout.agent_config(VIN))
    agent = Agent(load_agent_config(layout.agent_config(VIN), env={}))

    def deliver() -> None:  # what the running backend publishes, the running agent receives
        accounts = AccountStore(
            layout.root / "backend.sqlite3",
            sealer=Sealer(bytes(load_private_key(layout.keys / "backend.x25519.key"))),
            signing_key=load_signing_key(layout.keys / "backend.ed25519.key"),
        )
        for number, _, signed in accounts.pending_messages(SystemClock().now()):
            asyncio.run(agent.accounts.receive(signed))
            accounts.mark_published(number, SystemClock().now())
        accounts.close()

    account = ["--account", "anna@example.org", "--config", backend_config]
    assert (
        backend_cli(
            [
                "account",
                "create",
                "anna@example.org",
                "--name",
                "Anna",
                "--email",
                "a@example.org",
                "--config",
                backend_config,
            ]
        )
        == 0
    )
    assert backend_cli(["account", "request-code", VIN, *account]) == 0
    assert "read it in the car" in capsys.readouterr().out
    deliver()
    assert tcu_cli(["account", "--config", agent_config, "--json"]) == 0
    code = json.loads(capsys.readouterr().out)["security_code"]["code"]
    wrong = "00000000" if code != "00000000" else "11111111"
    assert backend_cli(["account", "pair", VIN, *account, "--code", wrong]) == 2
    assert "wrong security code for this account (4 attempt(s) left)" in capsys.readouterr().err
    assert backend_cli(["account", "pair", VIN, *account, "--code", code]) == 0
    deliver()
    assert tcu_cli(["profile", "--config", agent_config, "add", "Anna"]) == 0
    assert tcu_cli(["account", "--config", agent_config]) == 0
    assert "paired accounts: anna@example.org" in capsys.readouterr().out
    assert backend_cli(["account", "show", VIN, "--config", backend_config, "--json"]) == 0
    [link] = json.loads(capsys.readouterr().out)["links"]
    assert (link["account"], link["ended"]) == ("anna@example.org", None)
    assert backend_cli(["handover", VIN, "--config", backend_config, "--json"]) == 0
    assert backend_cli(["retention", "run", "--config", backend_config, "--json"]) == 0
