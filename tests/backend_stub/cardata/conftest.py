"""Fixtures of the CarData tests.

- `world` (streaming_world): a database with an owner, a linked vehicle and a streamer into a recorder.
- `signed_in`: the real CarData app on a bench backend (tmp database) with an owner whose vehicle is
  linked and has last values, a client signed in through the device-code flow, the owner's consent and
  one container; driven in process over httpx (http_world).
- `cardata_app`: the same app once per module, for tests that read its OpenAPI description or run
  schemathesis against it (`cardata_bearer` is a valid token for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from tcu.clock import ManualClock
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
from tests.backend_stub.cardata.streaming_world import world  # noqa: F401 - the streaming and push tests' fixture
from tests.conftest import VIN

MAX_BODY_BYTES = 4096  # the worlds' limit: small, so "oversized" is cheap to send


@dataclass
class SignedIn:
    """A world whose client is signed in, holds the owner's consent for `DOOR` and one container."""

    world: HttpWorld
    tokens: dict[str, Any]
    container_id: str

    @property
    def headers(self) -> dict[str, str]:
        """`x-version: v1` and the bearer token: what every customer API call sends."""
        return bearer(self.tokens)


@pytest.fixture
async def signed_in(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SignedIn]:
    opened = open_world(tmp_path, clock, max_body_bytes=MAX_BODY_BYTES)
    try:
        opened.add_door_value(is_open=True)
        tokens = await opened.sign_in(opened.add_client())
        opened.parts.service.grant(str(tokens["gcid"]), VIN, str(tokens["client_id"]), [DOOR], clock.now())
        created = await opened.http.post(
            "/customers/containers",
            headers=bearer(tokens),
            json={"name": "doors", "purpose": "insurance", "technicalDescriptors": [DOOR]},
        )
        assert created.status_code == 201, created.text
        yield SignedIn(world=opened, tokens=tokens, container_id=str(created.json()["containerId"]))
    finally:
        await opened.http.aclose()
        close_world(opened)


@dataclass
class ModuleApp:
    world: HttpWorld
    access_token: str


@pytest.fixture(scope="module")
def cardata_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleApp]:
    """One app per module, signed in without HTTP (the flow's own calls), consent granted, last values."""
    clock = ManualClock(wall=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))
    opened = open_world(tmp_path_factory.mktemp("cardata"), clock, max_body_bytes=MAX_BODY_BYTES)
    try:
        opened.add_door_value(is_open=True)
        flow, client_id = opened.parts.flow, opened.add_client()
        verifier, challenge = pkce_pair()
        started = flow.start(client_id, SCOPE, challenge, "S256", now=clock.now())
        flow.approve(started.user_code, OWNER, now=clock.now())
        tokens = flow.exchange(client_id, started.device_code, verifier, now=clock.now())
        opened.parts.service.grant(tokens.gcid, VIN, client_id, [DOOR], clock.now())
        yield ModuleApp(world=opened, access_token=tokens.access_token)
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
    return bearer({"access_token": cardata_module.access_token})
