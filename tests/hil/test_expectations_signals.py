"""The precise signal checks (hil.signal_checks) on a real backend store filled with what a commute run
leaves behind: each passes on the right data and fails on one mutation of it (value wrong, edge missing,
range left, latency too high), naming the measured value and the limit."""

from __future__ import annotations

import pytest

from tests.hil.evidence_builder import BenchRecords, assert_fails

DOOR = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
LOCK = "Vehicle.Body.CentralLock.State"
SPEED = "Vehicle.Speed"


def commute(
    records: BenchRecords,
    *,
    door_reported: bool = True,
    close_at: float = 6.0,
    lock_received_after_s: float = 0.05,
    speed_spike: float | None = None,
    tunnel: tuple[float, float] | None = None,
) -> None:
    """Snapshots once a second; the door opened at 3 s and closed at `close_at`; unlocked at 2 s, locked at 36 s."""
    records.step(2, "unlock")
    records.step(3, "open_door", door="FrontLeft")
    records.step(close_at, "close_door", door="FrontLeft")
    records.step(36, "lock")
    for second in range(1, 41):
        t = float(second)
        door = door_reported and 3.02 <= t < close_at + 0.02  # as the door events say
        lock = "UNLOCKED" if 2 <= t < 36 else "LOCKED"
        speed = min(t * 2.0, 50.0) if speed_spike is None or second != 20 else speed_spike
        received = t + 0.05
        if tunnel is not None and tunnel[0] <= t < tunnel[1]:
            received = tunnel[1] + 1.0 + (t - tunnel[0]) * 0.01  # the backlog, sent after coverage is back
        elif t >= 36:
            received = t + lock_received_after_s
        records.telemetry(t, received, {DOOR: door, LOCK: lock, SPEED: speed})
    if door_reported:
        records.door_event(DOOR, True, changed_s=3.02, received_s=4.06)
        records.door_event(DOOR, False, changed_s=close_at + 0.02, received_s=close_at + 1.06)


# -- signal_value ----------------------------------------------------------------------------------


def test_signal_value_at_a_time_passes_on_the_right_value_and_fails_on_a_wrong_one(records: BenchRecords) -> None:
    commute(records)
    opened = records.check(f'check = "signal_value"\npath = "{DOOR}"\nequals = true\nat = 4.5\n')
    assert opened.passed, opened
    assert (opened.measured, opened.limit) == ("True at 4.00 s", "== True")
    # The mutation: the same moment read as closed fails, where signal_reported ("some value") passed.
    closed = records.check(f'check = "signal_value"\npath = "{DOOR}"\nequals = false\nat = 4.5\n')
    assert_fails(closed, "last reading at or before 4.5 s")
    assert "True, read at 4.00 s" in closed.detail


def test_signal_value_never_takes_1_for_true(records: BenchRecords) -> None:
    commute(records)
    result = records.check(f'check = "signal_value"\npath = "{DOOR}"\nequals = 1\nat = 4.5\n')
    assert not result.passed, "True == 1 in Python, but a door state is no number"


def test_signal_value_over_a_window_and_within_a_tolerance(records: BenchRecords) -> None:
    commute(records)
    held = records.check(f'check = "signal_value"\npath = "{LOCK}"\nequals = "UNLOCKED"\nwindow = [2.5, 35.5]\n')
    assert held.passed, held
    assert held.measured == "33 readings: 'UNLOCKED'"
    speed = records.check(f'check = "signal_value"\npath = "{SPEED}"\nequals = 20.5\ntolerance = 0.6\nat = 10\n')
    assert speed.passed, speed
    assert speed.limit == "== 20.5 ± 0.6"
    tight = records.check(f'check = "signal_value"\npath = "{SPEED}"\nequals = 20.5\ntolerance = 0.4\nat = 10\n')
    assert not tight.passed
    broken = records.check(f'check = "signal_value"\npath = "{LOCK}"\nequals = "UNLOCKED"\nwindow = [1, 35.5]\n')
    assert_fails(broken, "first off: 'LOCKED' read at 1.00 s")


def test_a_bad_argument_fails_the_check_with_its_reason(records: BenchRecords) -> None:
    commute(records)
    result = records.check(f'check = "signal_value"\npath = "{DOOR}"\nequals = true\ntolerance = 1\n')
    assert not result.passed
    assert result.detail == "check failed to run: tolerance applies to a number, not equals = True"
    reversed_window = records.check(f'check = "signal_range"\npath = "{SPEED}"\nmax = 60\nwindow = [9, 3]\n')
    assert "from_s is after to_s" in reversed_window.detail


