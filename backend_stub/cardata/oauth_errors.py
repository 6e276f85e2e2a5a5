"""OAuth refusals of the token and device-code endpoints (RFC 6749 §5.2, RFC 8628 §3.5).

Their wire form is OAuth's `{"error", "error_description"}`, not the customer API's
`CustomerErrorResponse`; the HTTP status is the one BMW's device-code-flow description gives each
error (`authorization_pending` and `access_denied` 403, `invalid_client` and `expired_token` 401,
the rest 400). BMW's client notes say 400 for `expired_token`; their OpenAPI description says 401 —
we follow the OpenAPI description, and clients that stop polling on either are served both ways.
The device-code endpoint documents 400 as its only refusal, so an unknown client there is
`invalid_client` with 400 (RFC 6749 §5.2 allows it where the client did not authenticate by header).
"""

from __future__ import annotations

from typing import Final

from backend_stub.cardata.errors import CardataError

__all__ = ["OAUTH_ERRORS", "OAuthError"]

# error word → the HTTP status BMW's device-code-flow description answers it with
OAUTH_ERRORS: Final[dict[str, int]] = {
    "invalid_request": 400,
    "invalid_grant": 400,
    "invalid_scope": 400,
    "unsupported_grant_type": 400,
    "unsupported_response_type": 400,
    "slow_down": 400,
    "invalid_client": 401,
    "expired_token": 401,
    "authorization_pending": 403,
    "access_denied": 403,
}


class OAuthError(CardataError):
    """One OAuth error: `error` (RFC 6749/8628 word), `description`, and `http_status` to answer with."""

    def __init__(self, error: str, description: str, *, http_status: int | None = None) -> None:
        if error not in OAUTH_ERRORS:
            raise ValueError(f"not an OAuth error word: {error!r}")
        self.error = error
        self.description = description
        self.http_status = http_status or OAUTH_ERRORS[error]
        super().__init__(f"{error}: {description}", code=f"CU-{self.http_status}")

    def as_response(self) -> dict[str, str]:
        """The JSON body an OAuth client expects."""
        return {"error": self.error, "error_description": self.description}
