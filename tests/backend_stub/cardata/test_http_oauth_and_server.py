"""The device-code sign-in over HTTP as BMW's clients poll it, our owner pages behind their own scope,
and `backend-stub run` serving it all on a real port beside ingest."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend_stub.cardata import oauth_routes
from backend_stub.cardata.dynsec_commands import DynsecError
from backend_stub.cardata.http_app import create_app
from backend_stub.cardata.owner_routes import SCOPE_OWNER
from backend_stub.cardata.tokens import TokenSet
from backend_stub.config import load_backend_config
from backend_stub.errors import BackendConfigError
from tcu.clock import ManualClock
from tests.backend_stub.cardata.http_world import (
    DOOR,
    FORM,
    OWNER,
    V1,
    HttpWorld,
    bearer,
    bench_backend,
    close_world,
    device_code_form,
    open_world,
    token_form,
)
from tests.conftest import VIN, running_task


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpWorld]:
    opened = open_world(tmp_path_factory.mktemp("cardata-oauth"), ManualClock())
    try:
        yield opened
    finally:
        close_world(opened)


async def start(world: HttpWorld, client_id: str) -> tuple[dict[str, Any], str]:
    form, verifier = device_code_form(client_id, "openid cardata:api:read")
    started = await world.http.post("/gcdm/oauth/device/code", headers=FORM, data=form)
    assert started.status_code == 200, started.text
    return started.json(), verifier


def oauth_refusal(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error
    assert set(response.json()) == {"error", "error_description"}


async def test_polling_answers_as_bmws_client_expects_pending_slow_down_then_tokens(world: HttpWorld) -> None:
    client_id = world.add_client()
    started, verifier = await start(world, client_id)
    assert started["verification_uri_complete"].endswith(f"/simulator/device?user_code={started['user_code']}")
    poll = token_form(client_id, started["device_code"], verifier)
    oauth_refusal(await world.http.post("/gcdm/oauth/token", data=poll), 403, "authorization_pending")
    oauth_refusal(await world.http.post("/gcdm/oauth/token", data=poll), 400, "slow_down")
    world.clock.advance(started["interval"] + 5)
    world.parts.flow.approve(started["user_code"], OWNER, now=world.clock.now())
    tokens = await world.http.post("/gcdm/oauth/token", data=poll)
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["gcid"] == world.parts.store.gcid_of(OWNER)
    assert tokens.headers["cache-control"] == "no-store"
    oauth_refusal(await world.http.post("/gcdm/oauth/token", data=poll), 400, "invalid_grant")  # used once


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        pytest.param(b"client_id=a&client_id=b&grant_type=refresh_token", FORM, 400, "invalid_request", id="repeated"),
        pytest.param(b'{"client_id": "a"}', {"content-type": "application/json"}, 400, "invalid_request", id="json"),
        pytest.param(b"grant_type=refresh_token", FORM, 400, "invalid_request", id="no-client"),
        pytest.param(b"client_id=%FF&grant_type=x", FORM, 400, "invalid_request", id="not-utf8"),
        pytest.param(b"&".join([b"f%d=1" % n for n in range(100)]), FORM, 400, "invalid_request", id="many-fields"),
        pytest.param(b"client_id=" + b"a" * 5000, FORM, 413, "invalid_request", id="oversized"),
        pytest.param(
            b"client_id=00000000-0000-4000-8000-000000000000&grant_type=password",
            FORM,
            400,
            "unsupported_grant_type",
            id="grant-type",
        ),
        pytest.param(
            b"client_id=00000000-0000-4000-8000-000000000000&grant_type=refresh_token&refresh_token=forged",
            FORM,
            401,
            "invalid_client",
            id="unknown-client",
        ),
    ],
)
async def test_a_bad_token_request_gets_an_oauth_error(
    world: HttpWorld, body: bytes, headers: dict[str, str], status: int, error: str
) -> None:
    oauth_refusal(await world.http.post("/gcdm/oauth/token", headers=headers, content=body), status, error)


async def test_a_device_code_request_without_pkce_is_refused(world: HttpWorld) -> None:
    form = {"client_id": world.add_client(), "response_type": "device_code", "scope": "openid"}
    oauth_refusal(await world.http.post("/gcdm/oauth/device/code", headers=FORM, data=form), 400, "invalid_request")


class GatedLogins:
    """The streaming side of a broker that applies a login only when the test opens the gate (or refuses it)."""

    def __init__(self, refusal: Exception | None = None) -> None:
        self.issued: list[str] = []
        self.asked = asyncio.Event()
        self.gate = asyncio.Event()
        self.refusal = refusal

    def tokens_issued(self, tokens: TokenSet) -> None:
        self.issued.append(tokens.gcid)

    def tokens_revoked(self, gcid: str) -> None:
        pass

    async def applied(self, gcid: str) -> None:
        assert gcid in self.issued  # told before the answer waits on it
        self.asked.set()
        if self.refusal is not None:
            raise self.refusal
        await self.gate.wait()


async def approved_poll(world: HttpWorld) -> dict[str, str]:
    """A token request for an approved device code (the answer is the next thing that happens)."""
    client_id = world.add_client()
    started, verifier = await start(world, client_id)
    world.parts.flow.approve(started["user_code"], OWNER, now=world.clock.now())
    return token_form(client_id, started["device_code"], verifier)


async def test_tokens_are_answered_once_the_streaming_login_is_in_force(
    world: HttpWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that connects to the stream the moment it has its id_token must find the login there."""
    logins = GatedLogins()
    monkeypatch.setattr(world.parts.flow, "listener", logins)
    poll = await approved_poll(world)
    async with asyncio.TaskGroup() as tasks:
        answer = tasks.create_task(world.http.post("/gcdm/oauth/token", data=poll))
        await asyncio.wait_for(logins.asked.wait(), 10)
        await asyncio.sleep(0.05)
        assert not answer.done(), "tokens answered before the broker held the login"
        logins.gate.set()
    assert answer.result().status_code == 200, answer.result().text
    assert logins.issued == [answer.result().json()["gcid"]]


