"""BMW's device-code sign-in over HTTP: `POST /gcdm/oauth/device/code` and `POST /gcdm/oauth/token`.

Both take `application/x-www-form-urlencoded` bodies, parsed here rather than by FastAPI's form
support (which needs python-multipart for a format the standard library reads): a repeated parameter
is refused as RFC 6749 §3.1 requires, and nothing but the named fields is read. Errors are OAuth's
`{"error", "error_description"}` with the status BMW's description gives each (oauth_errors.py):
`authorization_pending`/`access_denied` 403, `invalid_client`/`expired_token` 401, the rest 400 —
BMW's own client polls on 403, not on RFC 8628's 400.

Tokens are answered once their streaming login is in force (`TokenListener.applied`: the broker holds
the new id_token as the gcid's password), so a client connecting to the stream at once is not refused;
a broker that does not answer within `STREAMING_WAIT_S` delays no sign-in longer (the login follows).

With `auto_approve_account` set (a bench), each device code is approved for that account at once, so
the first poll gets tokens: no person has to type the user code — except a sign-in asking for the
owner's own pages (`cardata:owner`), which waits for `backend-stub cardata approve CODE --owner`.
"""

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from backend_stub.cardata.errors import CardataError
from backend_stub.cardata.http_context import CardataContext
from backend_stub.cardata.http_errors import OAuthErrorResponse
from backend_stub.cardata.oauth import DeviceFlow
from backend_stub.cardata.oauth_errors import OAuthError
from backend_stub.cardata.tokens import SCOPE_OWNER

_LOGGER = logging.getLogger(__name__)

FORM_TYPE = "application/x-www-form-urlencoded"
GRANT_DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_REFRESH = "refresh_token"
_MAX_FIELDS = 16  # every form here has at most five
STREAMING_WAIT_S = 2.0  # the broker applies a login in milliseconds; a sign-in never hangs on a dead one


class DeviceCodeFlowPart1(BaseModel):
    """Starts the device code flow."""

    client_id: str = Field(json_schema_extra={"format": "uuid"})
    response_type: str = Field(json_schema_extra={"enum": ["device_code"]})
    scope: str
    code_challenge: str
    code_challenge_method: str = Field(json_schema_extra={"enum": ["S256"]})


class DeviceCodeFlowPart3TokenPolling(BaseModel):
    """Polls for the tokens of an approved device code."""

    client_id: str = Field(json_schema_extra={"format": "uuid"})
    grant_type: str = Field(json_schema_extra={"enum": [GRANT_DEVICE_CODE]})
    device_code: str
    code_verifier: str


class RefreshTokenRequest(BaseModel):
    """New tokens for a refresh token (RFC 6749 §6); each refresh token is good for one refresh."""

    client_id: str = Field(json_schema_extra={"format": "uuid"})
    grant_type: str = Field(json_schema_extra={"enum": [GRANT_REFRESH]})
    refresh_token: str


class DeviceCodeResponse(BaseModel):
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int = 5


class TokenResponse(BaseModel):
    access_token: str
    token_type: str  # "Bearer"
    expires_in: int
    refresh_token: str
    scope: str
    gcid: str
    id_token: str = ""  # only with the openid scope; absent then, never null


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


# The request bodies, for the generated OpenAPI (FastAPI documents only bodies it parses itself).
FORM_SCHEMAS: dict[str, dict[str, Any]] = {
    model.__name__: _schema(model)
    for model in (DeviceCodeFlowPart1, DeviceCodeFlowPart3TokenPolling, RefreshTokenRequest)
}


def _form_body(*names: str) -> dict[str, Any]:
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in names]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {FORM_TYPE: {"schema": schema}}}}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"description": "An OAuth error", "model": OAuthErrorResponse} for status in statuses}


