"""Virtual time: one clock for the processes of a HIL bench, faster than real time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from tcu.clock import SystemClock
from tcu.errors import ConfigError
from tcu.virtual_time import (
    VirtualClock,
    VirtualTime,
    VirtualTimeLoop,
    io_timeout,
    real_seconds,
    silence_limit,
    virtual_or_real_clock,
)

WALL = datetime(2031, 5, 17, 8, 0, tzinfo=UTC)


def _on_loop(base: VirtualTime, coroutine_factory):  # type: ignore[no-untyped-def]
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(base)) as runner:
        return runner.run(coroutine_factory())


SCALE = 600.0
# A VirtualTimeLoop fires a timer at or after its virtual deadline, late by the real delay before the
# process runs again times the scale. 30 ms of a loaded machine's delay is 18 virtual s here: less than
# the shortest deadline below (20 s), so a timer firing at twice its deadline fails, as does a loop that
# waits out its longest select (50 ms real, 30 virtual s) instead of its next timer.
LATE_S = SCALE * 0.030
ATTEMPTS = 3  # timers late only because the machine stalled the test: tried again, a real fault fails every time


def _timers_once() -> tuple[float, list[tuple[str, float, float]]]:
    """A minute of sleeps, a timeout and a call_later: (real seconds taken, [(what, virtual deadline,
    virtual time it fired)]), in the order they fired."""
    base = VirtualTime.starting_now(SCALE, wall=WALL)

    async def scenario() -> list[tuple[str, float, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float, float]] = []
        start = loop.time()
        loop.call_later(30, lambda: fired.append(("call_later 30", start + 30, loop.time())))
        await asyncio.sleep(20)
        fired.append(("slept 20", start + 20, loop.time()))
        waiting = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(40):
                await asyncio.Event().wait()
        fired.append(("timed out 40 later", waiting + 40, loop.time()))
        return fired

    real_start = time.monotonic()
    fired = _on_loop(base, scenario)
    return time.monotonic() - real_start, fired


def test_every_timer_of_the_process_fires_at_its_virtual_deadline() -> None:
    """At 600 times real time a virtual minute takes a tenth of a real second (an ordinary loop would
    take 60 s); each timer fires in order, never before its deadline, and late by no more than a loaded
    machine's scheduling delay at that scale."""
    for _ in range(ATTEMPTS):
        real_s, fired = _timers_once()
        assert [what for what, _, _ in fired] == ["slept 20", "call_later 30", "timed out 40 later"]
        early = [f"{what} at {at:.3f} s" for what, deadline, at in fired if at < deadline]
        assert not early, f"fired before the deadline: {early}"
        late = [f"{what} {at - deadline:.1f} s late" for what, deadline, at in fired if at >= deadline + LATE_S]
        if not late:
            break
    assert not late, f"late by more than {LATE_S:g} virtual s in {ATTEMPTS} runs: {late}"
    assert real_s < 30, f"a virtual minute took {real_s:.1f} real seconds"


def test_the_wall_clock_runs_with_the_loop_and_the_calendar_moves_alone() -> None:
    base = VirtualTime.starting_now(100.0, wall=WALL)
    clock = VirtualClock(base)

    async def scenario() -> tuple[datetime, datetime, float, float]:
        loop = asyncio.get_running_loop()
        before, mono_before = clock.now(), loop.time()
        await asyncio.sleep(50)
        after = clock.now()
        clock.advance_calendar(timedelta(weeks=7).total_seconds())
        return before, after, mono_before, loop.time() - mono_before

    before, after, _, waited = _on_loop(base, scenario)
    assert before >= WALL
    assert (after - before).total_seconds() >= 50
    assert waited >= 50
    moved = clock.now() - after
    assert timedelta(weeks=7) <= moved < timedelta(weeks=7, minutes=10)  # the calendar jumped ...
    assert clock.monotonic() < 50 + 100 * 5  # ... while the monotonic clock did not
    with pytest.raises(ConfigError, match="only moves forward"):
        clock.advance_calendar(-1)


