"""Load the CAN database(s) a vehicle is described by: DBC, KCD, ARXML, SYM — whatever cantools reads.

Several files merge into one database (a car's powertrain and body buses often come as separate
DBCs); a message name or frame id defined twice is a `ConfigError` naming both files.

Real-world files are rarely as tidy as cantools' strict mode wants: opendbc's VW MQB file has
overlapping multiplexed signals, Tesla's has a `VAL_` table for a signal its message does not carry.
A file is first loaded strictly; when that fails for overlapping signals it is loaded again without the
strict checks, and a file cantools refuses even then for unused `VAL_` lines alone is loaded without
those lines. Any other fault (a signal outside its frame, a syntax error) is a `ConfigError`. Each
fallback is logged once with the reason, so a real DBC works and nobody is surprised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cantools

from tcu.errors import ConfigError

_LOGGER = logging.getLogger(__name__)

PACKAGED_DBC = "vehicle.dbc"  # the fictional car, in tcu/sources/dbc/
_UNUSED_VAL = re.compile(r"VAL_ (\d+) (\w+)")


def packaged_dbc_text() -> str:
    return resources.files("tcu.sources").joinpath("dbc", PACKAGED_DBC).read_text("utf-8")


def load_can_database(paths: Sequence[Path] = ()) -> Any:
    """One cantools database from `paths`, merged; the packaged fictional car when `paths` is empty."""
    if not paths:
        return cantools.database.load_string(packaged_dbc_text(), database_format="dbc", strict=True)
    database: Any = None
    origin: dict[str, Path] = {}
    for path in paths:
        loaded = _load_one(path)
        if database is None:
            database = loaded
            origin = {m.name: path for m in loaded.messages}
            continue
        known_ids = {(m.frame_id, m.is_extended_frame): m.name for m in database.messages}
        for message in loaded.messages:
            if message.name in origin:
                raise ConfigError(f"DBC {path}: message {message.name} is also defined in {origin[message.name]}")
            clash = known_ids.get((message.frame_id, message.is_extended_frame))
            if clash is not None:
                raise ConfigError(
                    f"DBC {path}: frame id 0x{message.frame_id:X} ({message.name}) is also {clash} in {origin[clash]}"
                )
            database.messages.append(message)
            origin[message.name] = path
        database.refresh()
    return database


def _load_one(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"DBC {path}: no such file")
    try:
        return cantools.database.load_file(str(path), strict=True)
    except OSError as exc:
        raise ConfigError(f"DBC {path}: cannot read it: {exc.strerror or exc}") from exc
    except Exception as strict_error:  # cantools raises its own parse errors as well as ValueError
        reason = _reason(strict_error)
        # Overlapping signals (multiplexed layouts cantools does not model) are common and harmless for
        # the signals one maps; anything else strict mode finds (a signal outside its frame) is an error.
        if "overlapping" not in reason and "unused VAL_" not in reason:
            raise ConfigError(f"DBC {path}: cannot be loaded: {reason}") from strict_error
    try:
        database = cantools.database.load_file(str(path), strict=False)
    except Exception as exc:
        unused = _UNUSED_VAL.findall(str(exc)) if "unused VAL_" in str(exc) else []
        if not unused or path.suffix.lower() != ".dbc":
            raise ConfigError(f"DBC {path}: cannot be loaded: {_reason(exc)}") from exc
        database = _without_unused_values(path, unused)
        reason = "VAL_ table(s) for signals their message does not have: " + ", ".join(
            f"{frame} {name}" for frame, name in unused
        )
    _LOGGER.warning("DBC %s: loaded without cantools' strict checks (%s)", path, reason)
    return database


def _without_unused_values(path: Path, unused: list[tuple[str, str]]) -> Any:
    text = path.read_bytes().decode("cp1252")  # cantools' own default for DBC files
    dropped = {f"VAL_ {frame} {name} " for frame, name in unused}
    kept = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(tuple(dropped)))
    try:
        return cantools.database.load_string(kept, database_format="dbc", strict=False)
    except Exception as exc:
        raise ConfigError(f"DBC {path}: cannot be loaded: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
