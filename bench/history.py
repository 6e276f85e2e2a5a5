"""The benchmark history: one JSON list of runs, each compared with the previous comparable one.

    history = load(path)
    changes = compare(entry, previous_comparable(history, entry))   # per row: ratio before → after
    append(path, entry)

A run is comparable to an earlier one of the same kind (`--quick` or not) on as many CPUs. A row is
compared by its ratio against its baseline when both runs have one (ratios survive a busy machine,
absolute figures do not); a row without a baseline by its own median, oriented so that higher is better.
A drop of more than `REGRESSION` (10 %) is a regression.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.comparison import Better, Figures
from bench.suite_rows import Goal, Row

REGRESSION = 0.10

Entry = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunInfo:
    date: str  # ISO 8601, UTC
    commit: str
    quick: bool
    python: str
    cpus: int
    load_average: float  # one-minute load at the start: how busy the shared machine was
    note: str  # the caveat printed with the table ("2-core machine, 6 agents busy")


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    measure: str
    compared: str  # "ratio", or "figure" for a row without a baseline in either run
    before: float
    after: float
    higher_is_better: bool = True  # a ratio always is; a figure as its row says

    @property
    def fraction(self) -> float:
        """Relative change, positive when better: a latency from 10 to 12 ms is -17 %."""
        return self.after / self.before - 1 if self.higher_is_better else self.before / self.after - 1

    @property
    def regression(self) -> bool:
        return self.fraction < -REGRESSION

    def text(self) -> str:
        flag = "  REGRESSION" if self.regression else ""
        return f"{self.measure}: {self.compared} {self.before:.3g} → {self.after:.3g} ({self.fraction:+.0%}){flag}"


def row_entry(row: Row) -> Entry:
    return {
        "key": row.key,
        "measure": row.measure,
        "unit": row.unit,
        "better": row.better.value,
        "ours": list(row.ours.values),
        "ours_median": row.ours.median,
        "baseline_name": row.baseline_name,
        "baseline": None if row.baseline is None else list(row.baseline.values),
        "baseline_median": None if row.baseline is None else row.baseline.median,
        "ratio": row.ratio,
        "goal": None if row.goal is None else {"threshold": row.goal.threshold, "on_ratio": row.goal.on_ratio},
        "verdict": row.verdict.value,
        "detail": row.detail,
        "failure": row.failure,
    }


def row_from_entry(row: Entry) -> Row:
    """A row as `row_entry` stored it (for a table regenerated from a recorded run)."""
    goal = row.get("goal")
    return Row(
        key=row["key"],
        measure=row["measure"],
        unit=row["unit"],
        better=Better(row["better"]),
        ours=Figures.of(row["ours"]),
        baseline_name=row["baseline_name"],
        baseline=None if row.get("baseline") is None else Figures.of(row["baseline"]),
        goal=None if goal is None else Goal(goal["threshold"], on_ratio=goal["on_ratio"]),
        detail=row.get("detail", ""),
        failure=row.get("failure", ""),
    )


def run_from_entry(run: Entry) -> tuple[RunInfo, list[Row]]:
    info = RunInfo(**{name: run[name] for name in RunInfo.__dataclass_fields__})
    return info, [row_from_entry(row) for row in run["rows"]]


def entry(info: RunInfo, rows: Sequence[Row]) -> Entry:
    return {
        "date": info.date,
        "commit": info.commit,
        "quick": info.quick,
        "python": info.python,
        "cpus": info.cpus,
        "load_average": info.load_average,
        "note": info.note,
        "rows": [row_entry(row) for row in rows],
    }


def load(path: Path) -> list[Entry]:
    """The runs so far, oldest first; none when the file does not exist yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    runs = json.loads(text)
    if not isinstance(runs, list):
        raise TypeError(f"{path}: a benchmark history is a JSON list of runs")
    return runs


def previous_comparable(history: Sequence[Entry], current: Entry) -> Entry | None:
    """The latest earlier run of the same kind (quick or full) on as many CPUs."""
    for earlier in reversed(history):
        if earlier.get("quick") == current["quick"] and earlier.get("cpus") == current["cpus"]:
            return earlier
    return None


def compare(current: Entry, previous: Entry | None) -> list[Change]:
    """Per row of `current` found in `previous`: its ratio (or its own median) before and after."""
    if previous is None:
        return []
    before_rows = {row["key"]: row for row in previous.get("rows", [])}
    changes: list[Change] = []
    for row in current["rows"]:
        before = before_rows.get(row["key"])
        if before is None:
            continue
        if row.get("ratio") and before.get("ratio"):
            changes.append(Change(row["key"], row["measure"], "ratio", float(before["ratio"]), float(row["ratio"])))
        elif row.get("ours_median") and before.get("ours_median"):
            higher = row.get("better") == Better.HIGHER.value
            old, new = float(before["ours_median"]), float(row["ours_median"])
            changes.append(Change(row["key"], row["measure"], "figure", old, new, higher_is_better=higher))
    return changes


def append(path: Path, run: Entry) -> None:
    """Add `run` to the history file, replacing it whole (a crash mid-write leaves the old file)."""
    runs = [*load(path), run]
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(runs, indent=1) + "\n")
    partial.replace(path)
