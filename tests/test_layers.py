"""The house's layers: the wire protocol imports neither side, the agent never imports the backend or the
bench, and the backend reaches into the agent only for its process kit (clock, backoff, reconnect, logging,
TOML reading, broker settings, error sentences) — never the car's configuration, sources or eCall."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the backend may take from tcu besides the wire package: leaf modules that import nothing of the car
# (checked below). The bench drives the agent and may take any of it.
PROCESS_KIT = frozenset(
    {
        "tcu.backoff",
        "tcu.broker_config",
        "tcu.cli_errors",
        "tcu.clock",
        "tcu.errors",
        "tcu.reconnect",
        "tcu.runner",
        "tcu.toml_config",
        "tcu.uplink.mqtt_client",
        "tcu.uplink.mqtt_port",
        "tcu.virtual_time",
    }
)


def imported_modules(package: str) -> dict[str, set[str]]:
    """Each module of `package` → the absolute module names it imports (at any depth of the file)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[module] = names
    return found


def offending(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in imported_modules(package).items()
        for name in names
        if name.split(".")[0] in forbidden
    )


def test_wire_package_imports_neither_side() -> None:
    assert offending("telematics_wire", ("tcu", "backend_stub", "hil")) == []


def test_agent_imports_neither_backend_nor_bench() -> None:
    assert offending("tcu", ("backend_stub", "hil")) == []


def test_backend_takes_only_the_process_kit_from_the_agent() -> None:
    reaches = sorted(
        f"{module} imports {name}"
        for module, names in imported_modules("backend_stub").items()
        for name in names
        if name.startswith("tcu.") and not any(name == kit or name.startswith(kit + ".") for kit in PROCESS_KIT)
    )
    assert reaches == []


@pytest.mark.parametrize("kit_module", sorted(PROCESS_KIT))
def test_process_kit_modules_are_leaves(kit_module: str) -> None:
    """A kit module imports only the kit and the wire package, so importing it loads nothing of the car."""
    names = imported_modules("tcu")[kit_module]
    car = sorted(
        n for n in names if n.startswith("tcu.") and not any(n == k or n.startswith(k + ".") for k in PROCESS_KIT)
    )
    assert car == []


def test_importing_the_backend_loads_no_car_runtime() -> None:
    """The issue's own check, in a fresh interpreter: the backend service loads no config, source or eCall."""
    probe = (
        "import backend_stub.app, backend_stub.ingest, sys; "
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('tcu'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    car = [m for m in loaded.stdout.split() if m.startswith(("tcu.ecall", "tcu.sources", "tcu.config", "tcu.services"))]
    assert car == []