async def _form(request: Request) -> dict[str, str]:
    """The form's fields; `OAuthError` invalid_request for anything else than one well-formed form."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != FORM_TYPE:
        raise OAuthError("invalid_request", f"send the parameters as {FORM_TYPE}")
    body = await request.body()  # at most max_body_bytes: the middleware refused anything larger
    try:
        pairs = parse_qsl(  # errors="strict": a %FF is a malformed form, not a U+FFFD in a client_id
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            max_num_fields=_MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise OAuthError(
            "invalid_request", "the form is not well-formed UTF-8 application/x-www-form-urlencoded"
        ) from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise OAuthError("invalid_request", f"parameter {name!r} repeated")
        fields[name] = value
    return fields


def _required(fields: dict[str, str], *names: str) -> list[str]:
    missing = [name for name in names if not fields.get(name)]
    if missing:
        raise OAuthError("invalid_request", f"missing parameter(s): {', '.join(missing)}")
    return [fields[name] for name in names]


def oauth_router(context: CardataContext) -> APIRouter:
    router = APIRouter(prefix="/gcdm/oauth", tags=["Device Flow with PKCE"])
    flow, run, clock = context.flow, context.run, context.clock

    @router.post(
        "/device/code",
        summary="Starts the device code flow",
        operation_id="startDeviceCodeFlow",
        openapi_extra=_form_body(DeviceCodeFlowPart1.__name__),
        responses=_errors(400, 500),
    )
    async def device_code(request: Request) -> DeviceCodeResponse:
        fields = await _form(request)
        client_id, response_type, challenge, method = _required(
            fields, "client_id", "response_type", "code_challenge", "code_challenge_method"
        )
        now = clock.now()
        started = await run(
            flow.start, client_id, fields.get("scope", ""), challenge, method, response_type=response_type, now=now
        )
        # A bench approves third parties at once; the owner's own pages wait for the owner's approval.
        if context.auto_approve_account is not None and SCOPE_OWNER not in fields.get("scope", "").split():
            await run(flow.approve, started.user_code, context.auto_approve_account, now=now)
        return DeviceCodeResponse.model_validate(started.as_response())

    @router.post(
        "/token",
        summary="Request a token for the device",
        operation_id="requestToken",
        openapi_extra=_form_body(DeviceCodeFlowPart3TokenPolling.__name__, RefreshTokenRequest.__name__),
        responses=_errors(400, 401, 403),
    )
    async def token(request: Request, response: Response) -> TokenResponse:
        response.headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1: tokens are never cached
        fields = await _form(request)
        client_id, grant_type = _required(fields, "client_id", "grant_type")
        now = clock.now()
        if grant_type == GRANT_DEVICE_CODE:
            device, verifier = _required(fields, "device_code", "code_verifier")
            issued = await run(flow.exchange, client_id, device, verifier, now=now)
        elif grant_type == GRANT_REFRESH:
            (refresh,) = _required(fields, "refresh_token")
            issued = await run(flow.refresh, client_id, refresh, now=now)
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type must be {GRANT_DEVICE_CODE} or {GRANT_REFRESH}")
        await _streaming_login_in_force(flow, issued.gcid)
        return TokenResponse.model_validate(issued.as_response())

    return router


async def _streaming_login_in_force(flow: DeviceFlow, gcid: str) -> None:
    """Wait (bounded) until the new id_token is the gcid's streaming password. The tokens are issued
    either way: a broker that is down or refuses is logged, and the client's connect is refused until
    the login follows, as before."""
    if flow.listener is None:
        return
    try:
        async with asyncio.timeout(STREAMING_WAIT_S):
            await flow.listener.applied(gcid)
    except TimeoutError:
        _LOGGER.warning("CarData tokens for gcid %s answered before the broker applied the streaming login", gcid)
    except CardataError as exc:  # DynsecError: the broker refused the login
        _LOGGER.warning("CarData tokens for gcid %s answered without a streaming login: %s", gcid, exc)


async def on_oauth_error(request: Request, exc: Exception) -> JSONResponse:
    """An `OAuthError` as OAuth's body with BMW's status for it."""
    assert isinstance(exc, OAuthError)
    return JSONResponse(exc.as_response(), status_code=exc.http_status, headers={"Cache-Control": "no-store"})
