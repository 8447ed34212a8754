"""Typed domain errors and the one place that maps every error to the JSON envelope."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sanic import Sanic, json
from sanic.exceptions import SanicException
from sanic.request import Request

log = logging.getLogger("huiyuan.errors")


class DomainError(Exception):
    """A rule said no; status and dotted code go to the client as they are."""

    status = 400
    code = "request.invalid"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.extra = extra


class BadRequest(DomainError):
    status = 400
    code = "request.invalid"


class Unauthorized(DomainError):
    status = 401
    code = "auth.unauthorized"


class Forbidden(DomainError):
    status = 403
    code = "auth.forbidden"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Unprocessable(DomainError):
    status = 422
    code = "validation.failed"


class Locked(DomainError):
    status = 423
    code = "auth.locked"


class Unavailable(DomainError):
    status = 503
    code = "service.unavailable"


WECHAT_BUSY_ERRCODES = frozenset({-1, 45009, 45011})  # system busy, quota, rate limit: try again later


def wechat_failure(exc: Exception, *, action: str = "") -> DomainError:
    """A WeChat failure the caller cannot fix: 503 when WeChat is busy or away, 502 when it refused."""
    from wechat.errors import WeChatAPIError
    from wechat.gateway import WeChatUnavailable

    what = f" ({action})" if action else ""
    errcode = exc.errcode if isinstance(exc, WeChatAPIError) else None
    if isinstance(exc, WeChatUnavailable) or errcode in WECHAT_BUSY_ERRCODES:
        return Unavailable(f"WeChat is unavailable{what}", code="wechat.unavailable")
    return DomainError(f"WeChat refused the call{what}: {exc}", code="wechat.api_error", status=502, errcode=errcode)


@contextmanager
def wechat_errors(action: str = "") -> Iterator[None]:
    """Map WeChat failures inside the block to wechat_failure's 502/503 envelope errors."""
    from wechat.errors import WeChatError

    try:
        yield
    except WeChatError as exc:
        raise wechat_failure(exc, action=action) from exc


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


def register_error_handlers(app: Sanic) -> None:
    from sanic_ext.exceptions import ValidationError as ExtValidationError

    @app.exception(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        return json(error_body(exc.code, exc.message, **exc.extra), status=exc.status)

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
        return json(error_body(code, message), status=status, headers=getattr(exc, "headers", None))

    from wechat.errors import WeChatError

    @app.exception(WeChatError)
    async def wechat_error(request: Request, exc: WeChatError):
        failure = wechat_failure(exc)
        log.warning("WeChat failure on %s %s: %s", request.method, request.path, exc)
        return json(error_body(failure.code, failure.message, **failure.extra), status=failure.status)

    @app.exception(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json(error_body("server.error", "internal error"), status=500)
