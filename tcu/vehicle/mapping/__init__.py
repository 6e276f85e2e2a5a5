"""Source → VSS mapping tables shipped as TOML data next to this module (`obd.toml`, `can.toml`).

Each source module turns the plain table into its own frozen dataclasses and validates it; this
loader only finds, reads and parses the file, naming it in every `ConfigError`.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from tcu.errors import ConfigError


def packaged_mapping_name(name: str) -> str:
    """How errors name a packaged table."""
    return f"{__name__.replace('.', '/')}/{name}.toml"


def load_mapping(name: str, path: Path | None = None) -> dict[str, Any]:
    """The table `<name>.toml` shipped in this package, or the file at `path` when one is given."""
    where = str(path) if path is not None else packaged_mapping_name(name)
    try:
        if path is None:
            text = resources.files(__name__).joinpath(f"{name}.toml").read_text("utf-8")
        else:
            text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"mapping {where}: cannot read it: {exc}") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"mapping {where}: invalid TOML: {exc}") from exc