@pytest.mark.parametrize("refusal", [None, DynsecError("not authorised")], ids=["broker silent", "broker refuses"])
async def test_a_broker_that_never_applies_the_login_delays_the_tokens_only_a_moment(
    world: HttpWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, refusal: Exception | None
) -> None:
    monkeypatch.setattr(world.parts.flow, "listener", GatedLogins(refusal))
    monkeypatch.setattr(oauth_routes, "STREAMING_WAIT_S", 0.05)
    answer = await world.http.post("/gcdm/oauth/token", data=await approved_poll(world))
    assert answer.status_code == 200, answer.text  # issued: the client must not lose its tokens
    assert "streaming login" in caplog.text  # the operator hears why the client may be refused at once


OWNER_SCOPE = f"openid {SCOPE_OWNER}"


async def test_owner_pages_need_the_owner_scope_and_revocation_stops_rest_at_once(world: HttpWorld) -> None:
    tokens = await world.sign_in(world.add_client())
    refused = await world.http.get("/simulator/reports/transactions", headers=bearer(tokens))
    assert refused.status_code == 403, "a third party's token read the owner's transaction report"
    mine = await world.sign_in(world.add_client(), OWNER_SCOPE, owner=True)  # the owner's own app
    assert mine["scope"] == OWNER_SCOPE
    owner, url = bearer(mine), f"/simulator/consents/{VIN}/{tokens['client_id']}"
    granted = await world.http.put(url, headers=owner, json={"keys": [DOOR]})
    assert (granted.status_code, granted.json()["keys"]) == (200, [DOOR]), granted.text
    container = await world.http.post(
        "/customers/containers",
        headers=bearer(tokens),
        json={"name": "d", "purpose": "p", "technicalDescriptors": [DOOR]},
    )
    world.add_door_value(False)
    data_url = f"/customers/vehicles/{VIN}/telematicData?containerId={container.json()['containerId']}"
    assert DOOR in (await world.http.get(data_url, headers=bearer(tokens))).json()["telematicData"]
    page = await world.http.get("/simulator/reports/transactions.html", headers=owner)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert tokens["client_id"] in page.text
    assert (await world.http.delete(url, headers=owner)).status_code == 204
    assert (await world.http.get(data_url, headers=bearer(tokens))).status_code == 403
    consents = await world.http.get("/simulator/consents", headers=owner)
    assert tokens["client_id"] not in [item["clientId"] for item in consents.json()]
    foreign = await world.http.put(
        f"/simulator/consents/WBA00000000000017/{tokens['client_id']}", headers=owner, json={"keys": [DOOR]}
    )
    assert foreign.status_code == 403


