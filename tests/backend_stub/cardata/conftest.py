"""Fixtures of the CarData tests.

- `blank_cardata_database`: an empty database of the domain world (cardata_world), made once per run;
  `open_world(tmp, snapshot=...)` starts each test's own world from a copy of it.
- `world` (streaming_world): a database with an owner, a linked vehicle and a streamer into a recorder.
- `cardata_module`: the real CarData app once per test module, on a bench backend (tmp database): an
  owner whose vehicle is linked and has last values, a client signed in through the device-code flow
  with the owner's consent and a container; and another owner with a car and a client's container
  that are foreign to it (http_world builds the backend and the app).
- `cardata_app`: that app, for tests that read its OpenAPI description, run schemathesis or attack it;
  `cardata_bearer`: `x-version: v1` and the signed-in client's bearer token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import FastAPI

from backend_stub.cardata.tokens import TokenSet
from tcu.clock import ManualClock
from tests.backend_stub.cardata.cardata_world import Snapshot, blank_database
from tests.backend_stub.cardata.http_world import (
    DOOR,
    OWNER,
    SCOPE,
    HttpWorld,
    bearer,
    close_world,
    open_world,
    pkce_pair,
)
from tests.backend_stub.cardata.streaming_world import (
    link_vehicle,
    world,  # noqa: F401 - the streaming and push tests' fixture
)
from tests.conftest import OTHER_VIN, VIN

OTHER_OWNER = "ben@example.org"
MAX_BODY_BYTES = 4096  # the worlds' limit: small, so "oversized" is cheap to send


@dataclass
class ModuleApp:
    """One app per module: our owner's client signed in, with consent and a container; and a second
    owner (`OTHER_OWNER`) whose car (`OTHER_VIN`) and whose client's container are foreign to it."""

    world: HttpWorld
    tokens: TokenSet
    container_id: str
    foreign_container_id: str

    @property
    def database(self) -> Path:
        return self.world.backend.config.database


def sign_in_directly(opened: HttpWorld, client_id: str, account: str) -> TokenSet:
    """The device-code flow through its own calls, where HTTP is not what a test is about."""
    flow, now = opened.parts.flow, opened.clock.now()
    verifier, challenge = pkce_pair()
    started = flow.start(client_id, SCOPE, challenge, "S256", now=now)
    flow.approve(started.user_code, account, now=now)
    return flow.exchange(client_id, started.device_code, verifier, now=now)


@pytest.fixture(scope="session")
def blank_cardata_database(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    """The CarData domain world's empty database, made once: each test's world starts from a copy."""
    return blank_database(tmp_path_factory.mktemp("cardata-blank"))


@pytest.fixture(scope="module")
def cardata_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleApp]:
    clock = ManualClock(wall=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    opened = open_world(tmp_path_factory.mktemp("cardata"), clock, max_body_bytes=MAX_BODY_BYTES)
    service, now = opened.parts.service, clock.now()
    try:
        opened.add_door_value(is_open=True)
        tokens = sign_in_directly(opened, opened.add_client(), OWNER)
        service.grant(tokens.gcid, VIN, tokens.client_id, [DOOR], now)
        mine = service.create_container(tokens.gcid, tokens.client_id, "doors", "insurance", [DOOR], now)
        opened.backend.accounts.create(OTHER_OWNER, name="Ben", email=OTHER_OWNER, now=now)
        link_vehicle(opened.backend.config.database, OTHER_VIN, OTHER_OWNER, now)
        theirs = sign_in_directly(opened, opened.add_client(), OTHER_OWNER)
        foreign = service.create_container(theirs.gcid, theirs.client_id, "fleet", "fleet", [DOOR], now)
        yield ModuleApp(
            world=opened,
            tokens=tokens,
            container_id=mine.container_id,
            foreign_container_id=foreign.container_id,
        )
    finally:
        asyncio.run(opened.http.aclose())
        close_world(opened)


@pytest.fixture(scope="module")
def cardata_app(cardata_module: ModuleApp) -> FastAPI:
    app = cardata_module.world.http._transport.app  # type: ignore[attr-defined] - the ASGITransport's app
    assert isinstance(app, FastAPI)
    return app


@pytest.fixture(scope="module")
def cardata_bearer(cardata_module: ModuleApp) -> dict[str, str]:
    return bearer({"access_token": cardata_module.tokens.access_token})
