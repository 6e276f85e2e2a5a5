"""The CarData HTTP service: BMW's customer API, its device-code sign-in, and our owner pages, as one
FastAPI app.

    app = create_app(service, flow, max_body_bytes=64 * 1024, run=backend.operate, clock=backend.clock)

- `/customers/...` — BMW's customer API (customer_routes.py): `x-version: v1`, a bearer access token,
  errors as `CustomerErrorResponse` (http_errors.py).
- `/gcdm/oauth/...` — the device authorization grant with PKCE (oauth_routes.py), RFC 8628 errors.
- `/simulator/...` — ours, tagged so (owner_routes.py): capabilities per VIN, the owner's data and
  transaction reports (JSON and HTML), the owner's consents.
- `/openapi.json` — the generated description of all of it; `/docs` renders it.

Every store call goes through `run` (the backend's database thread, `BackendStub.operate`): a SQLite
call never blocks the loop that also serves ingest and the PSAP. A request body over `max_body_bytes`
is refused before anything parses it (body_limit.py).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from backend_stub.cardata.body_limit import BodyLimit
from backend_stub.cardata.customer_routes import customer_router
from backend_stub.cardata.http_context import CardataContext, Runner, run_inline
from backend_stub.cardata.http_errors import install_error_handlers
from backend_stub.cardata.oauth import DeviceFlow
from backend_stub.cardata.oauth_errors import OAuthError
from backend_stub.cardata.oauth_routes import FORM_SCHEMAS, oauth_router, on_oauth_error
from backend_stub.cardata.owner_routes import device_page_router, owner_router
from backend_stub.cardata.service import CardataService
from tcu.clock import Clock, SystemClock

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 64 * 1024  # a container request is a few hundred bytes; 64 KiB is generous
TITLE = "CarData API (TCU simulator)"
# FastAPI's own validation schemas: we answer validation failures as BMW's 400, never 422.
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def create_app(
    service: CardataService,
    flow: DeviceFlow,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    run: Runner = run_inline,
    clock: Clock | None = None,
    auto_approve_account: str | None = None,
) -> FastAPI:
    context = CardataContext(
        service=service,
        flow=flow,
        run=run,
        clock=clock or SystemClock(),
        auto_approve_account=auto_approve_account,
    )
    app = FastAPI(
        title=TITLE,
        version="1.0.0",
        description=(
            "BMW CarData's published customer API and device-code sign-in, served by the TCU simulator's "
            "backend from the data its simulated vehicles send; plus the simulator's own owner pages."
        ),
        openapi_tags=[
            {"name": "Containers", "description": "Management of containers (BMW)"},
            {"name": "Vehicles", "description": "Access vehicle data and information (BMW)"},
            {"name": "Device Flow with PKCE", "description": "Authentication via the device code flow (BMW)"},
            {"name": "Simulator (ours)", "description": "Not part of BMW's interface: the simulator's additions"},
        ],
    )
    install_error_handlers(app)
    app.add_exception_handler(OAuthError, on_oauth_error)  # its own shape: the nearest class wins
    app.add_middleware(BodyLimit, max_body_bytes=max_body_bytes)
    app.include_router(customer_router(context))
    app.include_router(oauth_router(context))
    app.include_router(owner_router(context))
    app.include_router(device_page_router())
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's description without its 422 answers (we answer BMW's 400), with the form schemas, and
    every refusal as the JSON it is: FastAPI gives an HTML page's error responses the page's media type,
    but http_errors.py renders every refusal as JSON."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
                _errors_as_json(operation.get("responses", {}))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    schemas.update(FORM_SCHEMAS)
    app.openapi_schema = document
    return document


def _errors_as_json(responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        content = response.get("content", {})
        if int(status) >= 400 and "text/html" in content:
            content["application/json"] = content.pop("text/html")
