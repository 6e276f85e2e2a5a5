"""NG eCall (EN 17184, RFC 8147): the 112 eCall as an IMS emergency call over SIP, beside the circuit-switched one.

    transport.py      choose_transport: CS or NG for a dial attempt, from the configuration and the network
    sip_transport.py  the vehicle's SIP user agent on UDP: transactions (RFC 3261 timers), rport, dialogs
    rtp.py            the voice: a PCMU RTP stream both ways, counted
    ng_modem.py       NgEcallModem: the `EcallModem` the eCall service drives, carried over SIP
    dual_modem.py     TransportModem: the CS modem and NgEcallModem behind one `EcallModem`, choosing per dial

The state machine (`tcu.ecall.state_machine`) decides as for the CS eCall; this package only carries.
The SIP messages and bodies are `telematics_wire.sip` (shared with the PSAP).
"""
