"""One line of `python -m bench`: a measure, ours, its baseline, the ratio, the goal and the verdict.

A goal is either a ratio against the baseline (`Goal.ratio(0.5)`: ours at least half the baseline's
rate) or a bound on our own figure (`Goal.bound(50.0)`: below 50 ms for a latency, at least that for a
rate), as the issue states it. A row without a baseline shows "—" for it and its ratio.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bench.comparison import Better, Figures, ratio


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "FAIL"
    NONE = "—"  # no goal, or a ratio goal without a baseline


@dataclass(frozen=True, slots=True)
class Goal:
    threshold: float
    on_ratio: bool  # True: the ratio must reach `threshold`; False: our median must be on its good side

    @classmethod
    def ratio(cls, threshold: float) -> Goal:
        return cls(threshold, on_ratio=True)

    @classmethod
    def bound(cls, threshold: float) -> Goal:
        return cls(threshold, on_ratio=False)

    def text(self, unit: str, better: Better) -> str:
        if self.on_ratio:
            return f"ratio ≥ {self.threshold:g}"
        sign = "<" if better is Better.LOWER else "≥"
        return f"{sign} {format_figure(self.threshold)} {unit}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    key: str  # stable across runs: the history compares rows by it
    measure: str
    unit: str
    better: Better
    ours: Figures
    baseline_name: str  # what the baseline is ("none")
    baseline: Figures | None = None
    goal: Goal | None = None
    detail: str = ""  # shown with our figure: what else the run saw (event-loop lag, records lost)
    failure: str = ""  # a check besides the figure that failed (records lost): the row fails whatever its goal

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else ratio(self.ours, self.baseline, self.better)

    @property
    def ratio_direction(self) -> str:
        return "ours/base" if self.better is Better.HIGHER else "base/ours"

    @property
    def verdict(self) -> Verdict:
        if self.failure:
            return Verdict.FAIL
        if self.goal is None:
            return Verdict.NONE
        if self.goal.on_ratio:
            current = self.ratio
            if current is None:
                return Verdict.NONE
            return Verdict.PASS if current >= self.goal.threshold else Verdict.FAIL
        if self.better is Better.LOWER:
            return Verdict.PASS if self.ours.median < self.goal.threshold else Verdict.FAIL
        return Verdict.PASS if self.ours.median >= self.goal.threshold else Verdict.FAIL

    def cells(self) -> dict[str, str]:
        """The row as the table shows it, by column."""
        current = self.ratio
        return {
            "measure": self.measure,
            "ours": figures_text(self.ours, self.unit) + (f"; {self.detail}" if self.detail else ""),
            "baseline": self.baseline_name,
            "baseline figure": "—" if self.baseline is None else figures_text(self.baseline, self.unit),
            "ratio": "—" if current is None else f"{current:.2f} ({self.ratio_direction})",
            "goal": "—" if self.goal is None else self.goal.text(self.unit, self.better),
            "result": self.verdict.value + (f": {self.failure}" if self.failure else ""),
        }


COLUMNS = ("measure", "ours", "baseline", "baseline figure", "ratio", "goal", "result")


def format_figure(value: float) -> str:
    """Three significant figures or so: 52,310 / 207 / 48.6 / 2.93."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def figures_text(figures: Figures, unit: str) -> str:
    """'median unit (min x)'; one round shows its value alone."""
    text = f"{format_figure(figures.median)} {unit}"
    if len(figures.values) > 1:
        text += f" (min {format_figure(figures.min)})"
    return text
