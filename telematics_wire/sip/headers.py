"""SIP header fields (RFC 3261 §7.3, §20): names compared without regard to case, compact one-letter
forms expanded (§7.3.3), list headers split at their commas, values that cannot smuggle a line break.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Final

from telematics_wire.errors import SipError
from telematics_wire.sip.header_syntax import is_token, split_list

# RFC 3261 §7.3.3 and the IANA registry: one-letter names a peer may use instead of the full ones.
COMPACT_FORMS: Final = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
}
# Our spelling of the names we write or read, so encode() is stable whatever case a peer used.
_CANONICAL: Final = {
    name.lower(): name
    for name in (
        *COMPACT_FORMS.values(),
        "Accept",
        "Allow",
        "Call-Info",
        "Content-Disposition",
        "Content-ID",
        "CSeq",
        "Geolocation",
        "Geolocation-Routing",
        "Info-Package",
        "Max-Forwards",
        "Record-Route",
        "Recv-Info",
        "Route",
        "Server",
        "User-Agent",
        "WWW-Authenticate",
    )
}
# Headers whose value is a comma-separated list (RFC 3261 §7.3.1); others are taken whole.
_LIST_HEADERS: Final = frozenset(
    {
        "accept",
        "allow",
        "call-info",
        "contact",
        "geolocation",
        "recv-info",
        "record-route",
        "route",
        "supported",
        "via",
    }
)
FORBIDDEN_IN_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CR, LF and other controls; TAB is fine


def canonical_name(name: str) -> str:
    """A header name in our spelling: compact forms expanded, known names in their usual case."""
    lowered = name.lower()
    if lowered in COMPACT_FORMS:
        return COMPACT_FORMS[lowered]
    return _CANONICAL.get(lowered, name)


class SipHeaders:
    """An ordered, immutable list of (name, value) header fields; look-ups ignore case and compact forms."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        checked: list[tuple[str, str]] = []
        for name, value in fields:
            if not isinstance(name, str) or not is_token(name):
                raise SipError(f"header name {name!r} is not a token")
            if not isinstance(value, str) or FORBIDDEN_IN_VALUE.search(value):
                raise SipError(f"header {name} has a control character or line break in its value")
            checked.append((canonical_name(name), value.strip()))
        self._fields: tuple[tuple[str, str], ...] = tuple(checked)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SipHeaders) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields)

    def __repr__(self) -> str:
        return f"SipHeaders({list(self._fields)!r})"

    def get(self, name: str) -> str | None:
        """The first field called `name` (whole, not split at commas), or None."""
        wanted = canonical_name(name).lower()
        for key, value in self._fields:
            if key.lower() == wanted:
                return value
        return None

    def get_all(self, name: str) -> tuple[str, ...]:
        """Every value of `name` in order; list headers (Via, Contact, Call-Info, ...) split at their commas."""
        wanted = canonical_name(name).lower()
        values: list[str] = []
        for key, value in self._fields:
            if key.lower() != wanted:
                continue
            if wanted in _LIST_HEADERS:
                values.extend(split_list(value, key))
            else:
                values.append(value)
        return tuple(values)

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipError(f"no {canonical_name(name)} header")
        return value

    def without(self, *names: str) -> SipHeaders:
        dropped = {canonical_name(name).lower() for name in names}
        return SipHeaders(pair for pair in self._fields if pair[0].lower() not in dropped)

    def replaced(self, name: str, value: str) -> SipHeaders:
        """Every `name` field dropped and one `name: value` added where the first one was (else at the end)."""
        wanted = canonical_name(name).lower()
        result: list[tuple[str, str]] = []
        placed = False
        for key, old in self._fields:
            if key.lower() != wanted:
                result.append((key, old))
            elif not placed:
                result.append((canonical_name(name), value))
                placed = True
        if not placed:
            result.append((canonical_name(name), value))
        return SipHeaders(result)

    def added(self, *fields: tuple[str, str]) -> SipHeaders:
        return SipHeaders((*self._fields, *fields))
