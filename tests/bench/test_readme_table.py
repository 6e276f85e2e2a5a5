"""The README's table is rewritten between its markers only, and never guessed into place."""

from __future__ import annotations

import pytest

from bench.comparison import Better, Figures
from bench.history import RunInfo
from bench.readme_table import BEGIN, END, ReadmeMarkersError, markdown_table, replace_block
from bench.suite_rows import Goal, Row

README = f"# tcu\n\nintro\n\n## Performance\n\nbefore the table\n{BEGIN}\nold table\n{END}\nafter the table\n"


def test_only_the_text_between_the_markers_changes() -> None:
    updated = replace_block(README, "new table")

    assert updated == README.replace("\nold table\n", "\nnew table\n")
    assert replace_block(updated, "new table") == updated  # regenerating the same run changes nothing


@pytest.mark.parametrize(
    "readme",
    [
        "# tcu\nno table here\n",
        f"# tcu\n{BEGIN}\nonly a beginning\n",
        f"{BEGIN}\none\n{END}\n{BEGIN}\ntwo\n{END}\n",
        f"{END}\nbackwards\n{BEGIN}\n",
    ],
)
def test_missing_repeated_or_misordered_markers_are_an_error(readme: str) -> None:
    with pytest.raises(ReadmeMarkersError, match="bench-table"):
        replace_block(readme, "table")


def test_the_table_names_the_run_and_every_rows_baseline_and_ratio() -> None:
    info = RunInfo(
        date="2026-11-30T05:00:00+00:00",
        commit="0123456789abcdef",
        quick=True,
        python="3.12",
        cpus=2,
        load_average=5.0,
        note="2-core machine, 6 agents busy",
    )
    row = Row(
        key="e2e",
        measure="end to end",
        unit="records/s",
        better=Better.HIGHER,
        ours=Figures.of([1_000.0, 1_100.0, 900.0]),
        baseline_name="plain paho | QoS 1",
        baseline=Figures.of([5_000.0]),
        goal=Goal.ratio(0.5),
    )

    table = markdown_table([row], info)

    assert "2026-11-30" in table
    assert "0123456789" in table
    assert "2-core machine, 6 agents busy" in table
    assert (
        "| end to end | 1,000 records/s (min 900) | plain paho \\| QoS 1 | 5,000 records/s | 0.20 (ours/base) |"
        in table
    )
    assert "ratio ≥ 0.5 | FAIL |" in table
