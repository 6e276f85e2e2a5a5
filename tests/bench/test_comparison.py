"""Ours against its baseline: the order they run in and which way the ratio points."""

from __future__ import annotations

import pytest

from bench.comparison import Better, Contender, Figures, interleave, ratio
from bench.suite_rows import Goal, Row, Verdict


async def test_contenders_alternate_round_by_round_ours_first() -> None:
    order: list[str] = []

    def contender(name: str, value: float) -> Contender:
        async def run() -> float:
            order.append(name)
            return value

        return run

    samples = await interleave([contender("ours", 1.0), contender("paho", 2.0), contender("sqlite", 3.0)], rounds=3)

    assert order == ["ours", "paho", "sqlite"] * 3  # never three of ours, then three of the baseline
    assert samples == [[1.0] * 3, [2.0] * 3, [3.0] * 3]


def test_figures_keep_min_and_median_of_the_rounds() -> None:
    figures = Figures.of([30.0, 10.0, 20.0])
    assert (figures.min, figures.median) == (10.0, 20.0)


def test_a_rate_ratio_is_ours_over_the_baseline() -> None:
    ours, paho = Figures.of([900.0, 1_000.0, 1_100.0]), Figures.of([4_000.0, 5_000.0, 6_000.0])
    assert ratio(ours, paho, Better.HIGHER) == pytest.approx(0.2)


def test_a_latency_ratio_is_the_baseline_over_ours_so_higher_stays_better() -> None:
    slow_disk, untouched = Figures.of([200.0]), Figures.of([2.0])
    assert ratio(slow_disk, untouched, Better.LOWER) == pytest.approx(0.01)


def _row(ours: list[float], baseline: list[float] | None, better: Better, goal: Goal | None) -> Row:
    return Row(
        key="k",
        measure="m",
        unit="u",
        better=better,
        ours=Figures.of(ours),
        baseline_name="b",
        baseline=None if baseline is None else Figures.of(baseline),
        goal=goal,
    )


def test_a_ratio_goal_passes_at_the_threshold_and_fails_below() -> None:
    assert _row([50.0], [100.0], Better.HIGHER, Goal.ratio(0.5)).verdict is Verdict.PASS
    assert _row([49.0], [100.0], Better.HIGHER, Goal.ratio(0.5)).verdict is Verdict.FAIL


def test_a_bound_on_a_latency_is_strictly_below() -> None:
    assert _row([49.9], [2.0], Better.LOWER, Goal.bound(50.0)).verdict is Verdict.PASS
    assert _row([50.0], [2.0], Better.LOWER, Goal.bound(50.0)).verdict is Verdict.FAIL


def test_a_row_without_a_baseline_has_no_ratio_and_no_verdict_on_a_ratio_goal() -> None:
    row = _row([50.0], None, Better.HIGHER, Goal.ratio(0.5))
    assert row.ratio is None
    assert row.verdict is Verdict.NONE
    assert (row.cells()["baseline figure"], row.cells()["ratio"]) == ("—", "—")


def test_a_failed_check_fails_the_row_whatever_its_figure() -> None:
    row = Row(
        key="fleet",
        measure="fleet",
        unit="ms",
        better=Better.LOWER,
        ours=Figures.of([0.1]),
        baseline_name="—",
        goal=Goal.bound(0.3),
        failure="lost 3",
    )
    assert row.verdict is Verdict.FAIL
    assert row.cells()["result"] == "FAIL: lost 3"
