from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cbor2
import pytest

from tcu.errors import ProfileRefusedError
from tcu.services.personal import DriverProfile, PersonalData, PersonalStore, SecurityCode
from telematics_wire.catalogue import Category

PROFILES = (
    DriverProfile(name="Anna", seat_position=4, mirror_position=2, climate_c=20.5, radio_presets=("BR24", "FM4")),
    DriverProfile(name="Ben", seat_position=7),
)


async def test_personal_data_round_trips_byte_for_byte(tmp_path: Path) -> None:
    store = PersonalStore(tmp_path / "personal.cbor")
    data = replace(
        PersonalData(profiles=PROFILES, paired_accounts=("anna@example.org",)),
        consents={**PersonalData().consents, Category.POSITION: False},
    )
    await store.save(data)
    snapshot = store.snapshot()
    reloaded = PersonalStore(tmp_path / "personal.cbor")
    assert reloaded.load() == data
    assert reloaded.snapshot() == snapshot
    assert not reloaded.data.allows(Category.POSITION)


def test_at_most_three_profiles() -> None:
    with pytest.raises(ValueError, match="at most 3 driver profiles"):
        PersonalData(profiles=(*PROFILES, *PROFILES))


async def test_owner_change_wipes_personal_data_and_says_what(tmp_path: Path) -> None:
    store = PersonalStore(tmp_path / "personal.cbor")
    await store.save(
        PersonalData(profiles=PROFILES, paired_accounts=("anna@example.org",)).with_consent(Category.POSITION, False)
    )
    report = await store.owner_change()
    assert report["wiped"] == {
        "driver_profiles": 2,
        "paired_accounts": 1,
        "consents_reset": True,
        "security_code": False,
    }
    assert "legal eCall" in report["kept"]
    wiped = PersonalStore(tmp_path / "personal.cbor").load()
    assert wiped == PersonalData(owner=1)  # nothing personal; only the count of owners moved


async def test_a_change_by_another_process_is_seen(tmp_path: Path) -> None:
    running = PersonalStore(tmp_path / "personal.cbor")
    running.load()
    await PersonalStore(tmp_path / "personal.cbor").save(PersonalData().with_consent(Category.ENVIRONMENT, False))
    assert not running.current().allows(Category.ENVIRONMENT)


def test_unreadable_file_starts_clean(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "personal.cbor").write_bytes(b"\xff\xff")
    assert PersonalStore(tmp_path / "personal.cbor").load() == PersonalData()
    assert "unreadable" in caplog.text


ACCOUNT = "anna@example.org"


def test_a_driver_profile_needs_a_paired_account() -> None:
    with pytest.raises(ProfileRefusedError, match="needs a paired ConnectedDrive account"):
        PersonalData().with_profile(PROFILES[0])
    paired = PersonalData(paired_accounts=(ACCOUNT,))
    three = paired.with_profile(PROFILES[0]).with_profile(PROFILES[1]).with_profile(DriverProfile(name="Cem"))
    assert [p.name for p in three.profiles] == ["Anna", "Ben", "Cem"]
    with pytest.raises(ProfileRefusedError, match="at most 3 driver profiles"):
        three.with_profile(DriverProfile(name="Dora"))
    with pytest.raises(ProfileRefusedError, match="exists"):
        paired.with_profile(PROFILES[0]).with_profile(PROFILES[0])


async def test_owner_change_wipes_everything_personal_including_a_code_on_display(tmp_path: Path) -> None:
    store = PersonalStore(tmp_path / "personal.cbor")
    code = SecurityCode(code="12345678", account=ACCOUNT, expires_ms=2_000_000_000_000)
    before = replace(
        PersonalData(paired_accounts=(ACCOUNT,)).with_profile(PROFILES[0]).with_consent(Category.POSITION, False),
        security_code=code,
        messages_seen=7,
    )
    await store.save(before)
    report = await store.owner_change()
    assert report["wiped"]["security_code"] is True
    after = PersonalStore(tmp_path / "personal.cbor").load()
    # Every field that is personal is back to its default; the technical counters carry over.
    assert (after.profiles, after.paired_accounts, after.security_code) == ((), (), None)
    assert all(after.allows(c) for c in Category)
    assert (after.owner, after.messages_seen) == (1, 7)
    assert b"Anna" not in (tmp_path / "personal.cbor").read_bytes()
    assert ACCOUNT.encode() not in (tmp_path / "personal.cbor").read_bytes()


def test_files_written_before_the_counters_still_load(tmp_path: Path) -> None:
    path = tmp_path / "personal.cbor"
    path.write_bytes(cbor2.dumps({"profiles": [], "consents": {"position": False}, "accounts": [ACCOUNT]}))
    data = PersonalStore(path).load()
    assert data.paired_accounts == (ACCOUNT,)
    assert (data.owner, data.messages_seen, data.security_code) == (0, 0, None)


@pytest.mark.parametrize("raw", [[], {"profiles": [], "consents": {}, "accounts": [], "owner": True}, {"owner": 2**64}])
def test_unreadable_personal_data_starts_clean(tmp_path: Path, raw: object) -> None:
    path = tmp_path / "personal.cbor"
    path.write_bytes(cbor2.dumps(raw))
    assert PersonalStore(path).load() == PersonalData()
