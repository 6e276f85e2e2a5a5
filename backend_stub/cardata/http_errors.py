"""Every refusal of the CarData HTTP service as its published shape, with its documented status.

The customer API answers with BMW's `CustomerErrorResponse` (`exveErrorId`, `exveErrorRef`,
`exveErrorMsg`, `exveNote`) and only the statuses its description lists (400, 401, 403, 404; 500 and
503 for the server's own trouble), plus 409 and 413 where we refuse a conflict or an oversized body.
The OAuth routes (`/gcdm/oauth/...`) answer as RFC 6749 / RFC 8628 do: `{"error", "error_description"}`.

FastAPI's own refusals are translated here too, so no request ever gets its default shapes: a
parameter that fails validation (FastAPI's 422) is BMW's 400, an unknown path 404, a wrong method 405.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from backend_stub.cardata.errors import CardataError
from backend_stub.errors import DatabaseError

_LOGGER = logging.getLogger(__name__)

OAUTH_PREFIX = "/gcdm/"  # below it, errors take the OAuth shape

# FastAPI's and Starlette's own statuses, as the exveErrorId a client can branch on.
_HTTP_CODES = {
    400: "CU-400",
    401: "CU-401",
    403: "CU-403",
    404: "CU-404",
    405: "CU-405",
    409: "CU-409",
    413: "CU-413",
    500: "CU-500",
    503: "CU-503",
}


class CustomerErrorResponse(BaseModel):
    """BMW's error body for the customer API."""

    exveErrorId: str = Field(description="A stable code for the refusal")  # noqa: N815 (BMW's field name)
    exveErrorRef: str = Field(description="This occurrence, to quote in a report")  # noqa: N815
    exveErrorMsg: str = Field(description="What was refused and why")  # noqa: N815
    exveNote: str = Field(default="", description="What to do about it")  # noqa: N815


class OAuthErrorResponse(BaseModel):
    """RFC 6749 section 5.2 error body, as the device-code flow's description documents it."""

    error: str
    error_description: str


def _documented(description: str, model: type[BaseModel]) -> dict[str, Any]:
    return {"description": description, "model": model}


# The customer API's documented error responses, for the generated OpenAPI (BMW's wording).
CUSTOMER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _documented("Bad request. Please check API specification", CustomerErrorResponse),
    401: _documented("Authentication Failed", CustomerErrorResponse),
    403: _documented("Access to resource is forbidden", CustomerErrorResponse),
    404: _documented("Not found", CustomerErrorResponse),
    500: _documented("A permanent server error occurred. Report this error if it occurs", CustomerErrorResponse),
    503: _documented("A temporary server error occurred. Retry again later", CustomerErrorResponse),
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    413: _documented("The request body is larger than this service accepts", CustomerErrorResponse),
}
CONFLICT_ERRORS: dict[int | str, dict[str, Any]] = {
    409: _documented("The request conflicts with the current state", CustomerErrorResponse),
}


def error_response(path: str, status: int, code: str, message: str, note: str = "") -> JSONResponse:
    """The refusal in the shape the route's family documents."""
    if path.startswith(OAUTH_PREFIX):
        # RFC 6749 5.2: an OAuth error is always one of its codes; a malformed request is invalid_request.
        error = "server_error" if status >= 500 else "invalid_request"
        return JSONResponse(OAuthErrorResponse(error=error, error_description=message).model_dump(), status_code=status)
    body = CustomerErrorResponse(exveErrorId=code, exveErrorRef=str(uuid.uuid4()), exveErrorMsg=message, exveNote=note)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    # One line per failed parameter, naming where it was; never the input itself (it may be huge).
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request does not match the API description"


async def _on_cardata_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CardataError)
    return error_response(request.url.path, exc.status, exc.code, exc.reason)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(request.url.path, 400, _HTTP_CODES[400], _validation_message(exc))


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else "the request was refused"
    response = error_response(request.url.path, status, _HTTP_CODES.get(status, f"CU-{status}"), message)
    if exc.headers:
        response.headers.update(exc.headers)  # e.g. Allow on a 405
    return response


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    # A busy or failing database is temporary for the client: BMW's 503, and nothing was stored.
    _LOGGER.warning("CarData request %s %s: database failed: %s", request.method, request.url.path, exc)
    return error_response(request.url.path, 503, _HTTP_CODES[503], "the backend's database is busy; retry later")


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A bug: the documented 500 in the documented shape (Starlette still logs the traceback).
    return error_response(request.url.path, 500, _HTTP_CODES[500], "internal error; report it with exveErrorRef")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CardataError, _on_cardata_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(DatabaseError, _on_database_error)
    app.add_exception_handler(sqlite3.Error, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
