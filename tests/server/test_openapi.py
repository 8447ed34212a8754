"""The published OpenAPI document covers every route, with summaries, roles, bodies and security."""

from __future__ import annotations

import re

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_openapi

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
    assert spec["components"]["securitySchemes"]["apiKeyAuth"]["type"] == "apiKey"
    assert spec["components"]["securitySchemes"]["apiKeyAuth"]["in"] == "header"
    assert spec["components"]["securitySchemes"]["apiKeyAuth"]["name"] == "Authorization"
    assert spec["paths"]["/api/pos/member"]["get"]["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert not spec.get("security")
    staff_endpoints = 0
    for (path, method), operation in _documented(spec).items():
        if "Roles:" in operation.get("description", ""):
            staff_endpoints += 1
            expected = [{"bearerAuth": []}]
            if "pos" in operation["description"].split("Roles:")[-1].strip(" .").split(", "):
                expected.append({"apiKeyAuth": []})  # a till may call it with its store's API key instead
            assert operation.get("security") == expected, (method, path)
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


async def test_the_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"] == "3.1.0"
    validate_openapi(spec)  # the OpenAPI 3.1 meta-schema, unique operation ids, path parameters resolved
    operation_ids = [op["operationId"] for op in _documented(spec).values()]
    assert len(operation_ids) == len(set(operation_ids))


async def test_every_status_a_route_can_answer_is_documented(spec):
    for (path, method), operation in _documented(spec).items():
        codes = set(operation["responses"])
        if operation.get("security"):
            assert {"401", "403"} <= codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            assert operation["requestBody"]["required"] is True, (method, path)
            assert {"400", "413", "422"} <= codes, (method, path)
    replayed = ("/api/qrcodes", "/api/card-template/claim-qrcodes", "/api/members/{member_id}/purchases")
    for path in replayed:
        assert {"200", "201"} <= set(spec["paths"][path]["post"]["responses"]), path


def _media_types(spec: dict, path: str, method: str, status: int) -> dict:
    responses = spec["paths"][path][method]["responses"]
    assert str(status) in responses, (method, path, status, sorted(responses))
    return responses[str(status)].get("content", {})


def _conforms(spec: dict, path: str, method: str, response: httpx.Response) -> None:
    """The answer has a documented status and media type, and a JSON answer matches the documented schema."""
    content = _media_types(spec, path, method, response.status_code)
    if not content:
        assert response.status_code == 204 and response.content == b"", (method, path, response.text)
        return
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in content, (method, path, media_type, sorted(content))
    if media_type == "application/json":
        errors = list(OAS31Validator(content[media_type]["schema"]).iter_errors(response.json()))
        assert not errors, (method, path, response.text, errors[0].message)


async def test_non_json_and_empty_answers_are_what_the_document_says(client, admin, demo, spec):
    calls = [
        ("/metrics", "get", await client.get("/metrics")),
        ("/wechat/official", "get", await client.get("/wechat/official", params={"signature": "x", "echostr": "e"})),
        ("/pay/notify/v2/{mch_id}", "post", await client.post("/pay/notify/v2/0", content=b"<xml></xml>")),
        ("/pay/notify/v3/{mch_id}", "post", await client.post("/pay/notify/v3/0", json={})),
    ]
    store_code = {"kind": "oa", "store_id": demo.store.id}
    for _ in range(2):  # 201, then 200 for the same code again
        calls.append(("/api/qrcodes", "post", await client.post("/api/qrcodes", json=store_code, headers=admin)))
    code_id = calls[-1][2].json()["id"]
    image = "/api/qrcodes/{qr_code_id}/image"
    calls += [
        (image, "get", await client.get(f"/api/qrcodes/{code_id}/image", headers=admin)),
        (image, "get", await client.get(f"/api/qrcodes/{code_id}/image", params={"format": "svg"}, headers=admin)),
        ("/api/auth/logout", "post", await client.post("/api/auth/logout", json={}, headers=admin)),
    ]
    statuses = [response.status_code for _, _, response in calls]
    assert statuses == [200, 403, 404, 404, 201, 200, 200, 200, 204], [r.text for _, _, r in calls]
    assert calls[2][2].headers["content-type"].startswith("application/xml")
    assert calls[3][2].json() == {"code": "FAIL", "message": "unknown mch_id"}
    assert [r.headers["content-type"] for _, _, r in calls[6:8]] == ["image/png", "image/svg+xml"]
    for path, method, response in calls:
        _conforms(spec, path, method, response)


async def test_an_unsupported_method_answers_405_with_allow(client, admin):
    response = await client.request("TRACE", "/api/members/1", headers=admin)
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PATCH"}


async def test_docs_ui_is_served(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "openapi.json" in response.text


@pytest.mark.parametrize("path", ["/api/members", "/api/members/export.csv"])
async def test_a_day_before_the_calendar_or_a_unix_time_is_refused_not_a_500(client, admin, path):
    for created_from in ("0001-01-01", "0"):  # found by scripts/fuzz.sh: OverflowError, and 1970-01-01 accepted
        response = await client.get(path, params={"created_from": created_from}, headers=admin)
        assert response.status_code == 422, (created_from, response.text)
        assert response.json()["error"]["field"] == "created_from"


async def test_bodies_are_read_as_strict_json_as_documented(client, admin):
    for body in ({"phone": "13800000001", "birthday": 0}, {"phone": 13800000001}):  # found by scripts/fuzz.sh
        response = await client.post("/api/members", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
    assert (await client.get("/api/members", headers=admin)).json()["total"] == 0
