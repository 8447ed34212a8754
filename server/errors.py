"""The one place that maps every error (domain, validation, Sanic, WeChat) to the JSON envelope."""

from __future__ import annotations

import logging

from sanic import Sanic, json
from sanic.exceptions import SanicException
from sanic.request import Request
from sanic_ext.exceptions import ValidationError as ExtValidationError

from models.kernel.errors import DomainError, wechat_failure
from wechat.errors import WeChatError

log = logging.getLogger("huiyuan.errors")


def error_body(code: str, message: str, **extra: object) -> dict:
    body: dict = {"code": code, "message": message}
    body.update({k: v for k, v in extra.items() if v is not None})
    return {"error": body}


_SANIC_CODES = {
    400: "request.malformed",
    401: "auth.unauthorized",
    403: "auth.forbidden",
    404: "route.not_found",
    405: "route.method_not_allowed",
    408: "request.timeout",
    413: "request.too_large",
    416: "request.range",
    503: "service.unavailable",
}


def _validation_message(exc: Exception) -> tuple[str, str | None]:
    """Turn a sanic-ext/pydantic validation failure into (message, field)."""
    cause = exc.__cause__ or exc.__context__
    errors = getattr(cause, "errors", None)
    if callable(errors):
        try:
            items = errors()
        except TypeError:
            items = []
        if items:
            first = items[0]
            field = ".".join(str(p) for p in first.get("loc", ())) or None
            return f"{field or 'body'}: {first.get('msg', 'invalid value')}", field
    return str(exc) or "invalid request body", None


def _allowed_methods(request: Request) -> list[str]:
    """The methods the path has (Sanic names them for GET/POST/..., not for a method it does not know, e.g. TRACE)."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        try:
            request.app.router.get(request.path, method, request.headers.get("host"))
        except SanicException:
            continue
        allowed.append(method)
    return allowed


def register_error_handlers(app: Sanic) -> None:
    @app.exception(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        retry_after = exc.extra.get("retry_after")
        headers = {"Retry-After": str(retry_after)} if isinstance(retry_after, int) else None
        return json(error_body(exc.code, exc.message, **exc.extra), status=exc.status, headers=headers)

    @app.exception(ExtValidationError)
    async def validation_error(request: Request, exc: Exception):
        message, field = _validation_message(exc)
        return json(error_body("validation.failed", message, field=field), status=422)

    @app.exception(SanicException)
    async def sanic_error(request: Request, exc: SanicException):
        status = getattr(exc, "status_code", 500) or 500
        if status >= 500:
            log.exception("server error on %s %s", request.method, request.path)
            return json(error_body("server.error", "internal error"), status=status)
        code = _SANIC_CODES.get(status, "request.invalid")
        message = str(exc) or code
        if status == 400 and "JSON" in message.upper():
            code, message = "request.malformed_json", "request body is not valid JSON"
        headers = dict(getattr(exc, "headers", None) or {})
        if status == 405 and "Allow" not in headers:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return json(error_body(code, message), status=status, headers=headers)

    @app.exception(WeChatError)
    async def wechat_error(request: Request, exc: WeChatError):
        failure = wechat_failure(exc)
        log.warning("WeChat failure on %s %s: %s", request.method, request.path, exc)
        return json(error_body(failure.code, failure.message, **failure.extra), status=failure.status)

    @app.exception(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json(error_body("server.error", "internal error"), status=500)
