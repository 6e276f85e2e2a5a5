"""The named timers both call machines run on: due ones are taken earliest first, and a timer that an
earlier one's handler cancels or restarts is judged by its new state, not a stale list."""

from __future__ import annotations

from tcu.ecall.deadlines import Deadlines


def test_due_timers_are_taken_earliest_first_and_later_ones_stay() -> None:
    timers = Deadlines(T2=30.0, answer=10.0, redial=20.0)
    assert timers.next_due() == 10.0
    assert list(timers.expire(20.0)) == ["answer", "redial"]
    assert timers == {"T2": 30.0}
    assert Deadlines().next_due() is None


def test_a_handler_cancelling_or_restarting_a_due_timer_is_respected() -> None:
    timers = Deadlines(first=1.0, cancelled=2.0, restarted=3.0)
    taken = []
    for name in timers.expire(5.0):
        taken.append(name)
        if name == "first":
            del timers["cancelled"]
            timers["restarted"] = 50.0
    assert taken == ["first"]
    assert timers == {"restarted": 50.0}
