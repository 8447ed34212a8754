"""The published OpenAPI document covers every route, with summaries, roles, bodies and security."""

from __future__ import annotations

import re

import pytest

METHODS = ("get", "post", "patch", "put", "delete")
UNDOCUMENTED = ("/docs", "/_emulator")


def _openapi_path(sanic_path: str) -> str:
    return "/" + re.sub(r"<([a-zA-Z_][a-zA-Z0-9_]*)(?::[^>]+)?>", r"{\1}", sanic_path.lstrip("/"))


def _app_operations(app) -> set[tuple[str, str]]:
    operations = set()
    for route in app.router.routes:
        path = _openapi_path(route.path)
        if path.startswith(UNDOCUMENTED):
            continue
        operations |= {(path, method.lower()) for method in route.methods if method.lower() in METHODS}
    return operations


@pytest.fixture
async def spec(client) -> dict:
    response = await client.get("/docs/openapi.json")
    assert response.status_code == 200
    return response.json()


def _documented(spec: dict) -> dict[tuple[str, str], dict]:
    return {
        (path, method): operation
        for path, item in spec["paths"].items()
        if not path.startswith(UNDOCUMENTED)
        for method, operation in item.items()
        if method in METHODS
    }


async def test_every_route_is_documented(app, spec):
    operations = _app_operations(app)
    assert ("/api/members", "post") in operations
    assert ("/api/members/{member_id}", "patch") in operations
    assert ("/healthz", "get") in operations
    missing = operations - set(_documented(spec))
    assert not missing, sorted(missing)


async def test_every_operation_has_a_summary_and_says_who_may_call_it(spec):
    for (path, method), operation in _documented(spec).items():
        assert operation.get("summary", "").strip(), (method, path)
        description = operation.get("description", "")
        assert "Roles:" in description or "Public" in description, (method, path, description)


async def test_json_bodies_are_described(spec):
    with_body = [key for key in _documented(spec) if key[1] in ("post", "patch") and key[0].startswith("/api/")]
    assert ("/api/auth/login", "post") in with_body
    assert ("/api/members/{member_id}", "patch") in with_body
    for path, method in with_body:
        operation = spec["paths"][path][method]
        if "requestBody" not in operation:
            continue  # body-less actions such as POST /api/qrcodes/{qr_code_id}/disable
        content = operation["requestBody"].get("content", {})
        if "application/json" not in content:  # e.g. text/csv uploads: a described, non-JSON body
            assert content and all(media.get("schema") for media in content.values()), (method, path)
            continue
        schema = content["application/json"].get("schema", {})
        assert schema.get("properties"), (method, path, operation.get("requestBody"))
    login = spec["paths"]["/api/auth/login"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(login["properties"]) == {"username", "password"}
    assert set(login["required"]) == {"username", "password"}


async def test_staff_endpoints_declare_bearer_auth_and_public_ones_do_not(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert not spec.get("security")
    staff_endpoints = 0
    for (path, method), operation in _documented(spec).items():
        if "Roles:" in operation.get("description", ""):
            staff_endpoints += 1
            assert operation.get("security") == [{"bearerAuth": []}], (method, path)
        else:
            assert not operation.get("security"), (method, path)
    assert staff_endpoints >= 10


async def test_roles_in_the_text_match_the_enforced_roles(spec):
    stores = spec["paths"]["/api/stores"]["post"]
    assert "Roles: owner, hq_admin." in stores["description"]
    assert "Public" in spec["paths"]["/api/auth/login"]["post"]["description"]
    assert "Public" in spec["paths"]["/healthz"]["get"]["description"]


async def test_query_parameters_carry_their_schemas(spec):
    parameters = {p["name"]: p for p in spec["paths"]["/api/members"]["get"]["parameters"]}
    assert set(parameters) == {
        "phone", "name", "id_card_no", "openid", "card_code", "store_id", "source", "subscribed",
        "activated", "created_from", "created_to", "offset", "limit",
    }  # fmt: skip
    assert all(p["in"] == "query" for p in parameters.values())
    assert parameters["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
        "title": "Limit",
    }
    assert parameters["offset"]["schema"]["minimum"] == 0


async def test_errors_are_documented_with_the_envelope(spec):
    responses = spec["paths"]["/api/members"]["post"]["responses"]
    assert {"201", "401", "403", "409", "422"} <= set(responses)
    schema = responses["409"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["error"]
    assert schema["properties"]["error"]["required"] == ["code", "message"]


async def test_docs_ui_is_served(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "openapi.json" in response.text
