"""The endpoint decorator: OpenAPI docs, roles and pydantic validation declared in one place."""

from __future__ import annotations

import copy
import functools
import inspect
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import unquote

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from sanic import json as json_response
from sanic.exceptions import BadRequest
from sanic.request import Request
from sanic_ext import openapi
from sanic_ext.extensions.openapi.types import Schema as OpenApiSchema

from models.kernel.errors import NotFound, Unprocessable
from server.auth import POS, requires

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


OPENAPI_VERSION = "3.1.0"  # pydantic writes JSON Schema 2020-12 (type null, numeric exclusiveMinimum): OpenAPI 3.1
NOT_PATH_PARAMETERS = ("request", "body", "query")
TEXT_SCHEMA = {"type": "string"}
BINARY_SCHEMA = {"type": "string", "format": "binary"}


@dataclass(frozen=True)
class Reply:
    """One more documented answer of an endpoint: a status, its media type (None: no body) and its schema."""

    status: int
    content_type: str | None = "application/json"
    schema: type[BaseModel] | dict[str, Any] | None = None
    description: str = "Success"

    def definition(self) -> Any:
        if self.content_type is None:
            return openapi.definitions.Response(status=self.status, description=self.description)
        schema = self.schema if isinstance(self.schema, dict) else json_schema(self.schema) if self.schema else None
        media_types = {
            media_type: {"schema": schema or _default_schema(media_type)}
            for media_type in (part.strip() for part in self.content_type.split(","))
        }
        return openapi.definitions.Response(media_types, status=self.status, description=self.description)


def _default_schema(media_type: str) -> dict[str, Any]:
    if media_type == "application/json":
        return {"type": "object"}
    return TEXT_SCHEMA if media_type.startswith("text/") or media_type.endswith("xml") else BINARY_SCHEMA


class Schema(BaseModel):
    """Base for request bodies: unknown fields are an error, not silently dropped.

    A string is checked as sent (its length and pattern, as the OpenAPI states them), then stripped; one that
    strips to nothing where the field needs a character is refused too ("   " is not a name).
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _stripped(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list):  # a list of strings (phones, SKUs): each one stripped
            return [item.strip() if isinstance(item, str) else item for item in value]
        if not isinstance(value, str):
            return value
        stripped = value.strip()
        if value and not stripped:
            field = cls.model_fields.get(info.field_name or "")
            if field is not None and any(getattr(m, "min_length", 0) for m in field.metadata):
                raise ValueError("must not be blank")
        return stripped


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


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a string, never null: `X | None = None` is documented as X."""
    branches = [branch for branch in prop.get("anyOf", []) if branch != {"type": "null"}]
    if len(prop.get("anyOf", [])) != 2 or len(branches) != 1:
        return prop
    rest = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**branches[0], **rest}


def _iso_date(value: Any) -> Any:
    if isinstance(value, str) and not ISO_DATE.fullmatch(value):
        raise ValueError("a date is YYYY-MM-DD")
    return value


def _calendar_day(value: date) -> date:
    if not date(1900, 1, 1) <= value <= date(9999, 12, 30):
        raise ValueError("a date from 1900-01-01 to 9999-12-30")
    return value


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# pydantic alone also takes "0" (a unix time) for a date; a day at either end of the calendar overflows once moved
# into the merchant's time zone
IsoDate = Annotated[date, BeforeValidator(_iso_date), AfterValidator(_calendar_day)]


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
        # strict JSON: a number is not a string, "5" is not an integer, 0 is not a date (as the schema says)
        return model.model_validate_json(request.body, strict=True)
    except ValidationError as exc:
        field, message = _first_error(exc)
        raise Unprocessable(message, code="validation.failed", field=field) from None