def test_another_process_reads_the_same_time_from_the_environment() -> None:
    """The agent process of a bench (`tcu run --virtual-time`): its wall time lies between the runner's before and
    after it ran."""
    base = VirtualTime.starting_now(50.0, wall=WALL)
    clock = VirtualClock(base)
    clock.advance_calendar(86400 * 30)
    child = (
        "import sys; from tcu.virtual_time import virtual_or_real_clock; "
        "print(virtual_or_real_clock(sys.argv[1]).now().isoformat())"
    )
    before = clock.now()
    out = subprocess.run(
        [sys.executable, "-c", child, clock.base.encode()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = clock.now()
    assert before <= datetime.fromisoformat(out.strip()) <= after
    assert isinstance(virtual_or_real_clock(None), SystemClock)


def test_real_seconds_scales_timeouts_for_what_keeps_real_time() -> None:
    async def scale_on_loop() -> float:
        return real_seconds(15)

    assert _on_loop(VirtualTime.starting_now(8.0), scale_on_loop) == 120
    assert asyncio.run(scale_on_loop()) == 15  # an ordinary loop: real time


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "is not JSON"),
        ("[]", "expected an object"),
        (json.dumps({"scale": 2}), "expected an object with the keys"),
        (
            '{"scale": NaN, "origin_real": 1, "origin_wall": "2030-01-01T00:00:00+00:00", "calendar_offset_s": 0}',
            "scale",
        ),
        (
            '{"scale": true, "origin_real": 1, "origin_wall": "2030-01-01T00:00:00+00:00", "calendar_offset_s": 0}',
            "scale",
        ),
        ('{"scale": 0, "origin_real": 1, "origin_wall": "2030-01-01T00:00:00+00:00", "calendar_offset_s": 0}', "scale"),
        (
            '{"scale": 1e9, "origin_real": 1, "origin_wall": "2030-01-01T00:00:00+00:00", "calendar_offset_s": 0}',
            "scale",
        ),
        ('{"scale": 2, "origin_real": 1, "origin_wall": "tomorrow", "calendar_offset_s": 0}', "origin_wall"),
        ('{"scale": 2, "origin_real": 1, "origin_wall": "2030-01-01T00:00:00", "calendar_offset_s": 0}', "timezone"),
        (
            '{"scale": 2, "origin_real": 1, "origin_wall": "2030-01-01T00:00:00+00:00", "calendar_offset_s": 1e300}',
            "calendar",
        ),
    ],
)
def test_a_mangled_environment_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        virtual_or_real_clock(text)


def test_round_trip_through_the_environment() -> None:
    base = VirtualTime(scale=12.5, origin_real=1234.5, origin_wall=WALL, calendar_offset_s=3600.0)
    assert VirtualTime.decode(base.encode()) == base


def test_a_service_on_virtual_time_logs_on_the_bench_s_time_axis() -> None:
    """`tcu run` under a bench: an hour of virtual time passes in seconds, and the log says it was an hour."""
    service = (
        "import asyncio, logging\n"
        "from tcu.runner import configure_logging, run_service\n"
        "from tcu.virtual_time import VirtualTime, VirtualClock\n"
        "from datetime import UTC, datetime\n"
        "configure_logging('info')\n"
        "clock = VirtualClock(VirtualTime.starting_now(2000.0, wall=datetime(2031, 5, 17, 8, 0, tzinfo=UTC)))\n"
        "async def main():\n"
        "    logging.getLogger('svc').info('start')\n"
        "    await asyncio.sleep(3600)\n"
        "    logging.getLogger('svc').info('an hour later')\n"
        "run_service(main(), clock=clock)\n"
    )
    log = subprocess.run(
        [sys.executable, "-c", service], capture_output=True, text=True, check=True, timeout=60
    ).stderr.splitlines()
    start = next(line for line in log if line.endswith("svc: start"))
    later = next(line for line in log if line.endswith("svc: an hour later"))
    assert start.startswith("2031-05-17 08:00")
    assert later.startswith("2031-05-17 09:00")


def test_waits_on_other_processes_never_drop_below_real_time() -> None:
    """At 100x a 5 s AT command timeout would be 50 real ms, less than a loaded machine's stall: it keeps
    its 5 virtual seconds only where that is at least the real floor; on real time nothing changes."""

    async def waits() -> tuple[float, float, float]:
        return io_timeout(5.0), io_timeout(120.0), silence_limit(2.0)

    assert _on_loop(VirtualTime.starting_now(100.0), waits) == (50.0, 120.0, 25.0)
    assert asyncio.run(waits()) == (5.0, 120.0, 2.0)
