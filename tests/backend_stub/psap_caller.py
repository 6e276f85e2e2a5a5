"""An IVS on the simulated 112 network, for tests of the PSAP stub: a valid MSD and a call to send it on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from backend_stub.psap import PsapStub
from telematics_wire.msd import Msd, VehicleType, encode
from tests.conftest import VIN

MSD = encode(
    Msd(
        automatic_activation=True,
        test_call=False,
        position_can_be_trusted=True,
        vehicle_type=VehicleType.M1,
        vin=VIN,
        latitude_mas=173_160_000,
        longitude_mas=41_400_000,
    )
)


async def lines(reader: asyncio.StreamReader, count: int) -> list[str]:
    """The PSAP's next `count` lines."""
    async with asyncio.timeout(5):
        return [(await reader.readline()).decode("ascii").strip() for _ in range(count)]


@asynccontextmanager
async def emergency_call(psap: PsapStub) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """An automatic eCall the PSAP has answered and asked the MSD of; hung up on exit."""
    reader, writer = await asyncio.open_connection(*psap.address)
    try:
        writer.write(b"CALL automatic -\n")
        assert await lines(reader, 2) == ["CONNECTED", "SEND-MSD"]
        yield reader, writer
    finally:
        writer.write(b"HANGUP\n")
        writer.close()
        await writer.wait_closed()


async def send_msd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> list[str]:
    """Send `MSD`; the PSAP's two acks."""
    writer.write(f"MSD {MSD.hex()}\n".encode("ascii"))
    return await lines(reader, 2)
