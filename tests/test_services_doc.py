"""The services documentation and the examples say only what the code and the terms of service say.

- Every row of the rule table in docs/services.md names a test that exists (`path::name`), so a rule
  cannot be documented without a test, and a renamed test cannot leave the table pointing at nothing.
- Every booking in the README, the docs and the scenario library uses an option code and a term the
  catalogue offers (the catalogue itself is checked against the terms in tests/services/test_catalogue.py).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from hil.scenario import library, load_scenario
from telematics_wire.catalogue import Brand, Catalogue
from telematics_wire.terms import Term

ROOT = Path(__file__).resolve().parent.parent
SERVICES_DOC = ROOT / "docs" / "services.md"
_TEST_CELL = re.compile(r"`?(tests/[\w/]+\.py)::(\w+)`?")
_CLI_BOOKING = re.compile(r"provision book \S+ --service (\S+)(?: --term (\S+))?")


def _rule_rows() -> list[list[str]]:
    rows = []
    for line in SERVICES_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0] != "rule" and not set(cells[0]) <= {"-"}:
            rows.append(cells)
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
    }


def test_the_rule_table_has_rows_for_every_part_of_the_terms() -> None:
    rows = _rule_rows()
    assert len(rows) >= 60
    clauses = " ".join(row[1] for row in rows)
    cited = ("3.2", "3.4", "3.6", "5.5 c", "6.1", "6.2", "7.2", "7.3", "7.4", "Datenschutz B", "Laufzeit 3 Jahre")
    for clause in cited:
        assert clause in clauses, f"no rule in docs/services.md cites {clause}"


@pytest.mark.parametrize("row", _rule_rows(), ids=lambda row: row[0][:60])
def test_each_rule_names_a_test_that_exists(row: list[str]) -> None:
    rule, clause, module, test = row
    assert clause, f"rule {rule!r}: name the clause of the terms it comes from"
    assert module, f"rule {rule!r}: name the module that implements it"
    found = _TEST_CELL.search(test)
    assert found, f"rule {rule!r}: the test cell {test!r} is not tests/<path>.py::<test name>"
    path, name = ROOT / found.group(1), found.group(2)
    assert path.is_file(), f"rule {rule!r}: {found.group(1)} does not exist"
    assert name in _test_names(path), f"rule {rule!r}: {found.group(1)} has no test {name}"
    for part in re.findall(r"(?:tcu|backend_stub|hil)/[\w/]+\.(?:py|toml)", module):
        assert (ROOT / part).is_file(), f"rule {rule!r}: module {part} does not exist"


def _documented_bookings() -> list[tuple[str, str, str | None]]:
    bookings: list[tuple[str, str, str | None]] = []
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for code, term in _CLI_BOOKING.findall(doc.read_text()):
            bookings.append((doc.name, code, term or None))
    for name, path in sorted(library().items()):
        for step in load_scenario(path).steps:
            if step.do == "book":
                term = step.args.get("term")
                bookings.append((f"scenario {name}", str(step.args["service"]), None if term is None else str(term)))
    return bookings


def test_the_examples_book_something() -> None:
    where = {source for source, _code, _term in _documented_bookings()}
    assert "README.md" in where
    assert any(source.startswith("scenario ") for source in where)


@pytest.mark.parametrize(("source", "code", "term"), _documented_bookings())
def test_every_example_booking_is_one_the_terms_offer(source: str, code: str, term: str | None) -> None:
    catalogue = Catalogue.load()
    assert code in catalogue.services, f"{source} books {code}, which is not in the terms' catalogue"
    offered = catalogue.services[code].terms_for(Brand.BMW)
    if term is None:
        assert len(offered) == 1, f"{source} books {code} without a term, but it offers {offered}"
        chosen = offered[0]
    else:
        chosen = Term(term)  # a flat "3y" or any invented term fails here
    assert catalogue.booking_refusal(code, chosen, brand=Brand.BMW, equipment=None) is None


def test_no_example_uses_a_code_or_term_the_terms_do_not_have() -> None:
    docs = [p for p in sorted((ROOT / "docs").glob("*.md")) if p != SERVICES_DOC]  # it says 6NR does not exist
    for path in [ROOT / "README.md", *docs, *sorted(library().values())]:
        text = path.read_text()
        assert "6NR" not in text, f"{path.name} names 6NR: real-time traffic is 6AM"
        assert not re.search(r"""(--term |term = ")3y\b""", text), f"{path.name} books the flat 3y term"


def test_every_rule_row_renders_inside_its_table() -> None:
    """A row after a blank line is plain text in Markdown, not part of the table above it."""
    lines = SERVICES_DOC.read_text().splitlines()
    for number, line in enumerate(lines[1:-1], start=1):
        starts_a_table = lines[number + 1].startswith("|---")
        if line.startswith("| ") and not lines[number - 1].startswith("|") and not starts_a_table:
            pytest.fail(f"docs/services.md:{number + 1}: a table row outside its table: {line[:60]}")
