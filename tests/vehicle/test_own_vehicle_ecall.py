"""End to end: an enumerated 3-bit crash signal of a custom DBC, decoded from CAN frames, makes the eCall
through the real service, AT modem simulator and PSAP stub, and its MSD arrives."""

from __future__ import annotations

from pathlib import Path

from tcu.ecall.config import EcallConfig
from tcu.ecall.state_machine import EcallState
from tcu.sources.slcan import CanFrame, SlcanStream, format_frame
from tcu.sources.slcan_signals import CanSignalDecoder
from tests.conftest import VIN
from tests.ecall.test_service import ecall_rig
from tests.vehicle.test_can_mapping import DBC, MAPPING, acu

RULES = {
    "port": "x",
    "trigger": [
        {
            "kind": "crash",
            "signal": "ACU_01.CrashType",
            "values": ["FRONT", "SIDE", "REAR", "ROLLOVER"],
            "invalid": ["SNA"],
        }
    ],
}


async def test_an_enumerated_crash_signal_reaches_the_psap(tmp_path: Path) -> None:
    (tmp_path / "car.dbc").write_text(DBC)
    (tmp_path / "car.toml").write_text(MAPPING)
    rules = EcallConfig.from_table(RULES).triggers
    decoder = CanSignalDecoder.from_files(tmp_path / "car.toml", dbc_paths=[tmp_path / "car.dbc"], triggers=rules)
    async with ecall_rig(tmp_path) as rig:
        stream = SlcanStream()

        def bus(crash_raw: int) -> None:  # adapter bytes → frames → signals, as SlcanReader.handle does
            for frame in stream.feed(format_frame(CanFrame(can_id=100, data=acu(crash_raw)))):
                assert isinstance(frame, CanFrame)
                rig.state.update_many(decoder.decode(frame, rig.clock.now(), rig.clock.monotonic()))

        bus(0)  # NO_CRASH
        bus(7)  # SNA: not available, never a trigger
        assert rig.service.state is EcallState.IDLE
        bus(4)  # ROLLOVER: a value that is neither True nor 1-bit
        received = await rig.psap.wait_for_msd()
        assert received.msd is not None
        assert received.msd.vin == VIN
        assert received.msd.automatic_activation is True
        assert received.msd.test_call is False
