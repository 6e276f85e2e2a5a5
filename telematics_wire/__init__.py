"""The TCU ↔ backend wire protocol (docs/protocol.md): what the car and the backend share and nothing else.

Codecs and schemas only: envelopes, records, topics, COSE, provisioning files and the service catalogue,
remote-measure orders and the ECU key table, account messages, the EN 15722 MSD, key files, and the NG
eCall's SIP messages (`sip/`) and RTP packets (`rtp.py`). It imports
neither the agent (`tcu`) nor the backend (`backend_stub`), and neither of those imports the other's
runtime or configuration (tests/test_layers.py).
"""
