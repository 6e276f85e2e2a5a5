"""End to end through a real Mosquitto: nothing lost, nothing stored twice, bad input survived."""

from __future__ import annotations

import contextlib
import signal

import aiomqtt
import cbor2
import pytest

from backend_stub.app import BackendStub
from backend_stub.cli import main as backend_cli
from backend_stub.provisioning_store import ProvisioningStore
from backend_stub.store import BackendStore
from hil.agent_process import AgentProcess
from hil.audit import audit_vehicle, count_seqs
from hil.broker import MosquittoBroker
from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.config import QueueConfig, UplinkConfig
from tests.conftest import VIN, eventually
from tests.integration.conftest import drain_only_config, running_agent, vehicle_config


def _assert_exactly_once(store: BackendStore, agent_next_seq: int) -> None:
    stored = store.seqs(VIN)
    assert stored == list(range(1, agent_next_seq)), f"gaps: {store.gaps(VIN)}"


async def _drain(agent: Agent, store: BackendStore) -> None:
    agent.telemetry.enabled = False
    await eventually(lambda: agent.outbox.stats().depth == 0, what="queue drained")
    next_seq = agent.outbox.stats().next_seq
    await eventually(lambda: len(store.seqs(VIN)) == next_seq - 1, what="backend caught up")


async def test_records_reach_the_backend_with_last_values(
    layout: BenchLayout, backend_store: BackendStore, capsys
) -> None:
    async with running_agent(vehicle_config(layout, interval_s=0.05)) as agent:
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 20, what="20 records")
        await _drain(agent, backend_store)
        _assert_exactly_once(backend_store, agent.outbox.stats().next_seq)
        speed = agent.state.get("Vehicle.Speed")
        assert backend_store.vehicles()[0].online is True
    assert speed is not None
    await eventually(lambda: backend_store.vehicles()[0].online is False, what="orderly offline status")
    last = {v.path: v for v in backend_store.last_values(VIN)}
    assert last["Vehicle.Speed"].value == speed.value
    assert backend_cli(["last", VIN, "--config", str(layout.backend_config), "--json"]) == 0
    assert '"path": "Vehicle.TraveledDistance"' in capsys.readouterr().out


async def test_broker_killed_and_restarted_mid_stream_loses_nothing(
    layout: BenchLayout, backend_store: BackendStore, mosquitto: MosquittoBroker
) -> None:
    async with running_agent(vehicle_config(layout)) as agent:
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 30, what="records flowing")
        await mosquitto.kill()
        queued_before = agent.outbox.stats().depth
        await eventually(lambda: agent.outbox.stats().depth >= queued_before + 25, what="records queued offline")
        assert not agent.session.stats.connected
        await mosquitto.start()
        await eventually(lambda: agent.session.stats.connects >= 2, what="agent reconnected")
        await _drain(agent, backend_store)
        _assert_exactly_once(backend_store, agent.outbox.stats().next_seq)


@pytest.mark.parametrize("kills", [3])
async def test_agent_sigkilled_mid_stream_loses_and_duplicates_nothing(
    layout: BenchLayout,
    backend: BackendStub,
    backend_store: BackendStore,
    agent_processes: list[AgentProcess],
    kills: int,
) -> None:
    config = vehicle_config(layout, interval_s=0.01)
    for round_number in range(kills):
        process = AgentProcess(config, log_level="warning")
        agent_processes.append(process)
        target = len(backend_store.seqs(VIN)) + 40
        await process.start()
        await eventually(lambda t=target: len(backend_store.seqs(VIN)) >= t, what=f"round {round_number}")
        assert backend_store.vehicles()[0].online is True
        assert await process.kill() == -signal.SIGKILL
        # The broker publishes the retained last will as soon as the dead agent's socket closes.
        await eventually(lambda: backend_store.vehicles()[0].online is False, what="last will: offline")
    # Restart once more without a signal source: it drains what the killed runs left queued.
    async with running_agent(drain_only_config(config)) as agent:
        await _drain(agent, backend_store)
        _assert_exactly_once(backend_store, agent.outbox.stats().next_seq)
    assert backend.ingest.stats.stored == len(backend_store.seqs(VIN))


