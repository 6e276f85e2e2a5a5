"""Hostile input to every CarData endpoint gets the documented refusal, and changes nothing.

Every customer API endpoint is sent: no or a wrong `x-version`; no, a malformed, a forged (guessed,
re-signed, `alg: none`, an id_token or refresh token in its place, garbage) and an expired token; a
bad VIN and a VIN of another owner's car; an unknown container and another client's; oversized,
malformed, deeply nested JSON and values no field can hold (2^64, 1e400, NaN). The OAuth endpoints get
malformed forms, unknown clients, forged codes and oversized bodies. Each answer must carry the status
BMW's description documents for it in BMW's shape (`CustomerErrorResponse`, or RFC 6749/8628
`{error, error_description}` with an error BMW documents under that status), and the whole database —
containers, consents, tokens, device codes, transfers — must be exactly as it was.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nacl.signing import SigningKey

from backend_stub.cardata.id_token import IdTokenSigner
from backend_stub.cardata.oauth import pkce_challenge
from tests.backend_stub.cardata.conftest import MAX_BODY_BYTES, ModuleApp
from tests.backend_stub.cardata.http_world import DOOR, FORM
from tests.conftest import OTHER_VIN, VIN

DATA = Path(__file__).parents[2] / "data" / "cardata"
ERROR_FIELDS = {"exveErrorId", "exveErrorRef", "exveErrorMsg", "exveNote"}
# Which OAuth error words BMW documents under which status (our fixture of its description).
OAUTH_ERRORS: dict[str, dict[str, list[str]]] = {
    operation.split(" ", 1)[1]: spec.get("errors", {})
    for operation, spec in json.loads((DATA / "bmw_device_code_flow.json").read_text())["operations"].items()
}
# RFC 6749 §5.2 (token endpoint), §4.1.2.1 (response type) and RFC 8628 §3.5: the words a client knows.
RFC_ERRORS = {
    400: [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "unsupported_response_type",
        "slow_down",
    ],
    401: ["invalid_client", "expired_token"],
    403: ["authorization_pending", "access_denied"],
}
NO_SUCH_VIN = "WBA00000000000099"  # well-formed, nobody's


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned_jwt(claims: dict[str, Any]) -> str:
    return f"{b64url(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64url(json.dumps(claims).encode())}."


@dataclass(frozen=True, slots=True)
class Call:
    """One request: `{vin}`, `{container}` and `{foreign}` in the path are filled in per world."""

    method: str
    path: str
    json_body: Any = None
    version_required: bool = True

    def url(self, module: ModuleApp, *, vin: str = VIN, container: str | None = None) -> str:
        return self.path.format(vin=vin, container=container or module.container_id)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


CREATE = {"name": "doors", "purpose": "insurance", "technicalDescriptors": [DOOR]}
CUSTOMER_CALLS = [
    Call("GET", "/customers/containers"),
    Call("POST", "/customers/containers", CREATE, version_required=False),
    Call("GET", "/customers/containers/{container}"),
    Call("DELETE", "/customers/containers/{container}", version_required=False),
    Call("GET", "/customers/vehicles/mappings"),
    Call("GET", "/customers/vehicles/{vin}/basicData"),
    Call("GET", "/customers/vehicles/{vin}/telematicData?containerId={container}"),
    Call("GET", "/simulator/vehicles/{vin}/capabilities"),
]
VIN_CALLS = [call for call in CUSTOMER_CALLS if "{vin}" in call.path]
CONTAINER_CALLS = [call for call in CUSTOMER_CALLS if "{container}" in call.path]
OWNER_CALLS = [
    Call("GET", "/simulator/reports/data"),
    Call("GET", "/simulator/reports/transactions"),
    Call("GET", "/simulator/reports/data.html"),
    Call("GET", "/simulator/reports/transactions.html"),
    Call("GET", "/simulator/consents"),
    Call("PUT", f"/simulator/consents/{VIN}/{uuid.UUID(int=1)}", {"keys": [DOOR]}),
    Call("DELETE", f"/simulator/consents/{VIN}/{uuid.UUID(int=1)}"),
]


def database_state(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, read on a connection of its own (what the service committed)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {table: sorted(db.execute(f'SELECT * FROM "{table}"'), key=repr) for table in tables}


@pytest.fixture
async def http(cardata_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a bug answers as the client would see it (a 500), failing the status check
    transport = httpx.ASGITransport(app=cardata_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://cardata.test") as client:
        yield client


@pytest.fixture
def unchanged(cardata_module: ModuleApp) -> Iterator[None]:
    """The test's requests leave every table as it was."""
    before = database_state(cardata_module.database)
    yield
    assert database_state(cardata_module.database) == before


