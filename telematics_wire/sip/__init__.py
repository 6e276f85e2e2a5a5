"""SIP and NG-eCall wire formats (RFC 3261, RFC 8147, RFC 7852, RFC 4119/5491, RFC 2046, RFC 4566), sans I/O.

The vehicle's SIP user agent (`tcu.ecall.ng`) and the PSAP's NG side (`backend_stub.psap_ng`) share these;
neither sends a byte through this package. Every decoder is total: any bytes become a value or `SipError`
(`telematics_wire.errors`) with the reason.

- `message.py`      `SipRequest`, `SipResponse`, `parse_message` (one UDP datagram, Content-Length, size
                     caps), `response_to`; re-exports `SipHeaders`
- `headers.py`      `SipHeaders`: ordered, case-insensitive, compact forms, list headers split
- `dialog.py`       `new_call_id`, `new_tag`, `new_branch`; `Via`, `CSeq`, `NameAddr` (From/To/Contact),
                     `SipUri` with their parse_/format pairs
- `call_dialog.py`  `Dialog` (§12): `dialog_as_caller`, `dialog_as_callee`, in-dialog ACK/INFO/BYE with the
                     route set a record-routing proxy leaves, `next_hop()`
- `header_syntax.py` tokens, quoted strings, `;params`, comma lists, media types
- `multipart.py`    `BodyPart`, `build_multipart`, `parse_multipart` (binary parts bit for bit)
- `ecall_body.py`   RFC 8147 URNs, media types, Call-Info purpose, INFO package; control block
                     `build_control_ack`, `build_control_request_msd`, `parse_control` -> `ControlAck|ControlRequest`
- `pidf_lo.py`      `Location`, `build_pidf_lo`, `parse_pidf_lo` (gml:Point, gs:Circle)
- `sdp.py`          `AudioSession`, `build_sdp`, `parse_sdp`: one PCMU stream, ptime 20
- `ecall_invite.py` `build_ecall_invite`, `read_ecall_invite` -> `EcallInvite`; answer, INFO and control helpers
- `xml_guard.py`    defusedxml parsing with size and depth bounds
"""
