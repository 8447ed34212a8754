"""Bearer tokens and role checks: every endpoint declares its roles here, via @requires."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.types import Options
from redis.exceptions import RedisError
from sanic.request import Request

from models.kernel import clock
from models.kernel.errors import Forbidden, Unauthorized
from models.tenancy import staff as staff_domain
from models.tenancy.staff import HQ_ROLES, ROLES
from models.tenancy.visibility import Scope

log = logging.getLogger("huiyuan.auth")

ALGORITHM = "HS256"
ALL_STAFF = ROLES
HQ = tuple(r for r in ROLES if r in HQ_ROLES)
MANAGERS = ("owner", "hq_admin", "store_manager")
ADMINS = ("owner", "hq_admin")
MEMBER = "member"
POS = "pos"  # a till authenticated by its store's API key (kind "api_key"), scoped to that store like a cashier
API_KEY_SCHEME = "apikey"
API_KEY_REVOKED_CHANNEL = "api_key_revoked"  # pub/sub channel (under the key prefix): the revoked key's prefix
REVOKED_CHANNEL = "revoked"  # pub/sub channel (under the key prefix): "jti:expires_at"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a staff member (with role and maybe a store) or a member."""

    kind: str  # "staff" | "member" | "api_key"
    subject_id: int
    merchant_id: int
    role: str
    store_id: int | None
    jti: str
    expires_at: int

    @property
    def store_scope(self) -> int | None:
        """The store a store-scoped role is limited to; None for HQ roles."""
        return None if self.role in HQ_ROLES else self.store_id


def scope_of(principal: Principal) -> Scope:
    """THE place a staff principal's visibility becomes a Scope: its merchant and, for store roles, its store."""
    return Scope(merchant_id=principal.merchant_id, store_id=principal.store_scope)


def issue_access_token(
    *, secret: str, ttl: int, kind: str, subject_id: int, merchant_id: int, role: str, store_id: int | None
) -> tuple[str, int]:
    """A signed short-lived JWT; returns (token, expires_in)."""
    now = int(clock.now().timestamp())
    claims = {
        "sub": str(subject_id),
        "knd": kind,
        "mid": merchant_id,
        "rol": role,
        "sid": store_id,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_hex(12),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), ttl


# Tokens whose signature and claims were verified, by (secret, token): the same bytes verify the same way every
# time, so a repeat skips PyJWT (~50 us) while its expiry (and, in authenticate_request, its revocation) is still
# checked on every use. Only valid, unexpired tokens enter; the oldest leaves when the cache is full.
VERIFIED_CACHE_SIZE = 4096
_verified: dict[tuple[str, str], Principal] = {}


def decode_access_token(token: str, *, secret: str) -> Principal:
    key = (secret, token)
    principal = _verified.get(key)
    now = clock.now().timestamp()  # expiry against server.clock (as issuing is), not PyJWT's wall clock
    if principal is None:
        principal = _verify(token, secret)
        if principal.expires_at > now:
            if len(_verified) >= VERIFIED_CACHE_SIZE:
                del _verified[next(iter(_verified))]
            _verified[key] = principal
    if principal.expires_at <= now:
        raise Unauthorized("access token expired", code="auth.token_expired")
    return principal


def _verify(token: str, secret: str) -> Principal:
    """Signature and claims (PyJWT); expiry is left to the caller."""
    options: Options = {"require": ["exp", "sub", "jti"], "verify_exp": False, "verify_iat": False}
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options=options)
    except jwt.PyJWTError as exc:
        raise Unauthorized("access token is invalid", code="auth.token_invalid") from exc
    if not isinstance(claims["exp"], int):
        raise Unauthorized("access token is invalid", code="auth.token_invalid")
    return Principal(
        kind=claims["knd"],
        subject_id=int(claims["sub"]),
        merchant_id=int(claims["mid"]),
        role=claims["rol"],
        store_id=claims.get("sid"),
        jti=claims["jti"],
        expires_at=int(claims["exp"]),
    )


async def authenticate_request(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    ctx = request.app.ctx
    if scheme.lower() == API_KEY_SCHEME and token.strip():
        return await _api_key_principal(request, token.strip())
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token", code="auth.token_missing")
    principal = decode_access_token(token.strip(), secret=ctx.settings.security.jwt_secret)
    if await _is_revoked(request, principal):
        raise Unauthorized("access token was revoked", code="auth.token_revoked")
    return principal


async def _api_key_principal(request: Request, key: str) -> Principal:
    """A till's store API key: role "pos", its merchant and store (store-scoped, as a cashier is)."""
    identity = await request.app.ctx.pos_keys.authenticate(key)
    return Principal(
        kind="api_key",
        subject_id=identity.key_id,
        merchant_id=identity.merchant_id,
        role=POS,
        store_id=identity.store_id,
        jti=f"api_key:{identity.prefix}",
        expires_at=0,  # keys do not expire; revocation ends them
    )


async def broadcast_api_key_revoked(request: Request, prefix: str) -> None:
    """Forget a revoked key here at once and tell every other process to (their cache lives <= 5 s anyway)."""
    ctx = request.app.ctx
    ctx.pos_keys.forget(prefix)
    try:
        await ctx.redis.publish(ctx.keys(API_KEY_REVOKED_CHANNEL), prefix)
    except (RedisError, OSError) as exc:
        log.warning("key revocation not broadcast (%s); other processes see it within 5 s", type(exc).__name__)


async def _is_revoked(request: Request, principal: Principal) -> bool:
    """A lookup in this process's set of revocations, which pub/sub and a poll keep in step with the database.

    Until the set is loaded (start-up) the database answers.
    """
    revoked = request.app.ctx.revoked
    if revoked.ready:
        return principal.jti in revoked
    return await staff_domain.is_access_revoked(principal.jti)


def requires(*roles: str) -> Callable:
    """Allow the named roles (staff roles and/or "member"); the roles also go into the OpenAPI text."""
    allowed = frozenset(roles)

    def decorator(handler: Callable) -> Callable:
        @functools.wraps(handler)
        async def wrapper(request: Request, *args: Any, **kwargs: Any):
            principal = await authenticate_request(request)
            if principal.role not in allowed:
                raise Forbidden(f"role {principal.role} may not do this", code="auth.role_forbidden")
            request.ctx.principal = principal
            return await handler(request, *args, **kwargs)

        wrapper.__huiyuan_roles__ = tuple(sorted(allowed))  # type: ignore[attr-defined]
        return wrapper

    return decorator


async def revoke_access_token(request: Request, principal: Principal) -> None:
    """Deny this access token until it would expire anyway: recorded in the database, then pushed to every process."""
    await staff_domain.revoke_access(
        jti=principal.jti, kind=principal.kind, subject_id=principal.subject_id, expires_at=principal.expires_at
    )
    ctx = request.app.ctx
    ctx.revoked.add(principal.jti, principal.expires_at)
    try:
        await ctx.redis.publish(ctx.keys(REVOKED_CHANNEL), f"{principal.jti}:{principal.expires_at}")
    except (RedisError, OSError) as exc:
        log.warning("revocation not broadcast (%s); other processes see it on their next poll", type(exc).__name__)


def issue_member_token(*, secret: str, ttl: int, member_id: int, merchant_id: int) -> tuple[str, int]:
    """A member's access token (kind and role "member", no store); returns (token, expires_in)."""
    return issue_access_token(
        secret=secret, ttl=ttl, kind="member", subject_id=member_id, merchant_id=merchant_id, role=MEMBER, store_id=None
    )
