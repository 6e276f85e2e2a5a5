"""The benchmark history: runs appended, each compared with the previous comparable one."""

from __future__ import annotations

from pathlib import Path

from bench import history
from bench.comparison import Better, Figures
from bench.suite_rows import Goal, Row


def _info(*, quick: bool = True, cpus: int = 2, date: str = "2026-11-30T05:00:00+00:00") -> history.RunInfo:
    return history.RunInfo(
        date=date, commit="abc", quick=quick, python="3.12", cpus=cpus, load_average=1.0, note="busy"
    )


def _run(ours: float, baseline: float | None, *, quick: bool = True, cpus: int = 2) -> history.Entry:
    row = Row(
        key="e2e",
        measure="end to end",
        unit="records/s",
        better=Better.HIGHER,
        ours=Figures.of([ours]),
        baseline_name="paho",
        baseline=None if baseline is None else Figures.of([baseline]),
    )
    latency = Row(
        key="p99",
        measure="p99",
        unit="ms",
        better=Better.LOWER,
        ours=Figures.of([ours / 100]),
        baseline_name="—",
    )
    return history.entry(_info(quick=quick, cpus=cpus), [row, latency])


def test_runs_are_appended_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    history.append(path, _run(1_000, 5_000))
    history.append(path, _run(1_100, 5_000))

    runs = history.load(path)
    assert [run["rows"][0]["ratio"] for run in runs] == [0.2, 0.22]
    assert runs[0]["rows"][0]["ours"] == [1_000]


def test_a_ratio_drop_of_more_than_ten_percent_is_a_regression() -> None:
    before = _run(1_000, 5_000)  # ratio 0.20
    slightly = history.compare(_run(1_000, 5_400), before)[0]  # 0.185: -7.4 %
    clearly = history.compare(_run(1_000, 6_000), before)[0]  # 0.167: -17 %

    assert (slightly.compared, slightly.regression) == ("ratio", False)
    assert clearly.regression
    assert "REGRESSION" in clearly.text()


def test_the_ratio_is_compared_not_the_absolute_figure() -> None:
    # A busier machine halves both figures: the ratio holds, no regression.
    change = history.compare(_run(500, 2_500), _run(1_000, 5_000))[0]
    assert change.fraction == 0
    assert not change.regression


def test_a_row_without_a_baseline_compares_its_own_figure_in_its_better_direction() -> None:
    changes = {change.key: change for change in history.compare(_run(1_000, None), _run(800, None))}
    assert changes["e2e"].compared == "figure"
    assert not changes["e2e"].regression  # 800 → 1,000 records/s is better
    assert changes["p99"].regression  # 8 → 10 ms is worse (-20 %)


def test_only_a_run_of_the_same_kind_on_as_many_cpus_is_comparable() -> None:
    full, other_machine, quick = _run(1, 1, quick=False), _run(2, 1, cpus=8), _run(3, 1)
    current = _run(4, 1)

    assert history.previous_comparable([quick, full, other_machine], current) is quick
    assert history.previous_comparable([full, other_machine], current) is None
    assert history.compare(current, None) == []


def test_a_recorded_run_gives_back_its_rows_for_the_readme() -> None:
    row = Row(
        key="fleet",
        measure="fleet",
        unit="ms",
        better=Better.LOWER,
        ours=Figures.of([3.0]),
        baseline_name="none",
        goal=Goal.bound(0.3),
        detail="0 lost",
        failure="0.5 records/s each",
    )
    info, rows = history.run_from_entry(history.entry(_info(), [row]))

    assert rows == [row]
    assert info == _info()
