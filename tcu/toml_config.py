"""Typed reading of a TOML configuration file that names the key in every error (agent and backend)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tcu.errors import ConfigError

REQUIRED: Any = object()  # sentinel: the key must be present


class TomlSection:
    """Typed access to one TOML table that names the key in every error."""

    def __init__(self, data: Mapping[str, Any], name: str, base: Path) -> None:
        self._data = data
        self._name = name
        self._base = base
        self._used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self._name}.{key}" if self._name else key

    def _get(self, key: str, kinds: tuple[type, ...], expected: str, default: Any) -> Any:
        self._used.add(key)
        if key not in self._data:
            if default is REQUIRED:
                raise ConfigError(f"{self._where(key)}: missing; expected {expected}")
            return default
        value = self._data[key]
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self._where(key)}: got {value!r}; expected {expected}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self._where(key)}: got {value!r}; expected {expected}")
        return value

    def text(self, key: str, default: Any = None) -> Any:
        return self._get(key, (str,), "a string", default)

    def integer(self, key: str, default: Any = None) -> Any:
        return self._get(key, (int,), "an integer", default)

    def number(self, key: str, default: Any = None) -> Any:
        value = self._get(key, (int, float), "a number", default)
        return None if value is None else float(value)

    def flag(self, key: str, default: Any = None) -> Any:
        return self._get(key, (bool,), "true or false", default)

    def path(self, key: str, default: Any = None) -> Any:
        value = self._get(key, (str,), "a file path", default)
        if value is None or isinstance(value, Path):
            return value
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base / path

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> Any:
        value = self.text(key, default)
        if value not in choices:
            raise ConfigError(f"{self._where(key)}: got {value!r}; expected one of {', '.join(choices)}")
        return value

    def raw(self) -> Mapping[str, Any]:
        """The table as read, for a section another module validates itself."""
        return self._data

    def table(self, key: str) -> TomlSection:
        self._used.add(key)
        value = self._data.get(key, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self._where(key)}: expected a table [{self._where(key)}]")
        return TomlSection(value, self._where(key), self._base)

    def reject_unknown(self, *, allow: tuple[str, ...] = ()) -> None:
        unknown = set(self._data) - self._used - set(allow)
        if unknown:
            raise ConfigError(f"{self._name or 'top level'}: unknown key(s) {', '.join(sorted(unknown))}")


def load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from exc
