"""Vehicle → backend: sealed CBOR envelopes, the durable queue, the MQTT session."""