# -- signal_range ----------------------------------------------------------------------------------


def test_signal_range_holds_over_its_window_and_fails_on_one_reading_outside(records: BenchRecords) -> None:
    commute(records)
    expect = f'check = "signal_range"\npath = "{SPEED}"\nmin = 0\nmax = 60\nwindow = [5, 30]\nmin_count = 20\n'
    held = records.check(expect)
    assert held.passed, held
    assert (held.measured, held.limit) == ("26 readings, 10..50", "0 <= value <= 60 in 5..30 s, >= 20 readings")


@pytest.mark.parametrize(
    ("spike", "window", "found"),
    [
        (75.0, "[5, 30]", "first outside: 75.0 read at 20.00 s"),
        (None, "[50, 60]", "0 readings; fewer than the 1 required"),
    ],
)
def test_signal_range_fails_on_a_spike_or_without_readings(
    records: BenchRecords, spike: float | None, window: str, found: str
) -> None:
    commute(records, speed_spike=spike)
    assert_fails(
        records.check(f'check = "signal_range"\npath = "{SPEED}"\nmin = 0\nmax = 60\nwindow = {window}\n'), found
    )


# -- signal_edge -----------------------------------------------------------------------------------


def test_the_door_edges_are_seen_at_their_times(records: BenchRecords) -> None:
    commute(records)
    opened = records.check(f'check = "signal_edge"\npath = "{DOOR}"\nfrom = false\nto = true\nnear = 3\nwithin_s = 1\n')
    assert opened.passed, opened
    assert (opened.measured, opened.limit) == ("at 3.02 s (+0.02 s)", "within 1 s of 3 s")  # the door event's time
    closed = records.check(f'check = "signal_edge"\npath = "{DOOR}"\nfrom = true\nto = false\nnear = 6\n')
    assert closed.passed, closed
    assert closed.measured == "at 6.02 s (+0.02 s)"


def test_a_door_opening_never_reported_fails_the_edge_check(records: BenchRecords) -> None:
    """The issue's case: "last value False" passed signal_reported though the opening was never reported."""
    commute(records, door_reported=False)
    reported = records.check(f'check = "signal_reported"\npath = "{DOOR}"\n')
    assert reported.passed  # the weak check cannot tell
    edge = records.check(f'check = "signal_edge"\npath = "{DOOR}"\nfrom = false\nto = true\nnear = 3\n')
    assert not edge.passed
    assert edge.detail == f"no False → True edge of {DOOR} in 40 readings (values seen: False)"


def test_an_edge_at_the_wrong_time_fails(records: BenchRecords) -> None:
    commute(records, close_at=9.0)
    result = records.check(f'check = "signal_edge"\npath = "{DOOR}"\nfrom = true\nto = false\nnear = 6\n')
    assert not result.passed
    assert result.measured == "at 9.02 s (+3.02 s)"


# -- event_latency ---------------------------------------------------------------------------------

LATENCY = 'check = "event_latency"\nsteps = ["open_door", "close_door", "lock"]\np50_max_s = 1.5\np99_max_s = 3\n'


def test_event_latency_measures_each_step_to_the_backend(records: BenchRecords) -> None:
    commute(records)
    result = records.check(LATENCY)
    assert result.passed, result
    # open at 3 → the snapshot read at 4 s, received at 4.05 (before the debounced door event at 4.06);
    # close at 6 → 7.05; lock at 36 → 36.05.
    assert result.measured == "p50 1.05 s, p99 1.05 s, max 1.05 s over 3 events"
    assert result.limit == "p50 <= 1.5 s, p99 <= 3 s"
    assert "lock@36s 0.05 s (telemetry #" in result.detail


def test_event_latency_fails_when_one_event_arrives_late(records: BenchRecords) -> None:
    commute(records, lock_received_after_s=9.0)
    result = records.check(LATENCY)
    assert not result.passed
    assert result.measured == "p50 1.05 s, p99 9.00 s, max 9.00 s over 3 events"


def test_event_latency_fails_when_a_step_never_shows(records: BenchRecords) -> None:
    commute(records, door_reported=False)
    result = records.check(LATENCY)
    assert_fails(result, "never shown at the backend: open_door@3s, close_door@6s")


# -- telemetry_latency -----------------------------------------------------------------------------


