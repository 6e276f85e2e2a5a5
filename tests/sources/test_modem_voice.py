"""A plain voice call (the intelligent emergency call) through the modem client and the modem simulator on a
real pty, to the call-centre stub on the simulated telephone network."""

from __future__ import annotations

import pytest

from backend_stub.call_centre import CallCentreBehaviour, CallCentreStub
from tcu.errors import ModemCommandError
from tcu.sources.modem import PROFILES, AtParser, CallStatus, Urc
from tcu.sources.modem_client import ModemCallEnded, ModemCallStatus
from tests.conftest import eventually
from tests.sources.test_modem_client import Bench, bench

NUMBER = "+498912345678"


def statuses(b: Bench) -> list[CallStatus]:
    return [e.status for e in b.events if isinstance(e, ModemCallStatus)]


@pytest.mark.parametrize("profile", sorted(PROFILES))
async def test_a_voice_call_reports_its_progress_and_its_end(tmp_path, profile: str) -> None:  # type: ignore[no-untyped-def]
    centre = CallCentreStub(behaviour=CallCentreBehaviour(answer_delay_s=0.2))
    await centre.start()
    try:
        async with bench(tmp_path, profile=profile, numbers={NUMBER: centre.address}) as b:
            await b.ready()
            await b.client.voice_dial(NUMBER)
            await eventually(lambda: CallStatus.ACTIVE in statuses(b), what="answered")
            assert statuses(b) == [CallStatus.DIALLING, CallStatus.ALERTING, CallStatus.ACTIVE]
            enable = PROFILES[profile].call_status_enable
            assert b.modem.requests[-2:] == [enable, f"ATD{NUMBER};"], "progress reports switched on first"
            await centre.clear_down()
            await eventually(lambda: any(isinstance(e, ModemCallEnded) for e in b.events), what="NO CARRIER")
            await b.client.voice_dial(NUMBER)
            await centre.wait_for(lambda: len(centre.calls) == 2, what="second call")
            assert b.modem.requests.count(enable) == 1, "once per connection"
    finally:
        await centre.close()


async def test_an_unknown_number_ends_with_no_carrier(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with bench(tmp_path) as b:
        await b.ready()
        await b.client.voice_dial("+4930999999")
        await eventually(lambda: any(isinstance(e, ModemCallEnded) for e in b.events), what="NO CARRIER")
        assert CallStatus.ACTIVE not in statuses(b)


async def test_a_number_that_is_no_dial_string_never_reaches_the_modem(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with bench(tmp_path) as b:
        await b.ready()
        with pytest.raises(ModemCommandError, match="not a dial string"):
            await b.client.voice_dial("+49;ATH")
        assert not any(r.startswith("ATD") for r in b.modem.requests)


def test_a_call_status_urc_is_told_apart_from_the_answer_to_another_command() -> None:
    parser = AtParser()
    parser.command("AT+CREG?")
    parsed = parser.feed(b'\r\n+CLCC: 1,0,0,0,0,"+498912345678",145\r\n+CREG: 1,1\r\nOK\r\n')
    assert parsed[0] == Urc(name="+CLCC", value='1,0,0,0,0,"+498912345678",145')
    assert PROFILES["simcom"].call_status(parsed[0]) is CallStatus.ACTIVE
    assert PROFILES["simcom"].call_status(Urc(name="+CLCC", value="1,0,99999999999")) is CallStatus.UNKNOWN
    assert PROFILES["simcom"].call_status(Urc(name="+CLCC", value="")) is None
