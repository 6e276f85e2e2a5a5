"""The backend's modules, redrawn (issue 14): no import cycle, one exception tree, and every command
family refuses a wrong VIN or key file with one sentence (exit 2), not a traceback.

The cycle check reads each module's imports from its source, `if TYPE_CHECKING:` blocks included: a
cycle that only the type checker follows still means neither module can be read, moved or tested
without the other (it was provisioning ↔ provisioning_store).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import backend_stub
from backend_stub.cli import main as backend_cli
from backend_stub.errors import BackendError
from hil.layout import BenchLayout
from tests.conftest import VIN

PACKAGE = Path(backend_stub.__file__).parent


def _imports(path: Path) -> set[str]:
    """The backend_stub modules a module imports anywhere in its source (type-only imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "backend_stub":  # from backend_stub import accounts
            names.update(
                f"backend_stub.{alias.name}" for alias in node.names if (PACKAGE / f"{alias.name}.py").exists()
            )
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("backend_stub."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("backend_stub."))
    return names


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            found = visit(imported, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    for module in sorted(graph):
        found = visit(module, [])
        if found:
            return found
    return None


def test_no_backend_module_imports_itself_round_a_cycle() -> None:
    graph = {f"backend_stub.{path.stem}": _imports(path) for path in PACKAGE.glob("*.py")}
    assert _cycle(graph) is None, " → ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_every_backend_error_is_defined_in_errors_py() -> None:
    """One exception tree a person reads in one file (DESIGN): no module defines its own BackendError."""
    elsewhere = []
    for info in pkgutil.iter_modules([str(PACKAGE)]):
        module = importlib.import_module(f"backend_stub.{info.name}")
        for name, value in vars(module).items():
            defined_here = inspect.isclass(value) and value.__module__ == module.__name__
            if defined_here and issubclass(value, BackendError) and module.__name__ != "backend_stub.errors":
                elsewhere.append(f"{module.__name__}.{name}")
    assert elsewhere == []


@pytest.fixture
def bench(tmp_path: Path) -> BenchLayout:
    layout = BenchLayout(root=tmp_path / "bench", broker_url="mqtt://127.0.0.1:1")
    layout.create_backend()
    layout.add_vehicle(VIN)
    return layout


@pytest.mark.parametrize(
    "argv",
    [
        ["provision", "status", "NOT-A-VIN"],
        ["provision", "book", "NOT-A-VIN", "--service", "6AE"],
        ["capabilities", "NOT-A-VIN"],
        ["enroll", "NOT-A-VIN", "--public-key", "{key}"],
        ["invoice", "list", "NOT-A-VIN"],
    ],
)
def test_a_wrong_vin_is_one_sentence_from_every_command_family(
    bench: BenchLayout, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    key = bench.root / "vehicles" / VIN / "keys" / "vehicle.pub"
    command = [part.replace("{key}", str(key)) for part in argv]
    assert backend_cli([*command, "--config", str(bench.backend_config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("backend-stub: error: VIN argument: 'NOT-A-VIN' is not a VIN"), err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_missing_public_key_file_is_one_sentence(
    bench: BenchLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.pub"
    code = backend_cli(["enroll", VIN, "--public-key", str(missing), "--config", str(bench.backend_config)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("backend-stub: error:")
    assert str(missing) in err
    assert "Traceback" not in err
