"""The NG eCall checks (hil.ng_ecall_checks) on crafted evidence: each passes on what a good run leaves
behind and fails, saying why, when the call went the wrong way — so the three NG scenarios can fail."""

from __future__ import annotations

import contextlib
import sqlite3
from types import SimpleNamespace
from typing import Any

import pytest

from backend_stub.psap import PsapCall
from backend_stub.psap_ng import NgCall, PsapNg
from hil.scenario import parse_scenario
from tcu.errors import ConfigError
from telematics_wire.records import RecordKind
from tests.conftest import VIN
from tests.hil.evidence_builder import START, BenchRecords, assert_fails, ms

TRANSPORT_NG = 'check = "ecall_transport"\ntransport = "ng"\ntried = ["ng"]\n'


def vehicle_report(records: BenchRecords, at_s: float, body: dict[str, Any]) -> None:
    records._add(RecordKind.ECALL, at_s, at_s + 0.5, body)  # the builder has no public way in for these


def psap_row(records: BenchRecords, *, transport: str, identifier: int, at_s: float, error: str | None = None) -> None:
    with contextlib.closing(sqlite3.connect(records.backend.config.database)) as db, db:
        db.execute(
            "INSERT INTO psap_msds (call_id, received_ms, kind, message_identifier, vin, raw_hex, error, transport)"
            " VALUES (1, ?, 'automatic', ?, ?, '00', ?, ?)",
            (ms(at_s), identifier, VIN, error, transport),
        )


def psap_call(records: BenchRecords, transport: str, events: list[str], *, ended_by: str | None = "psap") -> Any:
    """The emergency call on that PSAP's books; NG calls with 300 RTP packets each way."""
    timeline = [(float(index), name) for index, name in enumerate(["call", "connected", *events])]
    if transport == "ng":
        if records.backend.psap_ng is None:
            records.backend.psap_ng = PsapNg()  # never started: its calls are only read
        call: Any = NgCall(id=1, kind="automatic", callback="sip:ivs@127.0.0.1", started=START, timeline=timeline)
        call.voice = SimpleNamespace(sent=300, received=300)
        records.backend.psap_ng.calls.append(call)
    else:
        assert records.backend.psap is not None
        call = PsapCall(id=1, kind="automatic", callback=None, started=START, timeline=timeline)
        records.backend.psap.calls.append(call)
    call.ended_by = ended_by
    return call


def good_ng_call(records: BenchRecords, *, resent: bool = False) -> Any:
    """What ng_ecall_crash (or, `resent`, ng_ecall_msd_resend) leaves behind."""
    records.ecall("triggered", 10.0, 11.0)
    vehicle_report(records, 10.0, {"event": "transport", "transport": "ng", "reason": "IMS emergency offered"})
    records.ecall("call_established", 10.1, 11.0, started_s=10.0)
    records.ecall("msd_acknowledged", 10.2, 11.0, started_s=10.0)
    psap_row(records, transport="ng", identifier=1, at_s=10.1)
    acks = ["msd", "al-ack positive"]
    if resent:
        psap_row(records, transport="ng", identifier=2, at_s=13.1)
        acks += ["request msd", "msd", "al-ack positive"]
    records.ecall("cleared", 20.2, 21.0, started_s=10.0, reason="PSAP cleared down")
    vehicle_report(
        records,
        20.2,
        {
            "event": "ng_call_ended",
            "role": "uac",
            "reason": "the PSAP cleared down (BYE)",
            "msds_sent": 2 if resent else 1,
            "rtp_sent": 300,
            "rtp_received": 300,
        },
    )
    return psap_call(records, "ng", [*acks, "ended by psap"])


def test_an_ng_call_that_went_well_passes_every_ng_check(records: BenchRecords) -> None:
    good_ng_call(records, resent=True)
    for expect in (
        TRANSPORT_NG,
        'check = "ng_voice"\nmin_packets = 250\n',
        'check = "cleared_by_psap"\n',
        'check = "msd_resent"\ncount = 2\n',
    ):
        result = records.check(expect)
        assert result.passed, result


def test_ecall_transport_fails_when_the_msd_came_the_other_way(records: BenchRecords) -> None:
    records.ecall("triggered", 10.0, 11.0)
    records.ecall("msd_acknowledged", 13.0, 14.0, started_s=10.0)
    vehicle_report(records, 10.0, {"event": "transport", "transport": "cs", "reason": "no IMS"})
    psap_row(records, transport="cs", identifier=1, at_s=12.0)
    psap_call(records, "cs", ["msd", "al-ack positive"])
    result = records.check(TRANSPORT_NG)
    assert_fails(result, "the MSD came over cs, not ng")
    assert "the vehicle tried cs, expected ng" in result.detail


