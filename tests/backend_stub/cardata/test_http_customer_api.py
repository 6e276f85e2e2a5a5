"""BMW's customer API over HTTP, in process: a client signed in with the device-code flow reads its
owner's vehicles, makes a container and reads the last values the owner consented to; and every bad
request gets BMW's documented error in BMW's shape, and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tcu.clock import ManualClock
from tests.backend_stub.cardata.http_world import DOOR, OWNER, V1, HttpWorld, bearer, close_world, open_world
from tests.conftest import VIN

OTHER_VIN = "WBA00000000000017"
ERROR_FIELDS = {"exveErrorId", "exveErrorRef", "exveErrorMsg", "exveNote"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpWorld]:
    """One backend for the module (its setup is the slow part); each test signs in a client of its own."""
    opened = open_world(tmp_path_factory.mktemp("cardata-http"), ManualClock())
    try:
        yield opened
    finally:
        close_world(opened)


@pytest.fixture
async def tokens(world: HttpWorld) -> dict[str, Any]:
    return await world.sign_in(world.add_client())


def refused(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_FIELDS, body
    assert body["exveErrorId"] == f"CU-{status}"
    return body


async def make_container(world: HttpWorld, tokens: dict[str, Any], *keys: str) -> str:
    created = await world.http.post(
        "/customers/containers",
        headers=bearer(tokens),
        json={"name": "doors", "purpose": "insurance", "technicalDescriptors": list(keys)},
    )
    assert created.status_code == 201, created.text
    container_id: str = created.json()["containerId"]
    return container_id


async def test_a_signed_in_client_reads_the_consented_last_value_and_the_transfer_is_logged(
    world: HttpWorld, tokens: dict[str, Any]
) -> None:
    container_id = await make_container(world, tokens, DOOR)
    listed = await world.http.get("/customers/containers", headers=bearer(tokens))
    assert [item["containerId"] for item in listed.json()["containers"]] == [container_id]
    details = await world.http.get(f"/customers/containers/{container_id}", headers=bearer(tokens))
    assert (details.json()["state"], details.json()["technicalDescriptors"]) == ("ACTIVE", [DOOR])
    world.add_door_value(True)
    url = f"/customers/vehicles/{VIN}/telematicData"
    without_consent = await world.http.get(url, params={"containerId": container_id}, headers=bearer(tokens))
    refused(without_consent, 403)
    world.parts.store.grant(VIN, tokens["client_id"], [DOOR], world.clock.now())
    mappings = await world.http.get("/customers/vehicles/mappings", headers=bearer(tokens))
    assert mappings.status_code == 200, mappings.text
    assert [(item["vin"], item["mappingType"]) for item in mappings.json()] == [(VIN, "PRIMARY")]
    data = await world.http.get(url, params={"containerId": container_id}, headers=bearer(tokens))
    assert data.status_code == 200, data.text
    assert data.json()["telematicData"][DOOR]["value"] == "true"
    transfers = world.parts.store.transfers(world.parts.store.gcid_of(OWNER), vin=VIN)
    [transfer] = [found for found in transfers if found.client_id == tokens["client_id"]]
    assert (transfer.channel, transfer.keys) == ("rest", frozenset({DOOR}))


async def test_basic_data_answers_bmws_vehicle_fields_without_nulls(world: HttpWorld, tokens: dict[str, Any]) -> None:
    world.parts.store.grant(VIN, tokens["client_id"], [DOOR], world.clock.now())
    basic = await world.http.get(f"/customers/vehicles/{VIN}/basicData", headers=bearer(tokens))
    assert basic.status_code == 200, basic.text
    assert basic.json()["vin"] == VIN
    assert None not in basic.json().values()


async def test_a_client_without_consent_gets_forbidden_for_basic_data_and_capabilities(
    world: HttpWorld, tokens: dict[str, Any]
) -> None:
    """Never granted and revoked alike: 403 CU-403, no equipment, SIM state or capability reasons."""
    client_id = tokens["client_id"]
    urls = [f"/customers/vehicles/{VIN}/basicData", f"/simulator/vehicles/{VIN}/capabilities"]
    for url in urls:
        refused(await world.http.get(url, headers=bearer(tokens)), 403)
    assert (await world.http.get("/customers/vehicles/mappings", headers=bearer(tokens))).json() == []
    world.parts.store.grant(VIN, client_id, [DOOR], world.clock.now())
    for url in urls:
        assert (await world.http.get(url, headers=bearer(tokens))).status_code == 200
    world.parts.store.revoke(VIN, client_id, world.clock.now())
    for url in urls:
        refused(await world.http.get(url, headers=bearer(tokens)), 403)


async def test_a_deleted_container_is_gone(world: HttpWorld, tokens: dict[str, Any]) -> None:
    container_id = await make_container(world, tokens, DOOR)
    auth = {"authorization": bearer(tokens)["authorization"]}  # BMW lists no x-version on DELETE
    deleted = await world.http.delete(f"/customers/containers/{container_id}", headers=auth)
    assert (deleted.status_code, deleted.content) == (204, b"")
    refused(await world.http.get(f"/customers/containers/{container_id}", headers=bearer(tokens)), 404)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        pytest.param({}, 401, id="no-token"),
        pytest.param({"authorization": "Bearer forged-token"}, 401, id="forged-token"),
        pytest.param({"authorization": "Basic YW5uYTpwdw=="}, 401, id="not-bearer"),
        pytest.param("no-version", 400, id="no-x-version"),
        pytest.param("v2", 400, id="wrong-x-version"),
    ],
)
async def test_every_customer_route_refuses_a_request_without_credentials_or_version(
    world: HttpWorld, tokens: dict[str, Any], headers: Any, status: int
) -> None:
    if headers == "no-version":
        headers = {"authorization": bearer(tokens)["authorization"]}
    elif headers == "v2":
        headers = {**bearer(tokens), "x-version": "v2"}
    else:
        headers = {**V1, **headers}
    container_id = await make_container(world, tokens, DOOR)
    for method, url in [
        ("GET", "/customers/containers"),
        ("GET", f"/customers/containers/{container_id}"),
        ("GET", "/customers/vehicles/mappings"),
        ("GET", f"/customers/vehicles/{VIN}/basicData"),
        ("GET", f"/customers/vehicles/{VIN}/telematicData?containerId={container_id}"),
        ("GET", f"/simulator/vehicles/{VIN}/capabilities"),
    ]:
        body = refused(await world.http.request(method, url, headers=headers), status)
        assert "forged-token" not in body["exveErrorMsg"]


async def test_an_expired_token_is_refused_and_a_refreshed_one_works(world: HttpWorld, tokens: dict[str, Any]) -> None:
    world.clock.advance(3601)
    refused(await world.http.get("/customers/vehicles/mappings", headers=bearer(tokens)), 401)
    refreshed = await world.http.post(
        "/gcdm/oauth/token",
        data={
            "client_id": tokens["client_id"],
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert (await world.http.get("/customers/vehicles/mappings", headers=bearer(refreshed.json()))).status_code == 200


@pytest.mark.parametrize(
    ("vin", "status"),
    [("NOT-A-VIN", 400), ("WMWZZZ3CZ2E12345I", 400), ("x" * 5000, 400), (OTHER_VIN, 403)],
    ids=["malformed", "letter-I", "huge", "foreign"],
)
async def test_a_bad_or_foreign_vin_is_refused(world: HttpWorld, tokens: dict[str, Any], vin: str, status: int) -> None:
    container_id = await make_container(world, tokens, DOOR)
    for url in (f"/customers/vehicles/{vin}/basicData", f"/customers/vehicles/{vin}/telematicData"):
        refused(await world.http.get(url, params={"containerId": container_id}, headers=bearer(tokens)), status)
    transfers = world.parts.store.transfers(world.parts.store.gcid_of(OWNER))
    assert [found for found in transfers if found.client_id == tokens["client_id"]] == []


async def test_an_unknown_container_is_not_found(world: HttpWorld, tokens: dict[str, Any]) -> None:
    for container_id in ("0" * 32, "../../etc", "x" * 3000):
        refused(await world.http.get(f"/customers/containers/{container_id}", headers=bearer(tokens)), 404)
        url = f"/customers/vehicles/{VIN}/telematicData"
        refused(await world.http.get(url, params={"containerId": container_id}, headers=bearer(tokens)), 404)
    refused(await world.http.get(f"/customers/vehicles/{VIN}/telematicData", headers=bearer(tokens)), 400)


def _deep(depth: int) -> bytes:
    return b'{"name": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="malformed"),
        pytest.param(_deep(1500), id="deep"),
        pytest.param(b'{"name": ' + b"9" * 3000 + b"}", id="huge-number"),
        pytest.param(b'{"name": 1e999999}', id="infinite-number"),
        pytest.param(b'{"technicalDescriptors": "not a list"}', id="wrong-type"),
        pytest.param(b'{"technicalDescriptors": ["no.such.key"]}', id="unknown-key"),
        pytest.param(b'{"name": "\xff\xfe"}', id="not-utf8"),
        pytest.param(b"[]", id="not-an-object"),
    ],
)
async def test_a_bad_container_body_is_refused_and_creates_nothing(
    world: HttpWorld, tokens: dict[str, Any], body: bytes
) -> None:
    headers = {**bearer(tokens), "content-type": "application/json"}
    refused(await world.http.post("/customers/containers", headers=headers, content=body), 400)
    listed = await world.http.get("/customers/containers", headers=bearer(tokens))
    assert listed.json() == {"containers": []}


async def test_an_oversized_body_is_refused_before_parsing_declared_or_chunked(
    world: HttpWorld, tokens: dict[str, Any]
) -> None:
    big = b'{"name": "' + b"a" * 5000 + b'"}'  # the world's limit is 4096 bytes
    headers = {**bearer(tokens), "content-type": "application/json"}
    refused(await world.http.post("/customers/containers", headers=headers, content=big), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: transfer-encoding chunked
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    refused(await world.http.post("/customers/containers", headers=headers, content=chunks()), 413)
    listed = await world.http.get("/customers/containers", headers=bearer(tokens))
    assert listed.json() == {"containers": []}


async def test_unknown_paths_and_methods_answer_in_bmws_shape(world: HttpWorld) -> None:
    refused(await world.http.get("/customers/nothing", headers=V1), 404)
    refused(await world.http.put("/customers/containers", headers=V1), 405)


def test_the_generated_openapi_names_bmws_schemas_and_never_422(world: HttpWorld) -> None:
    document = world.http._transport.app.openapi()  # type: ignore[attr-defined]
    for path_item in document["paths"].values():
        for operation in path_item.values():
            assert "422" not in operation["responses"]
    schemas = document["components"]["schemas"]
    assert {"CustomerErrorResponse", "ContainerListDto", "VehicleMappingDto", "DeviceCodeFlowPart1"} <= set(schemas)
    assert "HTTPValidationError" not in schemas
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