def headers(module: ModuleApp, **changes: str | None) -> dict[str, str]:
    sent: dict[str, str | None] = {
        "x-version": "v1",
        "authorization": f"Bearer {module.tokens.access_token}",
        **changes,
    }
    return {name: value for name, value in sent.items() if value is not None}


async def send(http: httpx.AsyncClient, call: Call, url: str, sent: dict[str, str]) -> httpx.Response:
    body = None if call.json_body is None else json.dumps(call.json_body).encode()
    if body is not None:
        sent = {**sent, "content-type": "application/json"}
    return await http.request(call.method, url, headers=sent, content=body)


def refused(response: httpx.Response, status: int) -> dict[str, Any]:
    """BMW's CustomerErrorResponse with the documented status."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == ERROR_FIELDS, body
    assert body["exveErrorId"] == f"CU-{status}", body
    assert len(body["exveErrorMsg"]) <= 600  # a reason, never the input echoed back whole
    if status == 401:
        assert response.headers["www-authenticate"].lower().startswith("bearer")
    return body


def oauth_refused(response: httpx.Response, path: str, status: int) -> str:
    """RFC 6749 §5.2's shape, with a status BMW documents for the endpoint and an error word BMW documents
    under it or RFC 6749/8628 defines for a refusal of that kind."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "error_description"}, body
    if status != 413:  # ours: the body limit, before any OAuth parsing (a declared difference)
        documented = OAUTH_ERRORS[path].get(str(status), []) + RFC_ERRORS[status]
        assert body["error"] in documented, (body, documented)
    return str(body["error"])


# --- x-version --------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [c for c in CUSTOMER_CALLS if c.version_required], ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_missing_x_version_is_a_bad_request(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call
) -> None:
    refused(await send(http, call, call.url(cardata_module), headers(cardata_module, **{"x-version": None})), 400)


