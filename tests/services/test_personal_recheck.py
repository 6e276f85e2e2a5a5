"""`PersonalStore.current` looks at the file once per snapshot, and still sees another process's change."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

from tcu.services.personal import RECHECK_S, PersonalData, PersonalStore
from telematics_wire.catalogue import Category


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_calls_within_a_snapshot_share_one_look_at_the_file(tmp_path: Path) -> None:
    path = tmp_path / "personal.cbor"
    await PersonalStore(path).save(PersonalData())
    clock = _Clock()
    store = PersonalStore(path, monotonic=clock)
    store.load()
    with mock.patch.object(Path, "stat", autospec=True, side_effect=Path.stat) as stat:
        for _ in range(4):  # one per data category, as DataPolicy asks
            store.current()
    assert stat.call_count == 1


async def test_a_change_by_another_process_counts_once_the_window_passed(tmp_path: Path) -> None:
    path = tmp_path / "personal.cbor"
    await PersonalStore(path).save(PersonalData())
    clock = _Clock()
    store = PersonalStore(path, monotonic=clock)
    store.load()
    assert store.current().allows(Category.POSITION)
    # `tcu privacy` in another process: its own store, its own atomic write.
    revoked = PersonalData(consents={**PersonalData().consents, Category.POSITION: False})
    await PersonalStore(path).save(revoked)
    clock.now += RECHECK_S
    assert not store.current().allows(Category.POSITION)


async def test_a_save_in_this_process_is_in_force_at_once(tmp_path: Path) -> None:
    clock = _Clock()
    store = PersonalStore(tmp_path / "personal.cbor", monotonic=clock)
    assert store.current().allows(Category.POSITION)
    await store.save(PersonalData(consents={**PersonalData().consents, Category.POSITION: False}))
    assert not store.current().allows(Category.POSITION)  # same instant: no look at the file needed