def parse_query(request: Request, model: type[BaseModel]) -> BaseModel:
    data = {key: values[-1] for key, values in request.get_args(keep_blank_values=True).items()}
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
    also: tuple[int, ...] = (),
    content_type: str | None = "application/json",
    errors: tuple[int, ...] = (),
    replies: tuple[Reply, ...] = (),
    description: str = "",
) -> Callable:
    """Declare an endpoint: who may call it, what it takes and what it returns (all in the OpenAPI).

    status (and also: more success statuses) answer `response` as content_type ("a, b": either; None: no
    body, e.g. 204); errors are statuses answered with the error envelope, to which 401/403 (roles), 404
    (path parameters), 400/413/422 (body) and 422 (query) are always added; replies are any other answers.
    """

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
        success = [Reply(code, None if code == 204 else content_type, response) for code in (status, *also)]
        path_parameters = [name for name in inspect.signature(handler).parameters if name not in NOT_PATH_PARAMETERS]
        codes = set(errors) | ({401, 403} if roles else set()) | ({400, 413, 422} if body else set())
        codes |= ({422} if query else set()) | ({404} if path_parameters else set())
        codes -= {reply.status for reply in replies}
        failures = [Reply(code, schema=ERROR_SCHEMA, description="Error") for code in sorted(codes)]
        responses = [reply.definition() for reply in (*success, *replies, *failures)]
        parameters = []
        if query is not None:
            for name, prop in json_schema(query).get("properties", {}).items():
                parameters.append(
                    {
                        "name": name,
                        "location": "query",
                        "schema": OpenApiSchema(**_not_null(prop)),  # a plain dict would be described as an object
                        "required": name in json_schema(query).get("required", []),
                    }
                )
        documented = openapi.definition(
            summary=summary,
            description=f"{description}\n\n{role_text}".strip(),
            tag=tag,
            body=openapi.definitions.RequestBody({"application/json": json_schema(body)}, required=True)
            if body
            else None,
            response=responses,
            secured={"bearerAuth": []} if roles else None,
            parameter=parameters or None,  # type: ignore[arg-type]  # a list of dicts is accepted
        )(wrapped)
        if roles and POS in roles:  # a till may also call it with its store's API key (either scheme will do)
            documented = openapi.secured("apiKeyAuth")(documented)
        documented.__huiyuan_roles__ = roles or ()  # type: ignore[attr-defined,union-attr]
        return documented

    return decorator


def json_datetime(value: datetime) -> str:
    """A datetime as pydantic's JSON mode writes it (ISO 8601, "Z" for UTC): for bodies built without a model."""
    text = value.isoformat()
    return f"{text[:-6]}Z" if text.endswith("+00:00") else text


def ok(payload: BaseModel | dict, *, status: int = 200):
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return json_response(data, status=status)


async def stream_csv(request: Request, chunks: AsyncIterator[str], *, filename: str) -> None:
    """Send CSV text as it is produced (an export: batches of rows, never the whole file in memory)."""
    response = await request.respond(
        content_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{filename}"', "cache-control": "no-store"},
    )
    async for chunk in chunks:
        await response.send(chunk.encode("utf-8"))
    await response.eof()


def publish_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """sanic-ext's document made true: OpenAPI 3.1 (what pydantic's schemas are), operation ids unique, and a
    handler mounted on several paths (e.g. /wechat/official and /wechat/official/{appid}) documented per path."""
    document["openapi"] = OPENAPI_VERSION
    seen: set[str] = set()
    for path, item in document.get("paths", {}).items():
        in_path = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            operation = item[method] = copy.deepcopy(operation)
            parameters = [
                p for p in operation.get("parameters", []) if p.get("in") != "path" or p.get("name") in in_path
            ]
            if "parameters" in operation:
                operation["parameters"] = parameters
            if "204" in operation.get("responses", {}):
                operation["responses"]["204"].pop("content", None)  # sanic-ext fills in */* for "no body"
            operation_id = operation.get("operationId")
            if operation_id in seen:
                operation["operationId"] = f"{operation_id}~{'_'.join(sorted(in_path)) or 'bare'}"
            if operation_id:
                seen.add(operation["operationId"])
    return document