async def test_full_queue_limit_drops_oldest_telemetry_names_it_and_delivers_the_rest(
    layout: BenchLayout, backend_store: BackendStore, mosquitto: MosquittoBroker
) -> None:
    await mosquitto.kill()  # offline: the queue can only grow
    config = vehicle_config(layout, interval_s=0.01, queue=QueueConfig(max_bytes=65536))
    async with running_agent(config) as agent:
        # max_bytes gives the same SQLITE_FULL as a full disk: the queue keeps to its size and makes
        # room by dropping its oldest telemetry, rather than stopping or holding records in memory.
        await eventually(lambda: agent.outbox.stats().dropped_total >= 20, what="oldest telemetry dropped")
        assert agent.outbox.stats().spilled_in_memory == 0
        await mosquitto.start()
        agent.telemetry.enabled = False
        await eventually(lambda: agent.outbox.stats().depth == 0, what="queue drained")
        issued = agent.outbox.stats().next_seq - 1
    audit = audit_vehicle(backend_store, VIN, issued_through=issued)
    assert audit.ok, audit.describe()
    assert count_seqs(audit.dropped) >= 20
    assert audit.stored + count_seqs(audit.dropped) == issued


async def test_forged_and_malformed_messages_are_survived(
    layout: BenchLayout, backend_store: BackendStore, mosquitto: MosquittoBroker
) -> None:
    async with running_agent(vehicle_config(layout, interval_s=0.05)) as agent:
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 5, what="records flowing")
        agent.telemetry.enabled = False
        await eventually(lambda: agent.outbox.stats().depth == 0, what="drained")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="attacker") as attacker:
            await attacker.publish(f"vehicles/{VIN}/up/records", b"\xff garbage", qos=1)
            await attacker.publish(
                f"vehicles/{VIN}/up/records",
                cbor2.dumps({"v": 1, "vin": VIN, "seq": 10**6, "nonce": bytes(24), "box": bytes(64)}),
                qos=1,
            )
            await attacker.publish(f"vehicles/{VIN}/down/ack", b"\xa1\x61v\x01", qos=1)
            await attacker.publish(f"vehicles/{VIN}/down/ack", b"x" * 100_000, qos=1)
        await eventually(lambda: len(backend_store.rejections(VIN)) == 2, what="backend rejections")
        await eventually(lambda: agent.session.stats.rejected_downlink == 2, what="agent rejections")
        reasons = [r.reason for r in backend_store.rejections(VIN)]
        assert "malformed CBOR" in reasons[0]
        assert "failed authentication" in reasons[1]
        # Both sides are still working.
        agent.telemetry.enabled = True
        target = len(backend_store.seqs(VIN)) + 5
        await eventually(lambda: len(backend_store.seqs(VIN)) >= target, what="records flowing again")
        assert agent.session.stats.connected


async def test_wrong_credentials_are_reported_and_retried(tmp_path, layout: BenchLayout) -> None:
    secured = MosquittoBroker(tmp_path / "secured", users={VIN: "right-password"}, acl_per_vehicle=True)
    async with secured:
        bench = BenchLayout(root=layout.root, broker_url=secured.url)
        config = bench.add_vehicle(
            VIN,
            telemetry_interval_s=0.05,
            username=VIN,
            password="wrong",
            uplink=UplinkConfig(reconnect_base_s=0.05, reconnect_cap_s=0.2),
        )
        async with running_agent(config) as agent:
            # Under load a first attempt may time out instead; the refusal is what must be reported.
            await eventually(
                lambda: "refused the credentials" in (agent.session.stats.last_error or ""), what="connect refused"
            )
            await eventually(lambda: agent.outbox.stats().depth >= 3, what="records kept while refused")
            error = agent.session.stats.last_error
            assert error is not None
            assert f"refused the credentials (user '{VIN}')" in error
            assert agent.session.stats.connects == 0


async def test_the_capability_report_follows_the_first_readings(layout: BenchLayout, backend: BackendStub) -> None:
    def position_reported() -> bool:
        report = committed.capabilities(VIN)
        return report is not None and report.report["categories"]["position"]["transmitted"] is True

    # What the backend committed, on a connection of the test's own: its own belongs to its database thread.
    with contextlib.closing(ProvisioningStore(backend.config.database)) as committed:
        async with running_agent(vehicle_config(layout, interval_s=0.05)):
            # The boot report precedes the first readings; the report that follows them says what goes out.
            await eventually(position_reported, what="a capability report naming the position transmitted")