@pytest.mark.parametrize("version", ["v2", "", "V1", "v1,v1", "v" * 5000, "v1\t"])
@pytest.mark.parametrize("call", CUSTOMER_CALLS, ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_wrong_x_version_is_a_bad_request(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call, version: str
) -> None:
    refused(await send(http, call, call.url(cardata_module), headers(cardata_module, **{"x-version": version})), 400)


# --- tokens -----------------------------------------------------------------------------------------


def forged_tokens(module: ModuleApp) -> dict[str, str | None]:
    real = module.tokens
    other_key = IdTokenSigner(SigningKey.generate(), issuer="https://customer.bmwgroup.com")
    far = 2**64
    claims = {"iss": "x", "sub": real.gcid, "aud": real.client_id, "gcid": real.gcid, "iat": 0, "exp": far}
    return {
        "none": None,
        "empty bearer": "Bearer ",
        "basic": "Basic " + b64url(b"anna:secret"),
        "guessed": "Bearer " + b64url(uuid.uuid4().bytes * 2),
        "altered": "Bearer " + real.access_token[:-2] + ("AA" if not real.access_token.endswith("AA") else "BB"),
        "id_token": f"Bearer {real.id_token}",
        "refresh_token": f"Bearer {real.refresh_token}",
        "alg none": "Bearer " + unsigned_jwt(claims),
        "re-signed": "Bearer " + other_key.sign_jwt(claims),
        "garbage": "Bearer \x01\x7f%00;DROP TABLE cardata_containers",
        "huge": "Bearer " + "A" * 6000,
        "two": f"Bearer {real.access_token} {real.access_token}",
    }


FORGERIES = [
    "none",
    "empty bearer",
    "basic",
    "guessed",
    "altered",
    "id_token",
    "refresh_token",
    "alg none",
    "re-signed",
    "garbage",
    "huge",
    "two",
]  # the keys of forged_tokens, for the test ids


@pytest.mark.parametrize("forgery", FORGERIES)
@pytest.mark.parametrize("call", CUSTOMER_CALLS + OWNER_CALLS, ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_a_missing_or_forged_token_is_unauthorized(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call, forgery: str
) -> None:
    forged = forged_tokens(cardata_module)
    assert sorted(forged) == sorted(FORGERIES)
    token = forged[forgery]
    refused(await send(http, call, call.url(cardata_module), headers(cardata_module, authorization=token)), 401)


@pytest.mark.parametrize("seconds", [3601, 10**11], ids=["an hour later", "in the year 5000"])
@pytest.mark.parametrize("call", CUSTOMER_CALLS, ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_an_expired_token_is_unauthorized(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call, seconds: int
) -> None:
    clock = cardata_module.world.clock
    clock.step_wall(seconds)
    try:
        refused(await send(http, call, call.url(cardata_module), headers(cardata_module)), 401)
    finally:
        clock.step_wall(-seconds)


@pytest.mark.parametrize("call", OWNER_CALLS, ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_a_third_partys_token_does_not_reach_the_owners_pages(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call
) -> None:
    refused(await send(http, call, call.url(cardata_module), headers(cardata_module)), 403)


# --- VINs and containers ----------------------------------------------------------------------------

BAD_VINS = {
    "short": "WBA123",
    "letter I": "WBA0000000000001I",
    "lower case": VIN.lower(),
    "long": "W" * 5000,
    "unicode": "WBA00000000000ÄÖÜ",
    "sql": "' OR 1=1 --",
    "dot dot": "..",
    "bignum": str(2**64),
}


@pytest.mark.parametrize("vin", list(BAD_VINS.values()), ids=list(BAD_VINS))
@pytest.mark.parametrize("call", VIN_CALLS, ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_a_malformed_vin_is_a_bad_request(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call, vin: str
) -> None:
    response = await send(http, call, call.url(cardata_module, vin=vin), headers(cardata_module))
    # ".." is resolved by the URL before routing: it names another path, which is not there.
    refused(response, 404 if vin == ".." else 400)


@pytest.mark.parametrize("vin", [OTHER_VIN, NO_SUCH_VIN], ids=["another owner's car", "nobody's car"])
@pytest.mark.parametrize("call", VIN_CALLS, ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_a_vin_not_mapped_to_the_customer_is_forbidden(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call, vin: str
) -> None:
    refused(await send(http, call, call.url(cardata_module, vin=vin), headers(cardata_module)), 403)


UNKNOWN_CONTAINERS = {
    "unknown": uuid.uuid4().hex,
    "bignum": str(2**64),
    "sql": "x' OR '1'='1",
    "long": "c" * 3000,
    "unicode": "контейнер",
}


@pytest.mark.parametrize("container", ["foreign", *UNKNOWN_CONTAINERS])
@pytest.mark.parametrize("call", CONTAINER_CALLS, ids=lambda c: c.label)
@pytest.mark.usefixtures("unchanged")
async def test_an_unknown_or_foreign_container_is_not_found(
    http: httpx.AsyncClient, cardata_module: ModuleApp, call: Call, container: str
) -> None:
    chosen = cardata_module.foreign_container_id if container == "foreign" else UNKNOWN_CONTAINERS[container]
    response = await send(http, call, call.url(cardata_module, container=chosen), headers(cardata_module))
    refused(response, 404)


@pytest.mark.usefixtures("unchanged")
async def test_telematic_data_without_a_container_is_a_bad_request(
    http: httpx.AsyncClient, cardata_module: ModuleApp
) -> None:
    refused(await http.get(f"/customers/vehicles/{VIN}/telematicData", headers=headers(cardata_module)), 400)


# --- bodies -----------------------------------------------------------------------------------------

BAD_BODIES: dict[str, tuple[bytes, int]] = {
    "oversized": (json.dumps({**CREATE, "name": "x" * MAX_BODY_BYTES}).encode(), 413),
    "malformed": (b'{"name": "doors", "technicalDescriptors": [', 400),
    "not json": (b"name=doors", 400),
    "deeply nested": (b"[" * 2000 + b"]" * 2000, 400),
    "nested in a field": (b'{"name": ' + b"[" * 1500 + b"]" * 1500 + b"}", 400),
    "2^64 name": (b'{"name": 18446744073709551616, "technicalDescriptors": []}', 400),
    "1e400 descriptor": (b'{"technicalDescriptors": [1e400]}', 400),
    "NaN": (b'{"name": NaN, "technicalDescriptors": []}', 400),
    "descriptors not a list": (b'{"technicalDescriptors": "vehicle.cabin.door.row1.driver.isOpen"}', 400),
    "unknown descriptor": (b'{"technicalDescriptors": ["vehicle.no.such.key"]}', 400),
    "invalid utf-8": (b'{"name": "\xff\xfe"}', 400),
    "array": (b"[]", 400),
    "null": (b"null", 400),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
@pytest.mark.usefixtures("unchanged")
async def test_a_bad_container_request_is_refused_and_creates_nothing(
    http: httpx.AsyncClient, cardata_module: ModuleApp, case: str
) -> None:
    body, status = BAD_BODIES[case]
    sent = {**headers(cardata_module), "content-type": "application/json"}
    refused(await http.post("/customers/containers", content=body, headers=sent), status)


@pytest.mark.usefixtures("unchanged")
async def test_a_body_larger_than_declared_by_chunks_is_refused(
    http: httpx.AsyncClient, cardata_module: ModuleApp
) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked, counted as it arrives
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    sent = {**headers(cardata_module), "content-type": "application/json"}
    refused(await http.post("/customers/containers", content=chunks(), headers=sent), 413)


# --- OAuth ------------------------------------------------------------------------------------------


def device_form(module: ModuleApp, **changes: str) -> dict[str, str]:
    return {
        "client_id": module.tokens.client_id,
        "response_type": "device_code",
        "scope": "authenticate_user openid cardata:api:read",
        "code_challenge": "A" * 43,
        "code_challenge_method": "S256",
        **changes,
    }


def token_form(module: ModuleApp, **changes: str) -> dict[str, str]:
    return {
        "client_id": module.tokens.client_id,
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": b64url(uuid.uuid4().bytes * 2),
        "code_verifier": "v" * 43,
        **changes,
    }


async def post_form(http: httpx.AsyncClient, path: str, form: dict[str, str] | bytes, status: int) -> str:
    """POST a form (fields, or raw bytes as sent) and expect the OAuth refusal `status`."""
    if isinstance(form, bytes):
        response = await http.post(path, content=form, headers=FORM)
    else:
        response = await http.post(path, data=form, headers=FORM)
    return oauth_refused(response, path, status)


# BMW documents 400 as the device-code endpoint's only refusal: an unknown client there is 400
# invalid_client (RFC 6749 §5.2 allows it for a client that did not authenticate by header).
DEVICE_CASES: dict[str, tuple[dict[str, str] | bytes, int]] = {
    "unknown client": ({"client_id": str(uuid.uuid4())}, 400),
    "bignum client": ({"client_id": str(2**64)}, 400),
    "plain challenge": ({"code_challenge_method": "plain"}, 400),
    "short challenge": ({"code_challenge": "abc"}, 400),
    "response type": ({"response_type": "token"}, 400),
    "unknown scope": ({"scope": "cardata:api:write"}, 400),
    "huge scope": ({"scope": "openid " * 500}, 400),
    "no challenge": ({"code_challenge": ""}, 400),
    "malformed form": (b"client_id=%FF%FE&&&=", 400),
    "repeated field": (b"client_id=a&client_id=b", 400),
    "oversized": (b"scope=" + b"a" * (MAX_BODY_BYTES + 1), 413),
}


@pytest.mark.parametrize("case", list(DEVICE_CASES))
@pytest.mark.usefixtures("unchanged")
async def test_a_bad_device_code_request_is_refused_as_oauth_says(
    http: httpx.AsyncClient, cardata_module: ModuleApp, case: str
) -> None:
    change, status = DEVICE_CASES[case]
    form = change if isinstance(change, bytes) else device_form(cardata_module, **change)
    await post_form(http, "/gcdm/oauth/device/code", form, status)


TOKEN_CASES: dict[str, tuple[dict[str, str] | bytes, int]] = {
    "unknown client": ({"client_id": str(uuid.uuid4())}, 401),
    "unknown device code": ({}, 400),
    "huge device code": ({"device_code": "d" * 3000}, 400),
    "bad verifier": ({"code_verifier": "short"}, 400),
    "grant type": ({"grant_type": "password"}, 400),
    "forged refresh": ({"grant_type": "refresh_token", "refresh_token": b64url(uuid.uuid4().bytes)}, 400),
    "no device code": ({"device_code": ""}, 400),
    "json body": (json.dumps({"client_id": "x", "grant_type": "refresh_token"}).encode(), 400),
    "oversized": (b"device_code=" + b"a" * (MAX_BODY_BYTES + 1), 413),
}


@pytest.mark.parametrize("case", list(TOKEN_CASES))
@pytest.mark.usefixtures("unchanged")
async def test_a_bad_token_request_is_refused_as_oauth_says(
    http: httpx.AsyncClient, cardata_module: ModuleApp, case: str
) -> None:
    change, status = TOKEN_CASES[case]
    form = change if isinstance(change, bytes) else token_form(cardata_module, **change)
    await post_form(http, "/gcdm/oauth/token", form, status)


async def test_an_expired_device_code_is_expired_token_and_issues_nothing(
    http: httpx.AsyncClient, cardata_module: ModuleApp
) -> None:
    verifier = "v" * 43
    started = cardata_module.world.parts.flow.start(
        cardata_module.tokens.client_id,
        "openid cardata:api:read",
        pkce_challenge(verifier),
        "S256",
    )
    before = database_state(cardata_module.database)
    clock = cardata_module.world.clock
    clock.step_wall(started.expires_in + 1)
    try:
        form = token_form(cardata_module, device_code=started.device_code, code_verifier=verifier)
        assert await post_form(http, "/gcdm/oauth/token", form, 401) == "expired_token"
    finally:
        clock.step_wall(-(started.expires_in + 1))
    after = database_state(cardata_module.database)
    assert after["cardata_grants"] == before["cardata_grants"]  # no tokens issued


# --- the matrix is whole ----------------------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
async def test_the_device_page_escapes_the_code_and_refuses_a_long_one(http: httpx.AsyncClient) -> None:
    page = await http.get("/simulator/device", params={"user_code": "<script>x</script>"})
    assert page.status_code == 200
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    refused(await http.get("/simulator/device", params={"user_code": "B" * 5000}), 400)


def test_every_served_operation_is_attacked_here(cardata_app: FastAPI) -> None:
    """A new route must join the lists above: what is not attacked here is not known to refuse."""
    attacked = {(call.method, call.path.split("?")[0]) for call in CUSTOMER_CALLS + OWNER_CALLS}
    attacked |= {("POST", "/gcdm/oauth/device/code"), ("POST", "/gcdm/oauth/token"), ("GET", "/simulator/device")}
    attacked = {(method, path.replace(f"{VIN}/{uuid.UUID(int=1)}", "{vin}/{clientId}")) for method, path in attacked}
    served = {
        (method.upper(), path.replace("{containerId}", "{container}"))
        for path, item in cardata_app.openapi()["paths"].items()
        for method in item
    }
    assert served - attacked == set()
