"""Which call a call's end belongs to: the line order of the modem's output decides, never the owner's timing.

The modem releases a call (writing its NO CARRIER) before it accepts the next dial, so an end read before
a dial's OK belongs to an earlier call. For `ATD…;` the same words are also the dial's final result codes
(V.250): while an earlier call's end is still outstanding, the first one is that call's, not the dial's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcu.errors import ModemCommandError
from tcu.sources.modem import AtParser, EcallType, Garbage, Parsed, Response, Urc
from tcu.sources.modem_client import ModemCallEnded, ModemClient, ModemClientConfig, ModemEvent
from tests.sources.scripted_modem import ScriptedModem, loop_until

NUMBER = "+498900000000"
VOICE_DIAL = f"ATD{NUMBER};"


def lines(*texts: str) -> bytes:
    return b"".join(b"\r\n" + text.encode("ascii") + b"\r\n" for text in texts)


def parse_in_chunks(parser: AtParser, data: bytes, cuts: list[int]) -> list[Parsed]:
    out: list[Parsed] = []
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True):
        out.extend(parser.feed(data[start:end]))
    return out


@settings(max_examples=300, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(lines("NO CARRIER", "NO CARRIER", "OK"))), max_size=6))
def test_an_earlier_calls_end_crossing_atd_is_a_urc_however_the_bytes_arrive(cuts: list[int]) -> None:
    parser = AtParser()
    parser.command(VOICE_DIAL, call_up=True)
    # The earlier call's end, then this dial failing at once: the second NO CARRIER is the dial's own.
    parsed = parse_in_chunks(parser, lines("NO CARRIER", "NO CARRIER", "OK"), cuts)
    assert parsed[:2] == [Urc(name="NO CARRIER"), Response(command=VOICE_DIAL, final="NO CARRIER")]
    assert isinstance(parsed[2], Garbage), "an OK with nothing in flight is never an answer"


def test_without_an_earlier_call_no_carrier_is_the_dials_own_result() -> None:
    parser = AtParser()
    parser.command(VOICE_DIAL)
    assert parser.feed(lines("NO CARRIER")) == [Response(command=VOICE_DIAL, final="NO CARRIER")]
    parser.command(VOICE_DIAL, call_up=True)
    assert parser.feed(lines("OK")) == [Response(command=VOICE_DIAL, final="OK")]
    parser.command(VOICE_DIAL)  # the flag was for that one command only
    assert parser.feed(lines("BUSY")) == [Response(command=VOICE_DIAL, final="BUSY")]


@contextlib.asynccontextmanager
async def scripted() -> AsyncIterator[tuple[ModemClient, ScriptedModem, list[ModemEvent]]]:
    modem, events = ScriptedModem(), list[ModemEvent]()
    client = ModemClient(ModemClientConfig(port="scripted"), on_event=events.append, opener=modem.open)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(client.run(), name="modem-client")
        try:
            await loop_until(lambda: client.ready, "the modem initialised")
            yield client, modem, events
        finally:
            task.cancel()


def ended(events: list[ModemEvent]) -> list[tuple[str, int]]:
    return [(event.reason, event.call) for event in events if isinstance(event, ModemCallEnded)]


async def test_the_previous_calls_no_carrier_crossing_a_voice_dial_does_not_fail_it() -> None:
    async with scripted() as (client, modem, events):
        await client.dial(EcallType.AUTOMATIC)
        assert client.calls == 1
        modem.crossing[VOICE_DIAL] = ["NO CARRIER"]  # call 1 released as the dial reached the modem
        await client.voice_dial(NUMBER)
        assert client.calls == 2, "the dial was accepted, not failed by call 1's end"
        assert ended(events) == [("NO CARRIER", 1)], "reported as the end of call 1"
        modem.urc("NO CARRIER")
        assert ended(events)[-1] == ("NO CARRIER", 2), "the voice call's own end, after its OK"
        assert client.garbage_lines == 0, "the dial's OK was taken as its answer, nothing left over"


@pytest.mark.parametrize("before", ["no call before", "an earlier call hung up with ATH"])
async def test_a_voice_dial_failing_at_once_still_fails(before: str) -> None:
    async with scripted() as (client, modem, events):
        if before != "no call before":
            await client.dial(EcallType.AUTOMATIC)
            await client.hang_up()  # V.250 H: OK and no NO CARRIER, so none is outstanding
        modem.answers[VOICE_DIAL] = ["NO CARRIER"]
        with pytest.raises(ModemCommandError, match="NO CARRIER"):
            await client.voice_dial(NUMBER)
        assert ended(events) == []
        assert client.calls == (0 if before == "no call before" else 1)


async def test_an_end_read_before_the_dials_ok_carries_the_earlier_calls_number() -> None:
    async with scripted() as (client, modem, events):
        await client.dial(EcallType.AUTOMATIC)
        modem.crossing["AT+CECALL=3"] = ["+CECALLIND: 6", "NO CARRIER"]  # call 1 cleared down and released
        await client.dial(EcallType.AUTOMATIC)
        modem.urc("NO CARRIER")
        assert ended(events) == [("NO CARRIER", 1), ("NO CARRIER", 2)]
        modem.urc("RDY")  # a reset ends the call up now
        assert ended(events)[-1] == ("modem restarted", 2)
