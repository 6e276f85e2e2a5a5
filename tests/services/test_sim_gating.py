"""The SIM gates everything but the emergency call (AGB 3.3, 6.1): provisioning, remote measures, the
uplink, telemetry, events and the capability report, whatever `require_services` says."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from hil.layout import BenchLayout
from tcu.app import Agent
from tcu.clock import ManualClock
from tcu.config import load_agent_config
from tcu.services.measure_journal import MeasureJournal
from tcu.services.measures import MeasureEngine
from tcu.telemetry.data_policy import uplink_refusal
from tcu.vehicle.state import Signal
from telematics_wire.entitlements import derive
from telematics_wire.envelope import open_record
from telematics_wire.keys import load_private_key, load_public_key, load_signing_key
from telematics_wire.provisioning import ProvisioningFile
from telematics_wire.records import Record, RecordKind
from telematics_wire.sim_state import SimState
from telematics_wire.terms import Booking, Term
from tests.conftest import VIN
from tests.services.provisioning_helpers import signed
from tests.services.test_manager import KEY, Harness
from tests.services.test_measures import Bench

START = date(2026, 11, 1)
LEGAL = Booking(code="6AF", term=Term.UNLIMITED, start=START)
TELESERVICES = Booking(code="6AE", term=Term.UNLIMITED, start=START)
# A fixed term: paid, not a base service ("Laufzeit 3 Jahre" from first registration, as the catalogue offers 6AK).
PAID = Booking(code="6AK", term=Term.YEARS_2_PLUS_1, start=START, first_registration=START)


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "provisioning.cose"


def _results(harness: Harness) -> list[tuple[str, str | None, str | None]]:
    """(status, code, reason) of each provisioning result."""
    bodies = [r.body for r in harness.reports if r.body["type"] == "provisioning_result"]
    return [(b["status"], b["code"], b["reason"]) for b in bodies]


async def test_ecall_only_applies_only_the_file_that_reactivates_the_sim(state_file: Path, clock: ManualClock) -> None:
    harness = Harness(state_file, clock, legal=True)
    manager = harness.manager
    await manager.receive(signed(KEY, VIN, 1, clock.now(), LEGAL))  # no base service: eCall-only
    assert manager.entitlements.sim is SimState.TELEMATICS_DEACTIVATED
    await manager.receive(signed(KEY, VIN, 2, clock.now(), LEGAL, PAID))  # still no base service
    status, code, reason = _results(harness)[-1]
    assert (status, code) == ("rejected", "sim_inactive")
    assert reason is not None
    assert "the SIM is telematics_deactivated" in reason
    assert "only a provisioning file that reactivates it is applied" in reason
    assert manager.entitlements.version == 1
    await manager.receive(signed(KEY, VIN, 3, clock.now(), LEGAL, PAID, TELESERVICES))
    assert _results(harness)[-1][0] == "applied"
    assert (manager.entitlements.sim, manager.entitlements.running) == (SimState.ACTIVE, {"6AE", "6AK"})


async def test_a_deactivated_sim_is_reactivated_only_by_a_file_that_says_so(
    state_file: Path, clock: ManualClock
) -> None:
    harness = Harness(state_file, clock, legal=False)
    manager = harness.manager
    await manager.receive(signed(KEY, VIN, 1, clock.now(), TELESERVICES, sim="deactivated"))
    assert manager.entitlements.sim is SimState.FULLY_DEACTIVATED
    await manager.receive(signed(KEY, VIN, 2, clock.now(), TELESERVICES, PAID, sim="deactivated"))
    assert _results(harness)[-1][:2] == ("rejected", "sim_inactive")
    await manager.receive(signed(KEY, VIN, 3, clock.now(), TELESERVICES))
    assert _results(harness)[-1][0] == "applied"
    assert manager.entitlements.sim is SimState.ACTIVE


async def test_a_remote_measure_is_refused_while_the_sim_is_not_active(tmp_path: Path, clock: ManualClock) -> None:
    bench = await Bench(tmp_path, clock).start()
    file = ProvisioningFile(vin=VIN, version=1, issued=clock.now(), expires=clock.now(), bookings=(LEGAL,))
    entitlements = derive(file, legal_ecall_equipped=True, now=clock.now())
    bench.engine = MeasureEngine(
        vin=VIN,
        verify_key=KEY.verify_key,
        ecu=bench.ecu,
        journal=MeasureJournal(tmp_path / "gated.cbor"),
        state=bench.state,
        clock=clock,
        report=bench.reports.append,
        coverage=lambda: True,
        ecall_active=lambda: False,
        sim_inactive=entitlements.inactive_reason,
    )
    before = bench.ecu.snapshot()
    result = await bench.run(bench.order())
    assert (result["status"], result["code"], result["attempt"]) == ("rejected", "sim_inactive", 1)
    assert str(result["reason"]).startswith("no remote measure: SIM is telematics_deactivated")
    assert bench.ecu.snapshot() == before
    assert bench.engine.idle


@pytest.mark.parametrize(
    ("kind", "body", "sent"),
    [
        (RecordKind.ECALL, {"type": "ecall_started"}, True),
        (RecordKind.EVENT, {"type": "provisioning_result"}, True),
        (RecordKind.EVENT, {"type": "capabilities"}, True),
        (RecordKind.EVENT, {"type": "measure_result"}, True),
        (RecordKind.EVENT, {"type": "queue_overflow"}, True),
        (RecordKind.EVENT, {"type": "owner_change"}, True),  # the backend must delete the seller's data
        (RecordKind.EVENT, {"type": "vin_mismatch"}, False),
        (RecordKind.EVENT, {"type": "door_opened"}, False),
        (RecordKind.EVENT, {}, False),
        (RecordKind.TELEMETRY, {"signals": {}}, False),
    ],
)
def test_only_ecall_records_and_answers_go_up_without_an_active_sim(
    kind: RecordKind, body: dict[str, object], sent: bool
) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    record = Record(kind=kind, created=now, body=body)
    inactive = ProvisioningFile(vin=VIN, version=1, issued=now, expires=now, bookings=(LEGAL,))
    active = ProvisioningFile(vin=VIN, version=1, issued=now, expires=now, bookings=(LEGAL, TELESERVICES))
    assert uplink_refusal(record, derive(active, legal_ecall_equipped=True, now=now)) is None
    refusal = uplink_refusal(record, derive(inactive, legal_ecall_equipped=True, now=now))
    assert (refusal is None) is sent
    if refusal is not None:
        assert "SIM is telematics_deactivated" in refusal


def _vin_reading(agent: Agent, value: str) -> Signal:
    path = "Vehicle.VehicleIdentification.VIN"
    return Signal(path=path, value=value, timestamp=agent.clock.now(), source="obd")


async def test_the_agent_sends_nothing_collected_while_its_sim_is_deactivated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """require_services is off (the default): the SIM gates all the same, and the report tells the truth."""
    bench = BenchLayout(root=tmp_path, broker_url="mqtt://127.0.0.1:1")
    bench.create_backend()
    bench.add_vehicle(VIN)
    backend_key: SigningKey = load_signing_key(bench.keys / "backend.ed25519.key")
    agent = Agent(load_agent_config(bench.agent_config(VIN), env={}))
    assert not agent.config.telemetry.require_services
    box_keys = (load_private_key(bench.keys / "backend.x25519.key"), load_public_key(bench.keys / f"{VIN}.x25519.pub"))
    from nacl.public import Box  # noqa: PLC0415

    box = Box(*box_keys)
    now = agent.clock.now()
    async with agent.outbox:
        agent.services.load()
        agent.state.update(Signal(path="Vehicle.Speed", value=50.0, timestamp=now, source="test"))
        await agent.services.receive(signed(backend_key, VIN, 1, now, TELESERVICES, sim="deactivated"))
        assert agent.sim.state is SimState.FULLY_DEACTIVATED
        agent.state.update(_vin_reading(agent, "WBA3A5C51CF256985"))  # a vin_mismatch event: not collected
        agent.queue_record(Record(kind=RecordKind.EVENT, created=now, body={"type": "door_opened"}))  # nor sent
        assert await agent.telemetry.take() is None  # nothing collected
        await agent.services.receive(signed(backend_key, VIN, 2, now, TELESERVICES, PAID, sim="deactivated"))
        bodies = [open_record(box, q.envelope, topic_vin=VIN).body for q in await agent.outbox.next_batch(100)]
        assert agent.status()["services"]["sim"] == "fully_deactivated"
    types = [body.get("type") for body in bodies]
    assert "vin_mismatch" not in types
    assert "door_opened" not in types
    results = [(b["version"], b["status"], b["code"]) for b in bodies if b.get("type") == "provisioning_result"]
    assert results == [(1, "applied", None), (2, "rejected", "sim_inactive")]
    report = [b for b in bodies if b.get("type") == "capabilities"][-1]
    assert report["sim"] == "fully_deactivated"
    speed = report["categories"]["position"]
    assert speed["transmitted"] is False
    assert speed["interval_s"] is None
    assert speed["reason"].startswith("SIM is fully_deactivated: the provisioning file deactivates the SIM (AGB 6.1)")
    assert "door_opened not sent: SIM is fully_deactivated" in caplog.text
