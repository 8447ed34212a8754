"""Staff login, token refresh and logout."""

from __future__ import annotations

from pydantic import Field
from sanic import Blueprint, empty
from sanic.request import Request

from models.tenancy import staff as staff_domain
from server.api import Out, Schema, endpoint, ok
from server.auth import ALL_STAFF, issue_access_token, revoke_access_token

bp = Blueprint("auth", url_prefix="/api/auth")


class LoginIn(Schema):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class RefreshIn(Schema):
    refresh_token: str = Field(min_length=10, max_length=256)


class LogoutIn(Schema):
    refresh_token: str | None = Field(None, max_length=256)


class TokenOut(Out):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    refresh_token: str
    staff_id: int
    merchant_id: int
    role: str
    store_id: int | None


async def _tokens(request: Request, staff: staff_domain.Staff, refresh_token: str) -> TokenOut:
    security = request.app.ctx.settings.security
    access, expires_in = issue_access_token(
        secret=security.jwt_secret,
        ttl=security.access_token_ttl,
        kind="staff",
        subject_id=staff.id,
        merchant_id=staff.merchant_id,
        role=staff.role,
        store_id=staff.store_id,
    )
    return TokenOut(
        access_token=access,
        expires_in=expires_in,
        refresh_token=refresh_token,
        staff_id=staff.id,
        merchant_id=staff.merchant_id,
        role=staff.role,
        store_id=staff.store_id,
    )


@bp.post("/login")
@endpoint(
    summary="Staff login",
    tag="auth",
    body=LoginIn,
    response=TokenOut,
    errors=(401, 423),
    description="Password login. Five failures in a row lock the account for a while (423).",
)
async def login(request: Request, body: LoginIn):
    security = request.app.ctx.settings.security
    staff = await staff_domain.authenticate(
        username=body.username,
        password=body.password,
        max_failures=security.login_max_failures,
        lock_seconds=security.login_lock_seconds,
    )
    refresh = await staff_domain.issue_refresh_token(staff=staff, ttl_seconds=security.refresh_token_ttl)
    return ok(await _tokens(request, staff, refresh))


@bp.post("/refresh")
@endpoint(
    summary="Rotate a refresh token",
    tag="auth",
    body=RefreshIn,
    response=TokenOut,
    errors=(401,),
    description="Spends the refresh token and returns a new pair; reusing a spent token revokes the chain.",
)
async def refresh(request: Request, body: RefreshIn):
    staff, new_refresh = await staff_domain.rotate_refresh_token(
        token=body.refresh_token, ttl_seconds=request.app.ctx.settings.security.refresh_token_ttl
    )
    return ok(await _tokens(request, staff, new_refresh))


@bp.post("/logout")
@endpoint(
    summary="Log out",
    tag="auth",
    roles=ALL_STAFF,
    body=LogoutIn,
    status=204,
    description="Revokes this access token and the refresh token chain (all chains when none is given).",
)
async def logout(request: Request, body: LogoutIn):
    principal = request.ctx.principal
    await staff_domain.revoke_refresh_family(staff_id=principal.subject_id, token=body.refresh_token)
    await revoke_access_token(request, principal)
    return empty()
