"""A bench backend with CarData configured, an owner with a linked vehicle, a registered client, and an
httpx client on the CarData app in process (ASGITransport): what the HTTP tests drive."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from backend_stub.app import BackendStub
from backend_stub.cardata.http_app import create_app
from backend_stub.cardata.wiring import CardataParts
from backend_stub.config import load_backend_config
from hil.layout import BenchLayout
from tcu.clock import ManualClock
from telematics_wire.records import ReceivedRecord, RecordKind, to_millis
from tests.backend_stub.cardata.streaming_world import link_vehicle
from tests.conftest import VIN

OWNER = "anna@example.org"
DOOR = "vehicle.cabin.door.row1.driver.isOpen"
DOOR_SIGNAL = "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen"
V1 = {"x-version": "v1"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
SCOPE = "authenticate_user openid cardata:streaming:read cardata:api:read"


def bench_backend(root: Path, clock: ManualClock, **cardata: Any) -> BackendStub:
    """A backend on a bench folder (no broker connected), with `[cardata]` set to `cardata`."""
    layout = BenchLayout(root=root / "bench", broker_url="mqtt://127.0.0.1:1")
    layout.create_backend()
    layout.add_vehicle(VIN)
    layout.write_backend_config(layout.backend(), more={"cardata": cardata})
    return BackendStub(load_backend_config(layout.backend_config, env={}), clock=clock)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


@dataclass
class HttpWorld:
    backend: BackendStub
    parts: CardataParts
    clock: ManualClock
    http: httpx.AsyncClient

    def add_door_value(self, is_open: bool) -> None:
        """A stored telemetry record with the driver's door state, as ingest would store it."""
        stamp = to_millis(self.clock.now())
        record = ReceivedRecord(
            vin=VIN,
            seq=stamp,
            kind=RecordKind.TELEMETRY,
            created=self.clock.now(),
            body={"signals": {DOOR_SIGNAL: {"v": is_open, "t": stamp}}},
        )
        with self.backend.store.transaction():
            self.backend.store.add_record(record, self.clock.now())

    def add_client(self) -> str:
        """A third party of its own, so a test's containers, consents and transfers are its own."""
        return self.parts.store.add_client("insurer", self.clock.now()).client_id

    async def sign_in(self, client_id: str, scope: str = SCOPE, *, owner: bool = False) -> dict[str, Any]:
        """The device-code flow as BMW's client runs it; the owner approves on the backend in between
        (`owner`: as their own sign-in). The answer gains `client_id`, for the test's own use."""

        async def approve(user_code: str) -> None:
            self.parts.flow.approve(user_code, OWNER, owner=owner, now=self.clock.now())

        found = await device_sign_in(self.http, client_id, scope, approve=approve)
        return {**found, "client_id": client_id}


def device_code_form(client_id: str, scope: str = SCOPE) -> tuple[dict[str, str], str]:
    """The form that starts a sign-in (PKCE S256), and the verifier to poll with."""
    verifier, challenge = pkce_pair()
    form = {
        "client_id": client_id,
        "response_type": "device_code",
        "scope": scope,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return form, verifier


def token_form(client_id: str, device_code: str, verifier: str) -> dict[str, str]:
    """The form that polls for the tokens of a device code."""
    return {
        "client_id": client_id,
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": device_code,
        "code_verifier": verifier,
    }


async def device_sign_in(
    http: httpx.AsyncClient,
    client_id: str,
    scope: str = SCOPE,
    approve: Callable[[str], Awaitable[object]] | None = None,
) -> dict[str, Any]:
    """RFC 8628 with PKCE S256, as BMW's device-code flow document describes it, over HTTP only: start,
    `approve` (the owner's step, for a sign-in the backend does not approve by itself), poll until the
    tokens come (at most 10 s)."""
    form, verifier = device_code_form(client_id, scope)
    started = await http.post("/gcdm/oauth/device/code", headers=FORM, data=form)
    assert started.status_code == 200, started.text
    answer = started.json()
    if approve is not None:
        await approve(answer["user_code"])
    poll = token_form(client_id, answer["device_code"], verifier)
    async with asyncio.timeout(10):
        while True:
            polled = await http.post("/gcdm/oauth/token", headers=FORM, data=poll)
            if polled.status_code == 200:
                tokens: dict[str, Any] = polled.json()
                return tokens
            assert polled.json()["error"] in ("authorization_pending", "slow_down"), polled.text
            await asyncio.sleep(0.1)


def bearer(tokens: Mapping[str, Any]) -> dict[str, str]:
    return {**V1, "authorization": f"Bearer {tokens['access_token']}"}


def open_world(root: Path, clock: ManualClock, *, max_body_bytes: int = 4096) -> HttpWorld:
    backend = bench_backend(root, clock, port=0)
    assert backend.cardata is not None
    backend.accounts.create(OWNER, name="Anna", email="anna@example.org", now=clock.now())
    link_vehicle(backend.config.database, VIN, OWNER, clock.now())
    app = create_app(
        backend.cardata.service,
        backend.cardata.flow,
        max_body_bytes=max_body_bytes,
        run=backend.database.run,  # the thread the running backend uses
        clock=clock,
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cardata.test")
    return HttpWorld(backend=backend, parts=backend.cardata, clock=clock, http=http)


def close_world(world: HttpWorld) -> None:
    world.parts.close()
    world.backend.database.close()
    world.backend.accounts.close()
    world.backend.provisioning_store.close()
    world.backend.store.close()
