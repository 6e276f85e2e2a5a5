"""Per-frame warnings are bounded: a bad frame repeated at bus rate is one line, then a count."""

from __future__ import annotations

import logging

import pytest

from tcu.sources.log_limit import LogLimit


def test_a_frame_that_never_decodes_is_logged_once_not_at_bus_rate(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.log_limit")
    limit = LogLimit(logger)
    with caplog.at_level(logging.WARNING, logger="test.log_limit"):
        for _ in range(2500):
            limit.warning(("decode", 0x123), "skipped frame 0x%X: too short", 0x123)
        limit.warning(("decode", 0x124), "skipped frame 0x%X: too short", 0x124)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "skipped frame 0x123: too short",
        "skipped frame 0x123: too short (1000 times so far)",
        "skipped frame 0x123: too short (2000 times so far)",
        "skipped frame 0x124: too short",
    ]
