"""Schemathesis runs our OpenAPI description against the app it describes (ASGI, in process).

Every operation gets generated requests — valid ones from the description's examples and schemas, and
the coverage phase's edge cases (missing, wrong-typed and boundary values) — sent with a valid bearer
token and `x-version: v1`, and every answer must be: no server error, a status code the description
documents, the content type it documents, and a body that matches its schema. So the description is
true of the service, which is what a client generated from it relies on.

CI runs a bounded number of examples per operation (`CI_EXAMPLES`, well under 20 s in all). A long
run: `CARDATA_SCHEMATHESIS_EXAMPLES=500 python -m pytest tests/backend_stub/cardata/test_schemathesis.py
-m schemathesis_long` (the marker test is skipped unless that variable is set).
"""

from __future__ import annotations

import os

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

CI_EXAMPLES = 3
LONG_EXAMPLES = int(os.environ.get("CARDATA_SCHEMATHESIS_EXAMPLES", "0") or 0)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Each example runs the real app on a real database: slower than Hypothesis expects of a pure function.
SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@pytest.fixture(scope="module")
def cardata_schema(cardata_app: FastAPI, cardata_bearer: dict[str, str]) -> OpenApiSchema:
    loaded = schemathesis.openapi.from_asgi("/openapi.json", cardata_app)
    # Sent with every generated request: a valid token and the version. What a client omits or gets
    # wrong in these is test_bad_input's business.
    loaded.config.update(headers=cardata_bearer)
    return loaded


schema = schemathesis.pytest.from_fixture("cardata_schema")


@schema.parametrize()
@settings(max_examples=CI_EXAMPLES, deadline=None, suppress_health_check=SLOW_EXAMPLES, database=None)
def test_the_service_answers_as_its_description_says(case: Case) -> None:
    case.call_and_validate(checks=CHECKS)


@pytest.mark.schemathesis_long
@pytest.mark.skipif(not LONG_EXAMPLES, reason="set CARDATA_SCHEMATHESIS_EXAMPLES for the long run")
@schema.parametrize()
@settings(max_examples=max(LONG_EXAMPLES, 1), deadline=None, suppress_health_check=SLOW_EXAMPLES, database=None)
def test_the_service_answers_as_its_description_says_long(case: Case) -> None:
    case.call_and_validate(checks=CHECKS)


# Requests whose answers the description once did not document (an unknown client's 401 at the
# device-code endpoint, JSON refusals of the HTML pages, the device page's 400): checked by name, so
# they stay documented whatever examples the run above happens to draw.
UNKNOWN_CLIENT = {
    "client_id": "no-such-client",
    "response_type": "device_code",
    "code_challenge": "A" * 43,
    "code_challenge_method": "S256",
}
EDGES: dict[str, tuple[str, str, dict[str, str]]] = {
    "startDeviceCodeFlow": ("POST", "/gcdm/oauth/device/code", UNKNOWN_CLIENT),
    "getTransactionReportPage": ("GET", "/simulator/reports/transactions.html", {}),
    "getDataReportPage": ("GET", "/simulator/reports/data.html", {}),
    "getDevicePage": ("GET", "/simulator/device?user_code=" + "B" * 40, {}),
}


@pytest.mark.parametrize("operation_id", list(EDGES))
async def test_a_refusal_has_the_status_and_media_type_described(cardata_app: FastAPI, operation_id: str) -> None:
    method, url, form = EDGES[operation_id]
    transport = httpx.ASGITransport(app=cardata_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cardata.test") as client:
        answer = await client.request(method, url, data=form or None)
    assert answer.status_code in (400, 401)
    documented = cardata_app.openapi()["paths"][url.split("?")[0]][method.lower()]["responses"]
    kind = answer.headers["content-type"].split(";")[0]
    assert kind in documented[str(answer.status_code)]["content"], (operation_id, answer.status_code, kind)
