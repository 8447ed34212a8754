"""The endpoint decorator: OpenAPI docs, roles and pydantic validation declared in one place."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, ValidationError
from sanic import json as json_response
from sanic.exceptions import BadRequest
from sanic.request import Request
from sanic_ext import openapi
from sanic_ext.extensions.openapi.types import Schema as OpenApiSchema

from models.kernel.errors import NotFound, Unprocessable
from server.auth import requires

MAX_ID = 2**31 - 1  # path ids are INT columns; larger numbers name nothing
# Text path parameters by name and the length of the column they name: a longer one (URL-decoded) names nothing.
PATH_TEXT_LIMITS = {"out_trade_no": 32, "order_no": 64}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}},
        }
    },
}


class Schema(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Out(BaseModel):
    """Base for response bodies."""

    model_config = ConfigDict(from_attributes=True)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with $defs inlined (OpenAPI has no local $defs)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(defs[ref.split("/")[-1]]))
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return field, f"{field}: {err.get('msg', 'invalid value')}"


def parse_body(request: Request, model: type[BaseModel]) -> BaseModel:
    try:
        data = request.json
    except BadRequest:
        raise
    if data is None:
        raise Unprocessable("a JSON body is required", code="validation.body_required", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, message = _first_error(exc)
        raise Unprocessable(message, code="validation.failed", field=field) from None


def parse_query(request: Request, model: type[BaseModel]) -> BaseModel:
    data = {key: values[-1] for key, values in request.args.items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, message = _first_error(exc)
        raise Unprocessable(message, code="validation.failed", field=field) from None


def _path_value(name: str, value: Any) -> Any:
    """A path parameter checked by its column's limits (ids: INT range; text: URL-decoded, column length): 404."""
    if isinstance(value, int) and not 0 < value <= MAX_ID:
        raise NotFound(f"no such {name.removesuffix('_id')}", code="not_found")
    if isinstance(value, str):
        value = unquote(value)
        limit = PATH_TEXT_LIMITS.get(name)
        if limit is not None and not 0 < len(value) <= limit:
            raise NotFound(f"no such {name.replace('_', ' ')}", code="not_found")
    return value


def endpoint(
    *,
    summary: str,
    tag: str,
    roles: tuple[str, ...] | None = None,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    errors: tuple[int, ...] = (),
    description: str = "",
) -> Callable:
    """Declare an endpoint: who may call it, what it takes and what it returns (all in the OpenAPI)."""

    def decorator(handler: Callable) -> Callable:
        @functools.wraps(handler)
        async def wrapper(request: Request, *args: Any, **kwargs: Any):
            kwargs = {name: _path_value(name, value) for name, value in kwargs.items()}
            if body is not None:
                kwargs["body"] = parse_body(request, body)
            if query is not None:
                kwargs["query"] = parse_query(request, query)
            return await handler(request, *args, **kwargs)

        wrapped = requires(*roles)(wrapper) if roles else wrapper
        role_text = f"Roles: {', '.join(roles)}." if roles else "Public: no token needed."
        responses: list[Any] = []
        if response is not None:
            responses.append(
                openapi.definitions.Response(
                    {"application/json": json_schema(response)}, status=status, description="Success"
                )
            )
        else:
            responses.append(
                openapi.definitions.Response(
                    {"application/json": {"type": "object"}}, status=status, description="Success"
                )
            )
        codes = set(errors) | ({401, 403} if roles else set()) | ({400, 413, 422} if body else set())
        codes |= {422} if query else set()
        for code in sorted(codes):
            responses.append(
                openapi.definitions.Response({"application/json": ERROR_SCHEMA}, status=code, description="Error")
            )
        parameters = []
        if query is not None:
            for name, prop in json_schema(query).get("properties", {}).items():
                parameters.append(
                    {
                        "name": name,
                        "location": "query",
                        "schema": OpenApiSchema(**prop),  # a plain dict would be described as an object
                        "required": name in json_schema(query).get("required", []),
                    }
                )
        documented = openapi.definition(
            summary=summary,
            description=f"{description}\n\n{role_text}".strip(),
            tag=tag,
            body={"application/json": json_schema(body)} if body else None,
            response=responses,
            secured={"bearerAuth": []} if roles else None,
            parameter=parameters or None,  # type: ignore[arg-type]  # a list of dicts is accepted
        )(wrapped)
        documented.__huiyuan_roles__ = roles or ()  # type: ignore[attr-defined,union-attr]
        return documented

    return decorator


def ok(payload: BaseModel | dict, *, status: int = 200):
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return json_response(data, status=status)
