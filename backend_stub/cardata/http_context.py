"""What every CarData route needs: the service, the sign-in, the database runner, the clock; and the
checks every customer API call makes before it does anything — `x-version`, the bearer token, the VIN.

Each check refuses with the domain's own errors (`backend_stub.cardata.errors`), which http_errors.py
renders as BMW's `CustomerErrorResponse`, so a route never builds an error body itself.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, ParamSpec, Protocol, TypeVar

from fastapi import Depends, Header, Path, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from backend_stub.cardata.errors import BadRequest, Forbidden, Unauthorized, quoted
from backend_stub.cardata.oauth import DeviceFlow
from backend_stub.cardata.service import CardataService
from backend_stub.cardata.tokens import Grant
from tcu.clock import Clock
from telematics_wire.errors import VinError
from telematics_wire.vin import validate_vin

_P = ParamSpec("_P")
_T = TypeVar("_T")

API_VERSION = "v1"
# BMW's security scheme: a GCDM access token, opaque to the client.
BEARER = HTTPBearer(scheme_name="bearerAuth", bearerFormat="opaque", description="GCDM access token", auto_error=False)


class Runner(Protocol):
    """Runs a blocking job off the event loop and awaits it (`BackendStub.operate`, `DatabaseThread.run`)."""

    async def __call__(self, job: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T: ...


async def run_inline(job: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """A plain call, for an app whose stores have no database thread (a test's in-memory twins)."""
    return job(*args, **kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class CardataContext:
    service: CardataService
    flow: DeviceFlow
    run: Runner
    clock: Clock
    auto_approve_account: str | None = None  # a bench's owner: every device code approved at once

    def bearer(self, scope: str) -> Callable[..., Awaitable[Grant]]:
        """A dependency: the grant of the request's access token, which must carry `scope`."""

        async def grant(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]) -> Grant:
            if credentials is None:
                raise Unauthorized("no access token: send 'Authorization: Bearer <access_token>'")
            found: Grant = await self.run(self.flow.verify_access_token, credentials.credentials, self.clock.now())
            if not found.allows(scope):
                raise Forbidden(f"the access token's scope lacks {scope!r}: sign in again asking for it")
            return found

        return grant


def _check_version(value: str | None) -> None:
    if value is not None and value != API_VERSION:
        raise BadRequest(f"x-version {quoted(value)} is not served; send 'x-version: {API_VERSION}'")


async def x_version(
    value: Annotated[str, Header(alias="x-version", description="The API version: v1")],
) -> None:
    """BMW's required header; missing it is a validation failure, which answers 400 too."""
    _check_version(value)


async def x_version_optional(
    value: Annotated[str | None, Header(alias="x-version", description="The API version: v1, if sent")] = None,
) -> None:
    """Where BMW's description lists no `x-version` (creating and deleting a container): checked if sent."""
    _check_version(value)


async def vin_parameter(vin: Annotated[str, Path(description="The vehicle identification number")]) -> str:
    try:
        return validate_vin(vin)
    except VinError as exc:
        raise BadRequest(str(exc)) from exc


XVersion = Depends(x_version)
XVersionOptional = Depends(x_version_optional)
Vin = Annotated[str, Depends(vin_parameter)]
