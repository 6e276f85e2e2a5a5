"""TLS, credentials and per-vehicle ACLs on a real Mosquitto."""

from __future__ import annotations

import gc
from pathlib import Path

import aiomqtt
import pytest
from nacl.public import Box

from hil.broker import MosquittoBroker
from hil.fixtures.backend import bench_backend
from hil.layout import BenchLayout
from telematics_wire.envelope import seal_record
from telematics_wire.keys import load_private_key, load_public_key
from telematics_wire.records import Record, RecordKind
from tests.conftest import OTHER_VIN, VIN, eventually, require_mosquitto
from tests.integration.certificates import make_tls_files
from tests.integration.conftest import FAST_UPLINK, running_agent


async def test_records_flow_over_tls_with_a_pinned_ca(tmp_path: Path) -> None:
    require_mosquitto()
    tls = make_tls_files(tmp_path / "tls")
    async with MosquittoBroker(tmp_path / "broker", tls=tls) as broker:
        assert broker.url.startswith("mqtts://")
        layout = BenchLayout(root=tmp_path / "bench", broker_url=broker.url)
        layout.create_backend()
        ca = f'ca_file = "{tls.ca_file}"\n'
        layout.backend_config.write_text(layout.backend_config.read_text() + ca)
        config = layout.add_vehicle(VIN, telemetry_interval_s=0.05, uplink=FAST_UPLINK)
        config.write_text(config.read_text().replace('protocol = "5"\n', 'protocol = "5"\n' + ca))
        async with bench_backend(layout.backend_config) as backend, running_agent(config) as agent:
            await eventually(lambda: len(backend.store.seqs(VIN)) >= 5, what="records over TLS")
            assert agent.session.stats.connected


# paho-mqtt 2.2 does not close the SSLSocket when do_handshake() fails (client.py, _ssl_wrap_socket);
# the garbage collector closes it. Collected inside this test so the warning cannot land elsewhere.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_agent_without_the_ca_refuses_the_server(tmp_path: Path) -> None:
    require_mosquitto()
    tls = make_tls_files(tmp_path / "tls")
    async with MosquittoBroker(tmp_path / "broker", tls=tls) as broker:
        layout = BenchLayout(root=tmp_path / "bench", broker_url=broker.url)
        layout.create_backend()
        config = layout.add_vehicle(VIN, telemetry_interval_s=0.05, uplink=FAST_UPLINK)
        async with running_agent(config) as agent:
            await eventually(lambda: agent.session.stats.last_error is not None, what="TLS failure")
            assert "CERTIFICATE_VERIFY_FAILED" in (agent.session.stats.last_error or "")
            assert agent.session.stats.connects == 0
    gc.collect()


async def test_per_vehicle_acl_confines_each_car_to_its_own_topics(tmp_path: Path) -> None:
    require_mosquitto()
    users = {VIN: "pw-1", OTHER_VIN: "pw-2", "backend-stub": "pw-backend"}
    async with MosquittoBroker(tmp_path / "broker", users=users, acl_per_vehicle=True) as broker:
        BenchLayout(root=tmp_path / "bench", broker_url=broker.backend_url).create_backend(
            username="backend-stub", password="pw-backend"
        )
        layout = BenchLayout(root=tmp_path / "bench", broker_url=broker.url)
        config = layout.add_vehicle(VIN, telemetry_interval_s=0.05, uplink=FAST_UPLINK, username=VIN, password="pw-1")
        async with bench_backend(layout.backend_config) as backend, running_agent(config) as agent:
            await eventually(lambda: len(backend.store.seqs(VIN)) >= 3, what="own topics allowed")
            # Another vehicle with valid credentials publishes a record into this car's subtree.
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username=OTHER_VIN, password="pw-2", identifier="intruder"
            ) as intruder:
                # Sealed with this car's real key: only the broker's ACL can keep it out.
                box = Box(
                    load_private_key(layout.keys / f"{VIN}.x25519.key"),
                    load_public_key(layout.keys / "backend.x25519.pub"),
                )
                record = Record(kind=RecordKind.EVENT, created=agent.clock.now(), body={"type": "intrusion"})
                forged = seal_record(box, VIN, 10**6, record)
                await intruder.publish(f"vehicles/{VIN}/up/records", forged, qos=1)
                await intruder.subscribe(f"vehicles/{VIN}/down/#", qos=1)
                await intruder.publish(f"vehicles/{OTHER_VIN}/up/status", b"", qos=1)  # its own: allowed
            target = len(backend.store.seqs(VIN)) + 5
            await eventually(lambda: len(backend.store.seqs(VIN)) >= target, what="more records")
            assert 10**6 not in backend.store.seqs(VIN)
            assert backend.store.rejections() == []  # the broker dropped it before the backend
