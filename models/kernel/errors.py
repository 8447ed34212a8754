"""Typed domain errors: a rule said no, with a status and a dotted code; WeChat failures mapped to them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from wechat.errors import WeChatAPIError, WeChatError, WeChatUnavailable


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
WECHAT_QUOTA_ERRCODE = 45009  # the account's daily call quota for this API is used up (resets at midnight)


def wechat_failure(exc: Exception, *, action: str = "") -> DomainError:
    """A WeChat failure the caller cannot fix: 503 when WeChat is busy, away or out of quota, 502 when it refused.

    WeChat's errcode and errmsg travel in the error body (and so in the logs), and a quota error says so.
    """
    what = f" ({action})" if action else ""
    errcode = exc.errcode if isinstance(exc, WeChatAPIError) else None
    errmsg = exc.errmsg if isinstance(exc, WeChatAPIError) else None
    if errcode == WECHAT_QUOTA_ERRCODE:
        return Unavailable(
            f"WeChat's daily quota for this call is used up{what}: errcode 45009, try again after midnight",
            code="wechat.quota_exceeded",
            errcode=errcode,
            errmsg=errmsg,
        )
    if isinstance(exc, WeChatUnavailable) or errcode in WECHAT_BUSY_ERRCODES:
        detail = f": errcode {errcode}" if errcode is not None else f": {exc}"
        return Unavailable(
            f"WeChat is unavailable{what}{detail}", code="wechat.unavailable", errcode=errcode, errmsg=errmsg
        )
    return DomainError(
        f"WeChat refused the call{what}: {exc}", code="wechat.api_error", status=502, errcode=errcode, errmsg=errmsg
    )


@contextmanager
def wechat_errors(action: str = "") -> Iterator[None]:
    """Map WeChat failures inside the block to wechat_failure's 502/503 envelope errors."""
    try:
        yield
    except WeChatError as exc:
        raise wechat_failure(exc, action=action) from exc
