"""The vehicle's service manager: apply, persist, report, defer during an eCall, survive power cuts."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from tcu.clock import ManualClock
from tcu.services.manager import ServiceManager
from telematics_wire.catalogue import Catalogue
from telematics_wire.entitlements import Entitlements
from telematics_wire.records import Record
from telematics_wire.sim_state import SimState
from telematics_wire.terms import Term
from tests.conftest import VIN
from tests.services.provisioning_helpers import booking, signed

KEY = SigningKey(bytes(range(32)))


class Harness:
    def __init__(self, path: Path, clock: ManualClock, *, legal: bool = False) -> None:
        self.reports: list[Record] = []
        self.changes: list[Entitlements] = []
        self.ecall = False
        self.manager = ServiceManager(
            vin=VIN,
            state_file=path,
            verify_key=KEY.verify_key,
            legal_ecall=legal,
            clock=clock,
            catalogue=Catalogue.load(),
            report=self.reports.append,
            on_change=self.changes.append,
            ecall_active=lambda: self.ecall,
        )
        self.manager.load()

    def results(self) -> list[tuple[str, int | None, str | None]]:
        return [
            (r.body["status"], r.body["version"], r.body["code"])
            for r in self.reports
            if r.body["type"] == "provisioning_result"
        ]


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    return tmp_path / "provisioning.cose"


async def test_applied_file_is_persisted_reported_and_survives_restart(state_file: Path, clock: ManualClock) -> None:
    harness = Harness(state_file, clock)
    await harness.manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AE"), booking("6AM")))
    assert harness.results() == [("applied", 1, None)]
    assert harness.manager.entitlements.running == {"6AE", "6AM"}
    assert harness.changes[-1].running == {"6AE", "6AM"}
    restarted = Harness(state_file, clock)
    assert restarted.manager.entitlements.running == {"6AE", "6AM"}
    assert restarted.manager.entitlements.version == 1


async def test_rejections_are_reported_with_code_and_leave_the_state_alone(
    state_file: Path, clock: ManualClock
) -> None:
    harness = Harness(state_file, clock)
    await harness.manager.receive(signed(KEY, VIN, 2, clock.now(), booking("6AE")))
    await harness.manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AP")))  # older
    await harness.manager.receive(signed(SigningKey.generate(), VIN, 3, clock.now(), booking("6AP")))  # forged
    await harness.manager.receive(b"\x00garbage")
    assert harness.results() == [
        ("applied", 2, None),
        ("rejected", 1, "old_version"),  # signed and readable: the version is named
        ("rejected", None, "bad_signature"),
        ("rejected", None, "malformed"),
    ]
    assert all(r.body["reason"] for r in harness.reports[1:] if r.body["type"] == "provisioning_result")
    assert harness.manager.entitlements.running == {"6AE"}


async def test_redelivery_of_the_applied_file_is_acknowledged_again(state_file: Path, clock: ManualClock) -> None:
    harness = Harness(state_file, clock)
    message = signed(KEY, VIN, 1, clock.now(), booking("6AE"))
    await harness.manager.receive(message)
    await harness.manager.receive(message)
    assert harness.results() == [("applied", 1, None), ("already_applied", 1, None)]


async def test_file_arriving_during_an_ecall_is_applied_after_it(state_file: Path, clock: ManualClock) -> None:
    harness = Harness(state_file, clock)
    harness.ecall = True
    await harness.manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AE")))
    assert harness.results() == [("deferred", None, None)]
    assert harness.manager.entitlements.running == frozenset()
    harness.ecall = False
    await harness.manager.ecall_ended()
    assert harness.results()[-1] == ("applied", 1, None)
    assert harness.manager.entitlements.running == {"6AE"}


async def test_term_ending_is_noticed_without_a_new_file(state_file: Path, clock: ManualClock) -> None:
    harness = Harness(state_file, clock)
    await harness.manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AE", Term.MONTHS_3)))
    assert harness.manager.entitlements.sim is SimState.ACTIVE
    clock.advance(timedelta(days=120).total_seconds())
    harness.manager.refresh()  # what the periodic tick does
    assert harness.manager.entitlements.running == frozenset()
    assert harness.changes[-1].sim is SimState.FULLY_DEACTIVATED


def test_a_stored_file_that_no_longer_verifies_is_not_trusted(state_file: Path, clock: ManualClock) -> None:
    asyncio.run(Harness(state_file, clock).manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AE"))))
    state_file.write_bytes(state_file.read_bytes()[:-5])
    assert Harness(state_file, clock, legal=True).manager.entitlements.running == frozenset()


async def test_legal_ecall_survives_every_contract_change(state_file: Path, clock: ManualClock) -> None:
    harness = Harness(state_file, clock, legal=True)
    legal = booking("6AF", Term.UNLIMITED)
    files = [
        signed(KEY, VIN, 1, clock.now(), legal, booking("6AE"), booking("6AC")),
        signed(KEY, VIN, 2, clock.now(), legal),  # Teleservices and intelligent eCall ended
        # Payment default leaves the free, unlimited Teleservices running: the SIM is active again.
        signed(KEY, VIN, 3, clock.now(), legal, booking("6AE", Term.UNLIMITED), suspended=frozenset({"6AE"})),
        signed(KEY, VIN, 4, clock.now(), booking("6AE")),  # tries to remove legal eCall
        signed(KEY, VIN, 5, clock.now(), legal, sim="deactivated"),  # tries to kill the SIM
    ]
    for message in files:
        await harness.manager.receive(message)
        entitlements = harness.manager.entitlements
        assert entitlements.legal_ecall
        assert entitlements.sim is not SimState.FULLY_DEACTIVATED
    assert [status for status, _, _ in harness.results()] == ["applied", "applied", "applied", "rejected", "rejected"]


_APPLY_AND_DIE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from pathlib import Path
    from nacl.signing import SigningKey
    from datetime import UTC, datetime
    from tcu.clock import ManualClock
    from telematics_wire.catalogue import Catalogue
    from tcu.services.manager import ServiceManager

    path, kill_at, message = Path(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
    def hook(step):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    manager = ServiceManager(vin=sys.argv[4], state_file=path, verify_key=SigningKey(bytes(range(32))).verify_key,
                             legal_ecall=False, clock=ManualClock(datetime(2026, 11, 23, 10, tzinfo=UTC)),
                             catalogue=Catalogue.load(), report=lambda record: None, step_hook=hook)
    manager.load()
    asyncio.run(manager.receive(message))
    """
)


@pytest.mark.parametrize(("kill_at", "expected_version"), [("verified", 1), ("written", 2), ("reported", 2)])
def test_power_cut_during_apply_leaves_the_old_or_the_new_file(
    state_file: Path, clock: ManualClock, kill_at: str, expected_version: int
) -> None:
    asyncio.run(Harness(state_file, clock).manager.receive(signed(KEY, VIN, 1, clock.now(), booking("6AE"))))
    second = signed(KEY, VIN, 2, clock.now(), booking("6AE"), booking("6AM"))
    process = subprocess.run(
        [sys.executable, "-c", _APPLY_AND_DIE, str(state_file), kill_at, second.hex(), VIN],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr.decode()
    after = Harness(state_file, clock)
    assert after.manager.entitlements.version == expected_version
    assert after.manager.entitlements.running == ({"6AE"} if expected_version == 1 else {"6AE", "6AM"})
    assert [p.name for p in state_file.parent.iterdir() if p.name.endswith(".tmp")] in ([], [".provisioning.cose.tmp"])
    # The backend re-delivers the file it has no result for; the vehicle converges either way.
    asyncio.run(after.manager.receive(second))
    assert after.results()[-1][0] == ("applied" if expected_version == 1 else "already_applied")
