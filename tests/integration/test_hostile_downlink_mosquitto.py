"""Poison on a car's downlink through a real Mosquitto: one rejection each, no restart, no loop.

Retained messages are the hard case: the broker hands them over on every subscription, so a message
that restarted the session would restart it forever. A second vehicle's records keep flowing and both
queues are audited at the end.
"""

from __future__ import annotations

import os

import aiomqtt
import cbor2
import pytest
from nacl.public import Box

from backend_stub.store import BackendStore
from hil.audit import audit_vehicle
from hil.broker import MosquittoBroker
from hil.layout import BenchLayout
from telematics_wire.keys import load_private_key, load_public_key
from tests.conftest import OTHER_VIN, VIN, eventually
from tests.integration.conftest import FAST_UPLINK, running_agent, vehicle_config

BIGNUM = 10**5000
pytestmark = pytest.mark.mosquitto


def _cose(protected: object, payload: bytes = b"{}") -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, [protected, {}, payload, bytes(64)]))


def _sealed_ack(box: Box, content: dict[str, object], **clear: object) -> bytes:
    nonce = os.urandom(24)
    sealed = box.encrypt(cbor2.dumps(content), nonce).ciphertext
    return cbor2.dumps({"v": 1, "vin": VIN, **clear, "nonce": nonce, "box": sealed})


async def test_retained_and_sealed_poison_is_one_rejection_each_while_another_car_keeps_flowing(
    layout: BenchLayout, backend_store: BackendStore, mosquitto: MosquittoBroker
) -> None:
    other = layout.add_vehicle(OTHER_VIN, telemetry_interval_s=0.05, uplink=FAST_UPLINK)
    config = vehicle_config(layout, interval_s=0.05)
    # Acks sealed with the backend's real key but hostile inside: the car trusts the key, not the content.
    backend_box = Box(
        load_private_key(layout.keys / "backend.x25519.key"), load_public_key(layout.keys / f"{VIN}.x25519.pub")
    )
    poison = {
        # Unsigned COSE whose protected header is a bignum: once restarted telematics every 5 s.
        f"vehicles/{VIN}/down/provisioning": _cose(cbor2.dumps(BIGNUM)),
        f"vehicles/{VIN}/down/measure": _cose(BIGNUM),
    }
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="attacker") as attacker:
        for topic, payload in poison.items():
            await attacker.publish(topic, payload, qos=1, retain=True)
    async with running_agent(other) as second, running_agent(config) as agent:
        await eventually(lambda: len(backend_store.seqs(VIN)) >= 5, what="records of the attacked car")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="attacker") as attacker:
            await attacker.publish(f"vehicles/{VIN}/down/ack", cbor2.dumps({"v": BIGNUM, "vin": VIN}), qos=1)
            await attacker.publish(f"vehicles/{VIN}/down/ack", cbor2.dumps({"v": 1, "vin": BIGNUM}), qos=1)
            await attacker.publish(f"vehicles/{VIN}/down/ack", b"\xa2\x61v\x01\x61v\x01", qos=1)  # duplicate key
            await attacker.publish(f"vehicles/{VIN}/down/ack", cbor2.dumps({"v": True, "vin": VIN}), qos=1)
            for acks in ([[1, 2**64]], [[BIGNUM, BIGNUM]], [[n, n] for n in range(1, 2000)]):
                await attacker.publish(f"vehicles/{VIN}/down/ack", _sealed_ack(backend_box, {"vin": VIN, "acks": acks}))
        await eventually(lambda: agent.session.stats.rejected_downlink >= 7, what="forged acks rejected")
        target = len(backend_store.seqs(VIN)) + 20
        await eventually(lambda: len(backend_store.seqs(VIN)) >= target, what="the attacked car still sending")
        assert agent.session.stats.connects == 1, "the poison must not restart the session"
        assert second.session.stats.connects == 1
        provisioning_results = [
            r for r in backend_store.records(VIN, kind="event") if r.body.get("type") == "provisioning_result"
        ]
        assert len(provisioning_results) == 1, "one answer to the retained poison, not one per resubscription"
        assert provisioning_results[0].body.get("status") == "rejected"
        for car in (agent, second):
            car.telemetry.enabled = False
        await eventually(lambda: agent.outbox.stats().depth == 0 and second.outbox.stats().depth == 0, what="drained")
        issued = {VIN: agent.outbox.stats().next_seq - 1, OTHER_VIN: second.outbox.stats().next_seq - 1}
    for vin, last in issued.items():
        audit = audit_vehicle(backend_store, vin, issued_through=last)
        assert audit.ok, audit.describe()
        assert audit.stored == last
