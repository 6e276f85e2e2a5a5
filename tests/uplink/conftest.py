"""Fixtures shared by the queue's tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nacl.public import Box

from telematics_wire.envelope import seal_record
from telematics_wire.records import Record
from tests.conftest import VIN


@pytest.fixture
def sealer(vehicle_box: Box) -> Callable[[int, Record, bytes], bytes]:
    """Seals as the agent does; a record whose body says `unsealable` fails on the writer thread."""

    def seal(seq: int, record: Record, epoch: bytes) -> bytes:
        if record.body.get("unsealable"):
            raise ValueError("this record cannot be sealed")
        return seal_record(vehicle_box, VIN, seq, record, epoch=epoch)

    return seal
