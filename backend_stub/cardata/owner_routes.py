"""Our additions to BMW's interface, under `/simulator/` and tagged "Simulator (ours)": the capability
service per VIN, and the owner's own pages — data report, transaction report (JSON and a readable HTML
page) and their consents.

The capability service is for third parties (the seed: which data is available and how often), so a
client's access token with `cardata:api:read` reads it. The owner's pages show what went to *every*
third party and change consents, so a third party's token must not reach them: they need a token
whose scope the owner approved for themselves, `cardata:owner` (SCOPE_OWNER). A client must ask for
it by name (it is never among the defaults), and the sign-in keeps it only when the owner approves it
as their own (`backend-stub cardata approve CODE --account A --owner`); approved without `--owner`
(a third party's sign-in, a bench's auto-approval) the token carries the rest of the scope only.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name dependencies local to the router function.
import html
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response
from fastapi.responses import HTMLResponse

from backend_stub.cardata.http_context import CardataContext, Vin, XVersion
from backend_stub.cardata.http_errors import BODY_ERRORS, CUSTOMER_ERRORS
from backend_stub.cardata.http_models import CapabilitiesDto, CapabilityDto, ConsentDto, ConsentGrantRequest
from backend_stub.cardata.timestamps import iso_z
from backend_stub.cardata.tokens import SCOPE_API, SCOPE_OWNER, Grant

__all__ = ["SCOPE_OWNER", "device_page_router", "owner_router"]
TAG = "Simulator (ours)"

ClientId = Annotated[str, Path(alias="clientId", description="The third party's OAuth client_id")]


def owner_router(context: CardataContext) -> APIRouter:
    router = APIRouter(prefix="/simulator", tags=[TAG], responses=CUSTOMER_ERRORS, dependencies=[XVersion])
    service, run = context.service, context.run
    Client = Annotated[Grant, Depends(context.bearer(SCOPE_API))]  # noqa: N806 (a type alias)
    Owner = Annotated[Grant, Depends(context.bearer(SCOPE_OWNER))]  # noqa: N806

    @router.get(
        "/vehicles/{vin}/capabilities",
        summary="Which CarData keys this vehicle can deliver now, and how often",
        operation_id="getCapabilities",
    )
    async def get_capabilities(grant: Client, vin: Vin) -> CapabilitiesDto:
        now = context.clock.now()
        found = await run(service.capabilities, grant.gcid, grant.client_id, vin, now)
        return CapabilitiesDto(
            vin=vin,
            timestamp=iso_z(now),
            capabilities=[
                CapabilityDto(
                    key=item.key,
                    available=item.available,
                    reason=item.reason,
                    minIntervalSeconds=item.min_interval_s,
                )
                for item in found
            ],
        )

    @router.get("/reports/data", summary="The owner's data report: what is stored now", operation_id="getDataReport")
    async def data_report(grant: Owner) -> dict[str, Any]:
        return await run(service.data_report, grant.gcid, context.clock.now())

    @router.get(
        "/reports/transactions",
        summary="The owner's transaction report: every transfer to a third party",
        operation_id="getTransactionReport",
    )
    async def transaction_report(grant: Owner) -> dict[str, Any]:
        return await run(service.transaction_report, grant.gcid, context.clock.now())

    @router.get(
        "/reports/transactions.html",
        summary="The owner's transaction report as a page",
        operation_id="getTransactionReportPage",
        response_class=HTMLResponse,
    )
    async def transaction_page(grant: Owner) -> HTMLResponse:
        return HTMLResponse(await run(service.transaction_report_html, grant.gcid, context.clock.now()))

    @router.get(
        "/reports/data.html",
        summary="The owner's data report as a page",
        operation_id="getDataReportPage",
        response_class=HTMLResponse,
    )
    async def data_page(grant: Owner) -> HTMLResponse:
        return HTMLResponse(await run(service.data_report_html, grant.gcid, context.clock.now()))

    @router.get("/consents", summary="The owner's consents in force", operation_id="listConsents")
    async def list_consents(grant: Owner) -> list[ConsentDto]:
        found = await run(service.consents, grant.gcid, context.clock.now())
        return [ConsentDto.model_validate(item) for item in found]

    @router.put(
        "/consents/{vin}/{clientId}",
        summary="Grant a third party these keys or categories of this vehicle (added to what it has)",
        operation_id="grantConsent",
        responses=BODY_ERRORS,
    )
    async def grant_consent(grant: Owner, vin: Vin, client_id: ClientId, request: ConsentGrantRequest) -> ConsentDto:
        keys = await run(service.grant, grant.gcid, vin, client_id, request.keys, context.clock.now())
        return ConsentDto(vin=vin, clientId=client_id, keys=sorted(keys))

    @router.delete(
        "/consents/{vin}/{clientId}",
        summary="Revoke a third party's consent: REST and streaming stop at once",
        operation_id="revokeConsent",
        status_code=204,
        response_class=Response,
        responses={204: {"description": "Revoked"}},
    )
    async def revoke_consent(grant: Owner, vin: Vin, client_id: ClientId) -> Response:
        await run(service.revoke, grant.gcid, vin, client_id, context.clock.now())
        return Response(status_code=204)

    return router


def device_page_router() -> APIRouter:
    """The verification URI a sign-in shows: how the owner approves the code (no login page here)."""
    router = APIRouter(prefix="/simulator", tags=[TAG])

    @router.get(
        "/device",
        summary="How the owner approves a device code",
        operation_id="getDevicePage",
        response_class=HTMLResponse,
        responses={400: CUSTOMER_ERRORS[400]},  # a user code longer than any we issue
    )
    async def device_page(
        user_code: Annotated[str, Query(max_length=32, description="The code the client shows")] = "CODE",
    ) -> HTMLResponse:
        code = html.escape(user_code)
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Approve a sign-in</title>'
            f"</head><body><h1>Approve sign-in {code}</h1><p>The simulator has no login page: the owner "
            f"approves on the backend with <code>backend-stub cardata approve {code} --account ACCOUNT "
            "--config backend.toml</code> (or denies with <code>--deny</code>).</p></body></html>"
        )

    return router
