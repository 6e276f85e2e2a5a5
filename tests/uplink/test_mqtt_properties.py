"""tcu.uplink.mqtt_client shares paho's MQTT 5 property tables between the Properties it decodes: what a
received packet's properties hold must stay exactly what paho's own class decodes."""

from __future__ import annotations

from paho.mqtt import _packet as paho_packets
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import tcu.uplink.mqtt_client  # noqa: F401 - installs the shared tables

_PUBLISH_QOS1 = 0x32


def _publish_packet(properties: Properties, payload: bytes) -> bytes:
    topic = b"vehicles/WMWZZZ3CZ2E123456/down/measure"
    return len(topic).to_bytes(2, "big") + topic + (7).to_bytes(2, "big") + properties.pack() + payload


def _decode_with(cls: type[Properties], packet: bytes) -> paho_packets.PublishPacket:
    installed = paho_packets.Properties  # type: ignore[attr-defined]
    paho_packets.Properties = cls  # type: ignore[attr-defined]
    try:
        return paho_packets.decode_publish(_PUBLISH_QOS1, packet, MQTTProtocolVersion.MQTTv5)
    finally:
        paho_packets.Properties = installed  # type: ignore[attr-defined]


def test_received_properties_decode_as_paho_decodes_them() -> None:
    sent = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    sent.MessageExpiryInterval = 30
    sent.ContentType = "application/cose"
    sent.UserProperty = [("a", "1"), ("b", "2")]
    packet = _publish_packet(sent, b"payload")

    ours = paho_packets.decode_publish(_PUBLISH_QOS1, packet, MQTTProtocolVersion.MQTTv5)
    theirs = _decode_with(Properties, packet)

    assert ours.properties is not None
    assert theirs.properties is not None
    assert type(ours.properties) is not Properties  # the shared-table class is what paho now decodes into
    assert isinstance(ours.properties, Properties)
    assert ours.properties.json() == theirs.properties.json() == sent.json()  # type: ignore[no-untyped-call]
    assert ours.properties.pack() == theirs.properties.pack()  # type: ignore[no-untyped-call]
    assert str(ours.properties) == str(theirs.properties)
    assert ours.payload == theirs.payload == b"payload"


def test_a_packet_without_properties_decodes_to_empty_properties() -> None:
    packet = _publish_packet(Properties(PacketTypes.PUBLISH), b"x")  # type: ignore[no-untyped-call]
    ours = paho_packets.decode_publish(_PUBLISH_QOS1, packet, MQTTProtocolVersion.MQTTv5)
    assert ours.properties is not None
    assert ours.properties.isEmpty()  # type: ignore[no-untyped-call]
    ours.properties.clear()  # type: ignore[no-untyped-call]
    ours.properties.ContentType = "text/plain"  # validated against the shared tables, as paho does
    assert ours.properties.json() == {"ContentType": "text/plain"}  # type: ignore[no-untyped-call]