def test_ecall_transport_fails_without_the_psaps_ack_or_the_vehicles(records: BenchRecords) -> None:
    records.ecall("triggered", 10.0, 11.0)
    vehicle_report(records, 10.0, {"event": "transport", "transport": "ng", "reason": "IMS emergency offered"})
    psap_row(records, transport="ng", identifier=1, at_s=10.1)
    psap_call(records, "ng", ["msd", "ack received=false"], ended_by=None)
    result = records.check(TRANSPORT_NG)
    assert_fails(result, "the PSAP never acknowledged it")
    assert "the vehicle never saw its MSD acknowledged" in result.detail


def test_ecall_transport_fails_when_both_psaps_took_the_emergency(records: BenchRecords) -> None:
    good_ng_call(records)
    psap_call(records, "cs", ["msd"])
    assert_fails(records.check(TRANSPORT_NG), "the cs PSAP took 1 emergency call(s) too")


def test_ecall_transport_names_a_fallback_the_scenario_did_not_expect(records: BenchRecords) -> None:
    records.ecall("triggered", 10.0, 11.0)
    records.ecall("msd_acknowledged", 13.0, 14.0, started_s=10.0)
    for transport in ("ng", "cs"):
        vehicle_report(records, 10.0, {"event": "transport", "transport": transport, "reason": "?"})
    psap_row(records, transport="cs", identifier=1, at_s=12.0)
    psap_call(records, "cs", ["msd", "al-ack positive"])
    assert_fails(records.check('check = "ecall_transport"\ntransport = "cs"\ntried = ["cs"]\n'), "tried ng→cs")
    assert records.check('check = "ecall_transport"\ntransport = "cs"\ntried = ["ng", "cs"]\n').passed


def test_ng_voice_fails_when_rtp_flowed_one_way_only_or_counts_do_not_add_up(records: BenchRecords) -> None:
    call = good_ng_call(records)
    call.voice = SimpleNamespace(sent=0, received=300)
    result = records.check('check = "ng_voice"\n')
    assert_fails(result, "PSAP sent 0 < 25")
    assert "one end counted more packets than the other sent" in result.detail


def test_ng_voice_fails_without_an_ng_call(records: BenchRecords) -> None:
    assert_fails(records.check('check = "ng_voice"\n'), "0 NG emergency call(s) at the PSAP")


@pytest.mark.parametrize(
    ("ended_by", "vehicle_reason", "found"),
    [
        ("ivs", "PSAP cleared down", "ended by ivs"),
        ("psap", "T2: clear-down fallback after 3600 s", "the vehicle cleared it by 'T2"),
        ("psap", "ended in the vehicle: hung up", "the vehicle cleared it by 'ended in the vehicle"),
    ],
)
def test_cleared_by_psap_fails_when_anyone_else_ended_the_call(
    records: BenchRecords, ended_by: str, vehicle_reason: str, found: str
) -> None:
    records.ecall("triggered", 10.0, 11.0)
    records.ecall("cleared", 20.0, 21.0, started_s=10.0, reason=vehicle_reason)
    psap_row(records, transport="cs", identifier=1, at_s=12.0)
    psap_call(records, "cs", ["msd", "al-ack positive"], ended_by=ended_by)
    assert_fails(records.check('check = "cleared_by_psap"\n'), found)


def test_msd_resent_fails_on_a_repeated_identifier_a_missing_ack_or_no_resend(records: BenchRecords) -> None:
    call = good_ng_call(records)
    assert_fails(records.check('check = "msd_resent"\n'), "1 MSD(s), expected 2")
    psap_row(records, transport="ng", identifier=1, at_s=13.1)  # the same identifier again: not a fresh MSD
    result = records.check('check = "msd_resent"\n')
    assert_fails(result, "message identifiers [1, 1] do not count up by one")
    assert "1 acknowledgement(s) for 2 MSDs" in result.detail
    call.timeline.append((9.0, "al-ack positive"))
    assert_fails(records.check('check = "msd_resent"\n'), "do not count up by one")


def test_wrong_arguments_are_said_not_guessed(records: BenchRecords) -> None:
    result = records.check('check = "ecall_transport"\ntransport = "5g"\n')
    assert result.errored
    assert "expected one of cs, ng" in result.detail


def test_a_scenario_names_a_network_the_modem_simulator_knows() -> None:
    head = 'name = "t"\nduration_s = 40\n'
    assert parse_scenario(head + 'network = "lte_only"\n').network == "lte_only"
    assert parse_scenario(head).network == "legacy_only"  # today's bench: 2G/3G, the CS eCall
    with pytest.raises(ConfigError, match="network = '5g'"):
        parse_scenario(head + 'network = "5g"\n')
    with pytest.raises(ConfigError, match="offer = 'none'"):
        parse_scenario(head + '[[step]]\nat = 1\ndo = "network"\noffer = "none"\n')
