"""Fixtures of the HIL tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hil.evidence_builder import BenchRecords, bench_records


@pytest.fixture
def records(tmp_path: Path) -> Iterator[BenchRecords]:
    """A real backend to fill with what a run would have left behind."""
    with bench_records(tmp_path / "bench") as built:
        yield built
