"""BMW's CarData customer API: containers and vehicles, as BMW's description names and shapes them.

Every route checks `x-version` and the bearer token before it touches anything, and hands the work to
`CardataService` on the database thread (`context.run`). Where BMW's description and its running
service differ, we serve what its clients read: `GET /customers/vehicles/mappings` answers a *list* of
`VehicleMappingDto` (the description says one object; the service and every published client use a
list). `POST /customers/containers` and `DELETE .../{containerId}` list no `x-version` in BMW's
description, so there it is checked only when sent.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time, and
# they name dependencies local to the router function.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from backend_stub.cardata.http_context import CardataContext, Vin, XVersion, XVersionOptional
from backend_stub.cardata.http_errors import BODY_ERRORS, CONFLICT_ERRORS, CUSTOMER_ERRORS
from backend_stub.cardata.http_models import (
    ContainerDetailsDto,
    ContainerDto,
    ContainerListDto,
    ContainerState,
    CreateContainerRequest,
    ExVeTelematicDataResponseDto,
    MappingType,
    TelematicDataEntryDto,
    VehicleDto,
    VehicleMappingDto,
)
from backend_stub.cardata.records import Container
from backend_stub.cardata.tokens import SCOPE_API, Grant

# No length or format limit: a container id that is not ours is simply unknown (404), as BMW answers.
ContainerId = Annotated[str, Path(alias="containerId", description="ID that identifies an unique container")]


def _present(found: dict[str, Any]) -> dict[str, Any]:
    """The service's answer without its null fields: BMW's schemas have none (an absent field is absent)."""
    return {name: value for name, value in found.items() if value is not None}


def _container(found: Container) -> ContainerDto:
    return ContainerDto(
        containerId=found.container_id,
        name=found.name,
        purpose=found.purpose,
        state=ContainerState(found.state),
        created=found.created,
    )


def _container_details(found: Container) -> ContainerDetailsDto:
    summary = _container(found).model_dump()
    return ContainerDetailsDto(**summary, technicalDescriptors=sorted(found.keys))


def customer_router(context: CardataContext) -> APIRouter:
    router = APIRouter(prefix="/customers", responses=CUSTOMER_ERRORS)
    service, run = context.service, context.run
    Authorized = Annotated[Grant, Depends(context.bearer(SCOPE_API))]  # noqa: N806 (a type alias)

    @router.get(
        "/containers",
        tags=["Containers"],
        summary="List the containers",
        operation_id="listContainers",
        dependencies=[XVersion],
    )
    async def list_containers(grant: Authorized) -> ContainerListDto:
        found = await run(service.containers, grant.gcid, grant.client_id)
        return ContainerListDto(containers=[_container(item) for item in found])

    @router.post(
        "/containers",
        tags=["Containers"],
        summary="Create a container",
        operation_id="createContainer",
        status_code=201,
        dependencies=[XVersionOptional],
        responses={**BODY_ERRORS, **CONFLICT_ERRORS},
    )
    async def create_container(grant: Authorized, request: CreateContainerRequest) -> ContainerDetailsDto:
        created = await run(
            service.create_container,
            grant.gcid,
            grant.client_id,
            request.name,
            request.purpose,
            request.technicalDescriptors,
            context.clock.now(),
        )
        return _container_details(created)

    @router.get(
        "/containers/{containerId}",
        tags=["Containers"],
        summary="Request container details",
        operation_id="getContainerDetails",
        dependencies=[XVersion],
    )
    async def get_container(grant: Authorized, container_id: ContainerId) -> ContainerDetailsDto:
        found = await run(service.container, grant.gcid, grant.client_id, container_id)
        return _container_details(found)

    @router.delete(
        "/containers/{containerId}",
        tags=["Containers"],
        summary="Delete container by ID",
        operation_id="deleteContainer",
        status_code=204,
        response_class=Response,
        dependencies=[XVersionOptional],
        responses={204: {"description": "Successful operation, no content"}},
    )
    async def delete_container(grant: Authorized, container_id: ContainerId) -> Response:
        await run(service.delete_container, grant.gcid, grant.client_id, container_id, context.clock.now())
        return Response(status_code=204)

    @router.get(
        "/vehicles/mappings",
        tags=["Vehicles"],
        summary="Request mapped vehicles",
        operation_id="getMappings",
        dependencies=[XVersion],
    )
    async def get_mappings(grant: Authorized) -> list[VehicleMappingDto]:
        found = await run(service.vehicle_mappings, grant.gcid, grant.client_id, context.clock.now())
        return [
            VehicleMappingDto(vin=item.vin, mappedSince=item.mapped_since, mappingType=MappingType(item.mapping_type))
            for item in found
        ]

    @router.get(
        "/vehicles/{vin}/basicData",
        tags=["Vehicles"],
        summary="Request basic vehicle data for the specified vehicle",
        operation_id="getBasicData",
        dependencies=[XVersion],
    )
    async def get_basic_data(grant: Authorized, vin: Vin) -> VehicleDto:
        found = await run(service.basic_data, grant.gcid, grant.client_id, vin, context.clock.now())
        return VehicleDto.model_validate(_present(found))

    @router.get(
        "/vehicles/{vin}/telematicData",
        tags=["Vehicles"],
        summary="Request the vehicle's telematic data for a container",
        operation_id="getTelematicData",
        dependencies=[XVersion],
    )
    async def get_telematic_data(
        grant: Authorized,
        vin: Vin,
        container_id: Annotated[str, Query(alias="containerId", description="The container whose keys to read")],
    ) -> ExVeTelematicDataResponseDto:
        found = await run(service.telematic_data, grant.gcid, grant.client_id, vin, container_id, context.clock.now())
        return ExVeTelematicDataResponseDto(
            telematicData={key: TelematicDataEntryDto.model_validate(_present(entry)) for key, entry in found.items()}
        )

    return router
