"""The CarData refusals, each with BMW's `CustomerErrorResponse` code and a reason a person can act on.

BackendError (backend_stub.errors)
└── CardataError        any CarData refusal; `.code` is the `exveErrorId`, `.reason` the `exveErrorMsg`
    ├── BadRequest      a malformed request: a bad VIN, an unknown key, a name too long (HTTP 400)
    ├── Unauthorized    no, an expired or a forged token (HTTP 401)
    ├── Forbidden       a known resource the caller may not see: no consent, a vehicle of another
    │                   account (HTTP 403)
    ├── NotFound        nothing of that name for this caller: a container of another account looks
    │                   exactly like one that never existed (HTTP 404)
    └── Conflict        the request contradicts the state: too many containers (HTTP 409)

The codes follow the "CU-<status>" form BMW's clients see (`CU-403`, `CU-429`); a subclass may be
raised with a more specific code (the OAuth helpers use BMW's `CU-101`/`CU-102` for token trouble).
"""

from __future__ import annotations

from typing import ClassVar

from backend_stub.errors import BackendError

__all__ = ["BadRequest", "CardataError", "Conflict", "Forbidden", "NotFound", "Unauthorized", "quoted"]

MAX_REASON_CHARS = 500  # a reason may quote what a client sent; never echo a megabyte back


class CardataError(BackendError):
    """A CarData refusal: `code` (BMW's `exveErrorId` style) and `reason` (what and why)."""

    default_code: ClassVar[str] = "CU-400"
    status: ClassVar[int] = 400  # the HTTP status the customer API answers with

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        self.reason = reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"
        self.code = code or self.default_code
        super().__init__(self.reason)


class BadRequest(CardataError):  # noqa: N818 - the HTTP status's name, as the spec fixes it
    default_code = "CU-400"
    status = 400


class Unauthorized(CardataError):  # noqa: N818 - the HTTP status's name, as the spec fixes it
    default_code = "CU-401"
    status = 401


class Forbidden(CardataError):  # noqa: N818 - the HTTP status's name, as the spec fixes it
    default_code = "CU-403"
    status = 403


class NotFound(CardataError):  # noqa: N818 - the HTTP status's name, as the spec fixes it
    default_code = "CU-404"
    status = 404


class Conflict(CardataError):  # noqa: N818 - the HTTP status's name, as the spec fixes it
    default_code = "CU-409"
    status = 409


def quoted(text: object, limit: int = 60) -> str:
    """`text` as a refusal may quote it: repr, cut to `limit` characters (a client's 10 MB name stays out)."""
    shown = repr(text) if not isinstance(text, str) else repr(text[: limit + 1])
    return shown if len(shown) <= limit + 2 else shown[: limit + 1] + "…"