def test_telemetry_latency_outside_a_tunnel_and_the_backlog_after_it(records: BenchRecords) -> None:
    commute(records, tunnel=(10.0, 25.0))
    records.step(10, "tunnel", for_s=15)
    outside = records.check(
        'check = "telemetry_latency"\nexclude = ["tunnel"]\np50_max_s = 0.5\np99_max_s = 1\nmin_count = 15\n',
    )
    assert outside.passed, outside
    assert outside.measured == "p50 0.05 s, p99 0.05 s, max 0.05 s over 18 records"
    assert "22 created in the excluded fault spans 9..30 s" in outside.detail
    # Created 10..24 s, received from 26 s.
    backlog = records.check('check = "telemetry_latency"\nwindow = [10, 24.9]\nmax_s = 16.5\n')
    assert backlog.passed, backlog
    assert backlog.measured == "p50 9.07 s, p99 16.00 s, max 16.00 s over 15 records"


def test_telemetry_latency_fails_when_the_tunnel_is_not_excluded(records: BenchRecords) -> None:
    commute(records, tunnel=(10.0, 25.0))
    records.step(10, "tunnel", for_s=15)
    result = records.check('check = "telemetry_latency"\np50_max_s = 0.5\np99_max_s = 1\n')
    assert not result.passed
    assert result.limit == "p50 <= 0.5 s, p99 <= 1 s"
    assert result.measured.startswith("p50 0.05 s, p99 16.")


KILL_LATENCY = 'check = "telemetry_latency"\nexclude = ["agent_kill"]\np50_max_s = 0.5\np99_max_s = 1\n'


def killed(records: BenchRecords, *, link_up_at: float | None) -> None:
    """SIGKILL at 10 s, restarted at 13 s; the restarted agent's link up at `link_up_at` (never if None):
    a Python process starting in real time at scale 4. What it read meanwhile waited in its queue."""
    commute(records, tunnel=(13.0, 40.0 if link_up_at is None else link_up_at))
    records.step(10, "agent_kill", restart_after_s=3)
    records.event(0.5, "link", "link up")
    records.event(10.0, "agent", "agent SIGKILLed")
    records.event(13.0, "agent", "agent restarted")
    if link_up_at is not None:
        records.event(link_up_at, "link", "link up")


def test_a_restart_is_excluded_until_its_link_is_back_not_for_a_fixed_time(records: BenchRecords) -> None:
    """The restart took 9 s to connect: a fixed 5 s after it would count the queue it sent at 22 s."""
    killed(records, link_up_at=22.0)
    result = records.check(KILL_LATENCY)
    assert result.passed, result
    assert "created in the excluded fault spans 9..27 s" in result.detail  # link up at 22, settled 5 s after
    assert result.measured == "p50 0.05 s, p99 0.05 s, max 0.05 s over 21 records"


def test_a_link_never_back_excludes_the_rest_of_the_run(records: BenchRecords) -> None:
    killed(records, link_up_at=None)
    result = records.check(KILL_LATENCY)
    assert "in the excluded fault spans 9 s..the end" in result.detail
    assert result.measured == "p50 0.05 s, p99 0.05 s, max 0.05 s over 8 records"


def faster(records: BenchRecords, time_scale: float) -> None:
    """A tunnel at 50..60 s; the backlog takes 0.4 real s to drain, 40 s at scale 100: what was read until
    100 s arrives at 100 s."""
    records.time_scale = time_scale
    records.step(50, "tunnel", for_s=10)
    for second in range(1, 201):
        records.telemetry(float(second), 100.0 + second / 1000 if 50 <= second < 100 else second + 0.05, {SPEED: 1})


def test_the_settle_after_a_fault_covers_real_io_at_the_runs_time_scale(records: BenchRecords) -> None:
    faster(records, 100.0)
    expect = 'check = "telemetry_latency"\nexclude = ["tunnel"]\np99_max_s = 1\n'
    result = records.check(expect)
    assert result.passed, result
    assert "in the excluded fault spans 25..185 s" in result.detail  # 0.25 real s before, 1.25 after
    records.time_scale = 4.0  # the same run, were it at scale 4: the 40 s drain is no real I/O any more
    slow = records.check(expect)
    assert_fails(slow, "in the excluded fault spans 49..65 s")
    assert slow.measured == "p50 0.05 s, p99 33.07 s, max 34.07 s over 183 records"


def test_an_edges_default_window_covers_real_io_at_the_runs_time_scale(records: BenchRecords) -> None:
    commute(records, close_at=9.0)  # read 3 s after the step: 75 ms of real time at scale 40
    expect = f'check = "signal_edge"\npath = "{DOOR}"\nfrom = true\nto = false\nnear = 6\n'
    assert_fails(records.check(expect), "(+3.02 s from 6 s")  # at real time, 3 s is late
    records.time_scale = 40.0
    result = records.check(expect)
    assert result.passed, result
    assert result.limit == "within 10 s of 6 s"
