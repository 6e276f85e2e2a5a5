from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tcu.services.catalogue import Category
from tcu.services.personal import DriverProfile, PersonalData, PersonalStore

PROFILES = (
    DriverProfile(name="Anna", seat_position=4, mirror_position=2, climate_c=20.5, radio_presets=("BR24", "FM4")),
    DriverProfile(name="Ben", seat_position=7),
)


def test_personal_data_round_trips_byte_for_byte(tmp_path: Path) -> None:
    store = PersonalStore(tmp_path / "personal.cbor")
    data = replace(
        PersonalData(profiles=PROFILES, paired_accounts=("anna@example.org",)),
        consents={**PersonalData().consents, Category.POSITION: False},
    )
    store.save(data)
    snapshot = store.snapshot()
    reloaded = PersonalStore(tmp_path / "personal.cbor")
    assert reloaded.load() == data
    assert reloaded.snapshot() == snapshot
    assert not reloaded.data.allows(Category.POSITION)


def test_snapshot_restore_is_exact(tmp_path: Path) -> None:
    store = PersonalStore(tmp_path / "personal.cbor")
    store.save(PersonalData(profiles=PROFILES))
    snapshot = store.snapshot()
    store.save(PersonalData())
    store.restore(snapshot)
    assert (tmp_path / "personal.cbor").read_bytes() == snapshot


def test_at_most_three_profiles() -> None:
    with pytest.raises(ValueError, match="at most 3 driver profiles"):
        PersonalData(profiles=(*PROFILES, *PROFILES))


def test_owner_change_wipes_personal_data_and_says_what(tmp_path: Path) -> None:
    store = PersonalStore(tmp_path / "personal.cbor")
    store.save(
        PersonalData(profiles=PROFILES, paired_accounts=("anna@example.org",)).with_consent(Category.POSITION, False)
    )
    report = store.owner_change()
    assert report["wiped"] == {"driver_profiles": 2, "paired_accounts": 1, "consents_reset": True}
    assert "legal eCall" in report["kept"]
    assert PersonalStore(tmp_path / "personal.cbor").load() == PersonalData()


def test_a_change_by_another_process_is_seen(tmp_path: Path) -> None:
    running = PersonalStore(tmp_path / "personal.cbor")
    running.load()
    PersonalStore(tmp_path / "personal.cbor").save(PersonalData().with_consent(Category.ENVIRONMENT, False))
    assert not running.current().allows(Category.ENVIRONMENT)


def test_unreadable_file_starts_clean(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "personal.cbor").write_bytes(b"\xff\xff")
    assert PersonalStore(tmp_path / "personal.cbor").load() == PersonalData()
    assert "unreadable" in caplog.text