async def test_a_third_party_asking_for_the_owner_scope_is_signed_in_without_it(world: HttpWorld) -> None:
    tokens = await world.sign_in(world.add_client(), f"{OWNER_SCOPE} cardata:api:read")  # not approved as own
    assert tokens["scope"] == "openid cardata:api:read"
    for page in ("/simulator/reports/transactions", "/simulator/reports/data", "/simulator/consents"):
        assert (await world.http.get(page, headers=bearer(tokens))).status_code == 403, page


async def test_a_bench_approves_third_parties_at_once_but_never_the_owner_scope(tmp_path: Path) -> None:
    clock = ManualClock()
    backend = bench_backend(tmp_path, clock, port=0, auto_approve_account=OWNER)
    assert backend.cardata is not None
    backend.accounts.create(OWNER, name="Anna", email="anna@example.org", now=clock.now())
    app = create_app(backend.cardata.service, backend.cardata.flow, clock=clock, auto_approve_account=OWNER)
    client_id = backend.cardata.store.add_client("insurer", clock.now()).client_id
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:
            answers = {}
            for scope in ("openid cardata:api:read", OWNER_SCOPE):
                form, verifier = device_code_form(client_id, scope)
                started = (await http.post("/gcdm/oauth/device/code", headers=FORM, data=form)).json()
                poll = token_form(client_id, started["device_code"], verifier)
                answers[scope] = (await http.post("/gcdm/oauth/token", headers=FORM, data=poll)).json()
    finally:
        backend.cardata.close()
        backend.database.close()
        backend.accounts.close()
        backend.provisioning_store.close()
        backend.store.close()
    assert answers["openid cardata:api:read"]["scope"] == "openid cardata:api:read"
    assert answers[OWNER_SCOPE]["error"] == "authorization_pending", "the bench handed out the owner's pages"


async def test_capabilities_answer_per_key_for_a_client(world: HttpWorld) -> None:
    tokens = await world.sign_in(world.add_client())
    world.parts.store.grant(VIN, tokens["client_id"], [DOOR], world.clock.now())
    found = await world.http.get(f"/simulator/vehicles/{VIN}/capabilities", headers=bearer(tokens))
    assert found.status_code == 200, found.text
    assert DOOR in {item["key"] for item in found.json()["capabilities"]}


async def test_backend_run_serves_the_api_on_a_real_port_and_stops_when_cancelled(tmp_path: Path) -> None:
    backend = bench_backend(tmp_path, ManualClock(), port=0, auto_approve_account=OWNER)
    server = backend.cardata_server
    assert server is not None
    async with running_task(backend.run(), name="backend") as task:
        ready = asyncio.create_task(server.ready.wait())
        await asyncio.wait([ready, task], timeout=30, return_when=asyncio.FIRST_COMPLETED)
        assert ready.done(), "the CarData server never became ready"
        assert server.host == "127.0.0.1"
        async with httpx.AsyncClient(base_url=server.url) as http:
            document = await http.get("/openapi.json")
            assert document.status_code == 200
            assert "/customers/vehicles/{vin}/telematicData" in document.json()["paths"]
            refused = await http.get("/customers/vehicles/mappings", headers=V1)
            assert (refused.status_code, refused.json()["exveErrorId"]) == (401, "CU-401")
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=server.url) as http:
            await http.get("/openapi.json")


def test_the_cardata_section_is_read_and_checked(tmp_path: Path) -> None:
    backend = bench_backend(tmp_path, ManualClock(), port=8099, host="::1", max_body_bytes=1000)
    config = backend.config
    assert (config.cardata_port, config.cardata_host, config.cardata_max_body_bytes) == (8099, "::1", 1000)
    backend.database.close()
    path = tmp_path / "bench" / "backend.toml"
    path.write_text(path.read_text().replace("port = 8099", "port = 70000"))
    with pytest.raises(BackendConfigError, match=r"cardata.port must be 0..65535"):
        load_backend_config(path, env={})
    path.write_text(path.read_text().replace("port = 70000", "prot = 1"))
    with pytest.raises(BackendConfigError, match="unknown key"):
        load_backend_config(path, env={})
