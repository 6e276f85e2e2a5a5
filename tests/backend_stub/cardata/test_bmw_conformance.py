"""Our OpenAPI description against BMW's published CarData interface.

The fixtures `tests/data/cardata/bmw_customer_api.json` and `bmw_device_code_flow.json` are our own
summary of BMW's documents (operations, parameters, status codes, response fields and types). A client
written against BMW's documents must find in our description every operation we claim to serve, with
the same parameters, the documented status codes, and responses that carry the documented fields with
compatible types. Every place where we differ is listed in `DIFFERENCES` with the reason; the test
fails on a difference not listed there, and on a listed one that no longer occurs (so the list stays
true).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

DATA = Path(__file__).parents[2] / "data" / "cardata"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# OpenAPI 3 §4.8.12.1: header parameters with these names are ignored; they are not parameters.
IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})

# Where we differ from BMW's published documents, and why. Keys are the findings this test prints.
DIFFERENCES: dict[str, str] = {
    "* media type application/xml not offered": (
        "we answer JSON only; BMW's XML twin of every response is not used by the published clients"
    ),
    "GET /customers/vehicles/mappings 200 is array, BMW documents the object VehicleMappingDto": (
        "BMW's description says one VehicleMappingDto, but its service answers a JSON array of them and the "
        "published clients iterate over a list; an owner may have several vehicles"
    ),
    "POST /customers/containers documents status 409, BMW does not": (
        "ours: an account's number of containers is bounded; the next one is refused as a conflict"
    ),
    "POST /customers/containers documents status 413, BMW does not": (
        "ours: a body over the service's limit is refused before it is parsed (BMW's gateway does the same "
        "without documenting it)"
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Resolver:
    """Reads schemas out of one OpenAPI document, following `#/components/schemas/...` references."""

    document: Mapping[str, Any]

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen: set[str] = set()
        while "$ref" in schema:
            ref = str(schema["$ref"])
            if ref in seen:
                raise AssertionError(f"reference cycle at {ref}")
            seen.add(ref)
            node: Any = self.document
            for part in ref.removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema


def load_fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return loaded


def our_operation(document: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    method, path = key.split(" ", 1)
    operation: Mapping[str, Any] | None = document.get("paths", {}).get(path, {}).get(method.lower())
    return operation


def nullable_parts(schema: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool]:
    """The alternatives of `anyOf`/`oneOf` (or the schema alone) and whether null is one of them."""
    alternatives = schema.get("anyOf") or schema.get("oneOf") or [schema]
    rest = [part for part in alternatives if part.get("type") != "null"]
    return rest, len(rest) != len(alternatives)


class Comparison:
    """Collects the findings of comparing our description with one BMW fixture."""

    def __init__(self, ours: Mapping[str, Any], fixture: Mapping[str, Any]) -> None:
        self.ours = ours
        self.resolver = Resolver(document=ours)
        self.fixture = fixture
        self.findings: list[str] = []

    def note(self, where: str, finding: str) -> None:
        self.findings.append(f"{where} {finding}")

    # --- types -----------------------------------------------------------------------------------

    def compare_type(self, where: str, bmw_type: str | None, schema: Mapping[str, Any]) -> None:
        """`schema` (ours) must only produce values a client of `bmw_type` understands."""
        if bmw_type is None:
            return
        schema = self.resolver.resolve(schema)
        alternatives, nullable = nullable_parts(schema)
        if nullable:
            self.note(where, "may be null")
        if len(alternatives) != 1:
            self.note(where, f"is one of {len(alternatives)} types, BMW documents {bmw_type}")
            return
        schema = self.resolver.resolve(alternatives[0])
        if bmw_type.startswith("#"):
            self.compare_schema(where, bmw_type[1:], schema)
        elif bmw_type.startswith("array<"):
            if schema.get("type") != "array":
                self.note(where, f"is {schema.get('type')}, BMW documents array")
                return
            self.compare_type(f"{where}[]", bmw_type[len("array<") : -1], schema.get("items", {}))
        elif bmw_type.startswith("map<"):
            extra = schema.get("additionalProperties")
            if schema.get("type") != "object" or not isinstance(extra, dict):
                self.note(where, "is not an object of named entries as BMW documents")
                return
            self.compare_type(f"{where}{{}}", bmw_type[len("map<") : -1], extra)
        else:
            self.compare_scalar(where, bmw_type, schema)

    def compare_scalar(self, where: str, bmw_type: str, schema: Mapping[str, Any]) -> None:
        base, _, bmw_format = bmw_type.partition(":")
        ours = schema.get("type")
        if ours != base and not (base == "number" and ours == "integer"):
            self.note(where, f"is {ours}, BMW documents {base}")
            return
        if bmw_format and schema.get("format") != bmw_format:
            self.note(where, f"has format {schema.get('format')}, BMW documents {bmw_format}")

    def compare_schema(self, where: str, name: str, schema: Mapping[str, Any]) -> None:
        bmw = self.fixture["schemas"][name]
        if schema.get("type") not in ("object", None):
            self.note(where, f"is {schema.get('type')}, BMW documents the object {name}")
            return
        properties: Mapping[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        for field, bmw_type in bmw["fields"].items():
            if field not in properties:
                self.note(where, f"lacks field {field}")
                continue
            self.compare_type(f"{where}.{field}", bmw_type, properties[field])
            enum = bmw.get("enums", {}).get(field)
            if enum is not None:
                self.compare_enum(f"{where}.{field}", enum, properties[field])
        for field in bmw["required"]:
            if field in properties and field not in required:
                self.note(where, f"field {field} is optional, BMW documents it as always present")

    def compare_enum(self, where: str, bmw_enum: list[str], schema: Mapping[str, Any]) -> None:
        alternatives, _ = nullable_parts(self.resolver.resolve(schema))
        ours = [value for part in alternatives for value in self.resolver.resolve(part).get("enum", ())]
        if not ours:
            self.note(where, "has no enumeration, BMW documents one")
        elif unknown := sorted(set(ours) - set(bmw_enum)):
            self.note(where, f"has values BMW does not document: {unknown}")

    # --- operations ------------------------------------------------------------------------------

    def compare_operation(self, key: str, bmw: Mapping[str, Any], ours: Mapping[str, Any]) -> None:
        self.compare_parameters(key, bmw.get("parameters", []), ours.get("parameters", []))
        if "request_body" in bmw:
            self.compare_request_body(key, bmw["request_body"], ours.get("requestBody"))
        responses: Mapping[str, Any] = ours.get("responses", {})
        documented = {**dict.fromkeys(self.fixture.get("error_statuses", ()), self.fixture.get("error_schema"))}
        documented.update(bmw["responses"])
        for status, bmw_type in documented.items():
            if status not in responses:
                self.note(key, f"does not document status {status}")
                continue
            content = responses[status].get("content", {})
            if bmw_type is None:
                continue
            media = "*/*" if "*/*" in content else "application/json"
            if media not in content:
                self.note(key, f"status {status} has no {media} body")
                continue
            self.compare_type(f"{key} {status}", bmw_type, content[media].get("schema", {}))
        for status in sorted(set(responses) - set(documented)):
            self.note(key, f"documents status {status}, BMW does not")
        if self.fixture.get("security") and not self.bearer_secured(ours):
            self.note(key, "is not secured by a bearer token")

    def compare_parameters(self, key: str, bmw: list[Mapping[str, Any]], ours: list[Mapping[str, Any]]) -> None:
        def index(parameters: list[Mapping[str, Any]]) -> dict[tuple[str, str], bool]:
            found = {}
            for listed in parameters:
                parameter = self.resolver.resolve(listed)
                name, where = str(parameter["name"]), str(parameter["in"])
                if where == "header":
                    if name.lower() in IGNORED_HEADERS:
                        continue
                    name = name.lower()
                found[(where, name)] = bool(parameter.get("required", False))
            return found

        theirs, mine = index(bmw), index(ours)
        for (where, name), required in theirs.items():
            if (where, name) not in mine:
                self.note(key, f"lacks {where} parameter {name}")
            elif mine[(where, name)] != required:
                self.note(key, f"{where} parameter {name} required={mine[(where, name)]}, BMW: {required}")
        for (where, name), required in mine.items():
            if (where, name) not in theirs and required:
                self.note(key, f"requires {where} parameter {name}, BMW does not document it")

    def compare_request_body(self, key: str, bmw: Mapping[str, Any], ours: Mapping[str, Any] | None) -> None:
        if ours is None:
            self.note(key, "takes no request body")
            return
        content = ours.get("content", {})
        if bmw["media_type"] not in content:
            self.note(key, f"request body is not {bmw['media_type']} but {sorted(content)}")
            return
        if bmw["required"] and not ours.get("required", False):
            self.note(key, "request body is optional, BMW requires one")
        schema = self.resolver.resolve(content[bmw["media_type"]].get("schema", {}))
        fields = self.fixture["schemas"][bmw["schema"][1:]]
        # A body that is one of several forms (the token endpoint's grants) serves BMW's request when
        # one of its forms does: judge the closest.
        alternatives = schema.get("oneOf") or schema.get("anyOf") or [schema]
        judged = [self.request_findings(key, fields, self.resolver.resolve(part)) for part in alternatives]
        self.findings.extend(min(judged, key=len))

    @staticmethod
    def request_findings(key: str, fields: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
        found = []
        properties: Mapping[str, Any] = schema.get("properties", {})
        found += [f"{key} request lacks field {field}" for field in fields["fields"] if field not in properties]
        for field in sorted(set(schema.get("required", ())) - set(fields["required"])):
            found.append(f"{key} request requires field {field}, BMW does not")
        for field in sorted(set(fields["required"]) - set(schema.get("required", ()))):
            if field in properties:
                found.append(f"{key} request field {field} is optional here, BMW requires it")
        return found

    def bearer_secured(self, operation: Mapping[str, Any]) -> bool:
        schemes = self.ours.get("components", {}).get("securitySchemes", {})
        for requirement in operation.get("security", self.ours.get("security", [])):
            for name in requirement:
                scheme = schemes.get(name, {})
                if scheme.get("type") == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
                    return True
        return False

    def run(self) -> list[str]:
        for key, bmw in self.fixture["operations"].items():
            ours = our_operation(self.ours, key)
            if not bmw["served"]:
                if ours is not None:
                    self.note(key, "is served though the fixture says we leave it out")
                continue
            if ours is None:
                self.note(key, "is missing")
                continue
            self.compare_operation(key, bmw, ours)
        return self.findings


def served_json_only(document: Mapping[str, Any]) -> Iterator[str]:
    for path, item in document.get("paths", {}).items():
        for method in HTTP_METHODS:
            for response in item.get(method, {}).get("responses", {}).values():
                if "application/xml" in response.get("content", {}):
                    yield f"{method.upper()} {path}"


@pytest.fixture(scope="module")
def our_openapi(cardata_app: FastAPI) -> dict[str, Any]:
    return cardata_app.openapi()


def findings_for(ours: Mapping[str, Any]) -> list[str]:
    customer = Comparison(ours, load_fixture("bmw_customer_api.json"))
    oauth = Comparison(ours, load_fixture("bmw_device_code_flow.json"))
    found = customer.run() + oauth.run()
    if not any(served_json_only(ours)):
        found.append("* media type application/xml not offered")
    return found


def test_description_matches_bmw_except_declared_differences(our_openapi: dict[str, Any]) -> None:
    found = findings_for(our_openapi)
    undeclared = [finding for finding in found if finding not in DIFFERENCES]
    stale = [finding for finding in DIFFERENCES if finding not in found]
    assert not undeclared, "differences from BMW's documents not declared in DIFFERENCES:\n" + "\n".join(undeclared)
    assert not stale, "declared differences that no longer occur (remove them):\n" + "\n".join(stale)


def test_every_served_operation_exists(our_openapi: dict[str, Any]) -> None:
    """A plainer statement of the most important rule: nothing we claim to serve is missing."""
    for name in ("bmw_customer_api.json", "bmw_device_code_flow.json"):
        for key, bmw in load_fixture(name)["operations"].items():
            if bmw["served"]:
                assert our_operation(our_openapi, key) is not None, key


def test_comparison_notices_what_a_client_would_trip_over() -> None:
    """The checker itself: a description that drops a field, renames a parameter and turns a string
    into an integer is caught, so an empty findings list means something."""
    fixture = {
        "operations": {
            "GET /things/{id}": {
                "served": True,
                "parameters": [{"name": "id", "in": "path", "required": True}],
                "responses": {"200": "#Thing"},
            }
        },
        "schemas": {
            "Thing": {
                "required": ["name"],
                "fields": {"name": "string", "count": "integer", "state": "string"},
                "enums": {"state": ["ON", "OFF"]},
            }
        },
    }
    ours = {
        "paths": {
            "/things/{id}": {
                "get": {
                    "parameters": [{"name": "thing", "in": "path", "required": True}],
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/T"}}}},
                        "422": {},
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "T": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "integer"},
                        "state": {"anyOf": [{"type": "string", "enum": ["ON", "BROKEN"]}, {"type": "null"}]},
                    },
                }
            }
        },
    }
    assert sorted(Comparison(ours, fixture).run()) == sorted(
        [
            "GET /things/{id} lacks path parameter id",
            "GET /things/{id} requires path parameter thing, BMW does not document it",
            "GET /things/{id} 200.name is integer, BMW documents string",
            "GET /things/{id} 200 lacks field count",
            "GET /things/{id} 200.state may be null",
            "GET /things/{id} 200.state has values BMW does not document: ['BROKEN']",
            "GET /things/{id} 200 field name is optional, BMW documents it as always present",
            "GET /things/{id} documents status 422, BMW does not",
        ]
    )
