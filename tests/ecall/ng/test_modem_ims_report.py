"""The modem tells whether the network supports IMS emergency calls (3GPP TS 27.007 `AT+CNEM`, `+CNEMS1`),
which is what TransportModem reads to choose NG or CS; a modem without the command still carries CS eCall."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tcu.sources.modem_client import ModemClient, ModemClientConfig, ModemEvent, ModemStatus
from tests.sources.scripted_modem import ScriptedModem, loop_until


@pytest.fixture
async def running() -> AsyncIterator[tuple[ScriptedModem, ModemClient, list[ModemEvent]]]:
    modem, events = ScriptedModem(), list[ModemEvent]()
    modem.answers["AT+CNEM?"] = ["+CNEM: 1,0,1", "OK"]
    client = ModemClient(
        ModemClientConfig(port="scripted", report_ims_emergency=True), on_event=events.append, opener=modem.open
    )
    task = asyncio.create_task(client.run())
    try:
        yield modem, client, events
    finally:
        task.cancel()


def statuses(events: list[ModemEvent]) -> list[ModemStatus]:
    return [event for event in events if isinstance(event, ModemStatus)]


async def test_init_enables_the_report_and_reads_the_support(
    running: tuple[ScriptedModem, ModemClient, list[ModemEvent]],
) -> None:
    modem, client, events = running
    await loop_until(lambda: client.ready, "modem ready")
    assert modem.sent.index("AT+CNEM=1") < modem.sent.index("AT+CNEM?") < modem.sent.index("AT+COPS=0")
    assert statuses(events)[-1].ims_emergency is True
    modem.urc("+CNEMS1: 0")  # the network moved: no IMS emergency support here
    await loop_until(lambda: statuses(events)[-1].ims_emergency is False, "+CNEMS1: 0 reported")
    modem.urc("+CNEMS1: 1")
    await loop_until(lambda: statuses(events)[-1].ims_emergency is True, "+CNEMS1: 1 reported")
    modem.urc("+CNEMS1: 1" + "1" * 5000)  # longer than any modem line: garbage, changes nothing
    modem.urc("+CNEMS1: 11111111111")  # a value 27.007 does not define: no support
    await loop_until(lambda: statuses(events)[-1].ims_emergency is False, "an undefined value is no support")
    assert client.garbage_lines == 1


async def test_a_modem_without_cnem_initialises_and_offers_cs_only() -> None:
    modem, events = ScriptedModem(), list[ModemEvent]()
    modem.answers["AT+CNEM=1"] = ["ERROR"]
    client = ModemClient(
        ModemClientConfig(port="scripted", report_ims_emergency=True), on_event=events.append, opener=modem.open
    )
    task = asyncio.create_task(client.run())
    try:
        await loop_until(lambda: client.ready, "modem ready")
        assert "AT+CNEM?" not in modem.sent
        assert statuses(events)[-1].ims_emergency is False
    finally:
        task.cancel()


async def test_the_cs_only_configuration_sends_no_cnem() -> None:
    modem = ScriptedModem()
    client = ModemClient(ModemClientConfig(port="scripted"), on_event=lambda event: None, opener=modem.open)
    task = asyncio.create_task(client.run())
    try:
        await loop_until(lambda: client.ready, "modem ready")
        assert not [command for command in modem.sent if command.startswith("AT+CNEM")]
    finally:
        task.cancel()
