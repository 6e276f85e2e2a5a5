"""A CS fall-back queued for a failed NG attempt and a hang-up from the vehicle (tcu.ecall.ng.dual_modem):
a manual or test call the user cancelled is not dialled over CS afterwards; an automatic call's fall-back
is dialled all the same (only the PSAP clears an automatic eCall).

The fall-back task is started only after the hang-up, so the queued fall-back is deterministically still
waiting when the hang-up comes (in the field: while the CS leg is busy with an earlier dial)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NoReturn

from tcu.ecall.config import NgConfig
from tcu.ecall.ng.dual_modem import TransportModem
from tcu.ecall.ng.ng_modem import NgEcallModem
from tcu.ecall.ng.transport import EcallTransport, NetworkOffer
from tcu.sources.modem import EcallType
from tcu.sources.modem_client import ModemCallEnded, ModemEvent
from tests.conftest import VIN, eventually, running_task
from tests.ecall.ng.test_cannot_be_deactivated_ng import FakeCsModem


class FailingNg(NgEcallModem):
    """The NG leg, its INVITE refused: `fail()` reports the dial's end as the real leg does for a 503."""

    def __init__(self, on_event: Callable[[ModemEvent], None]) -> None:
        super().__init__(NgConfig(), vin=VIN, on_event=on_event)
        self._report_event = on_event

    async def run(self) -> NoReturn:  # type: ignore[override]
        await asyncio.Event().wait()
        raise AssertionError("never")

    async def dial(self, ecall_type: EcallType) -> None:
        self.calls += 1

    async def hang_up(self) -> None:
        pass

    def fail(self) -> None:
        self._report_event(ModemCallEnded(reason="NG eCall: SIP 503 Service Unavailable", call=self.calls))


def dual_modem() -> tuple[TransportModem, FakeCsModem, FailingNg]:
    legs: list[FakeCsModem] = []

    def cs(on_event: Callable[[ModemEvent], None]) -> FakeCsModem:
        legs.append(FakeCsModem(on_event=on_event, legacy=True))
        return legs[0]

    modem = TransportModem(lambda event: None, configured=EcallTransport.AUTO, cs=cs, ng=FailingNg)
    modem.offer = NetworkOffer(ims_emergency=True, legacy_cs=True)  # NG first, CS to fall back on
    assert isinstance(modem.ng, FailingNg)
    return modem, legs[0], modem.ng


async def failed_over_ng(modem: TransportModem, ng: FailingNg, ecall_type: EcallType) -> None:
    await modem.dial(ecall_type)
    ng.fail()  # queued for CS


async def test_a_cancelled_manual_call_is_not_dialled_over_cs_after_its_ng_attempt_failed() -> None:
    modem, cs, ng = dual_modem()
    await failed_over_ng(modem, ng, EcallType.MANUAL)
    await modem.hang_up()  # the occupant cancels while the fall-back waits
    await failed_over_ng(modem, ng, EcallType.TEST)
    await modem.hang_up()
    await failed_over_ng(modem, ng, EcallType.AUTOMATIC)  # a later crash: queued behind them (FIFO)
    async with running_task(modem.run(), name="ecall-modem"):
        await eventually(lambda: EcallType.AUTOMATIC in cs.dials, what="the automatic call's fall-back")
    assert cs.dials == [EcallType.AUTOMATIC]


async def test_an_automatic_calls_fall_back_survives_a_hang_up_from_the_vehicle() -> None:
    modem, cs, ng = dual_modem()
    await failed_over_ng(modem, ng, EcallType.AUTOMATIC)
    await modem.hang_up()
    async with running_task(modem.run(), name="ecall-modem"):
        await eventually(lambda: bool(cs.dials), what="the CS fall-back")
    assert cs.dials == [EcallType.AUTOMATIC]
