"""Merchant set-up and staff: login, token refresh and logout; stores, staff logins, member custom fields."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field
from sanic import Blueprint, empty
from sanic.request import Request

from models.kernel.errors import Forbidden
from models.members import custom_fields
from models.tenancy import api_keys
from models.tenancy import merchants as tenancy
from models.tenancy import staff as staff_domain
from server.api import Out, Schema, endpoint, ok
from server.auth import (
    ADMINS,
    ALL_STAFF,
    MANAGERS,
    broadcast_api_key_revoked,
    issue_access_token,
    revoke_access_token,
    scope_of,
)

auth_bp = Blueprint("auth", url_prefix="/api/auth")


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


@auth_bp.post("/login")
@endpoint(
    summary="Staff login",
    tag="auth",
    body=LoginIn,
    response=TokenOut,
    errors=(401, 423, 503),
    description="Password login. security.login_max_failures password checks without a success lock the username "
    "(known or not) for security.login_lock_seconds (423 auth.locked with retry_after and Retry-After). 503 "
    "auth.busy with Retry-After when too many password checks are already waiting.",
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


@auth_bp.post("/refresh")
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


@auth_bp.post("/logout")
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


merchants_bp = Blueprint("merchants", url_prefix="/api")


class MerchantOut(Out):
    id: int
    code: str
    name: str
    timezone: str


class StoreIn(Schema):
    code: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = Field(min_length=1, max_length=100)
    address: str = Field("", max_length=255)


class StoreOut(Out):
    id: int
    code: str
    name: str
    address: str
    is_active: bool


class StoreList(Out):
    items: list[StoreOut]


class StaffIn(Schema):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    password: str = Field(min_length=8, max_length=256)
    role: Literal["owner", "hq_admin", "store_manager", "cashier", "marketer"]
    store_id: int | None = None
    display_name: str = Field("", max_length=64)


class StaffOut(Out):
    id: int
    username: str
    display_name: str
    role: str
    store_id: int | None
    is_active: bool
    created_at: datetime


class StaffList(Out):
    items: list[StaffOut]


class FieldIn(Schema):
    key: str = Field(min_length=1, max_length=32)
    label: str = Field(min_length=1, max_length=64)
    type: Literal["string", "int", "date", "enum", "bool"]
    required: bool = False
    options: list[str] = Field(default_factory=list, max_length=100)


class FieldOut(Out):
    id: int
    key: str
    label: str
    type: str
    required: bool
    options: list[str]


class FieldList(Out):
    items: list[FieldOut]


@merchants_bp.get("/merchant")
@endpoint(summary="The caller's merchant", tag="merchant", roles=ALL_STAFF, response=MerchantOut)
async def my_merchant(request: Request):
    merchant = await tenancy.get_merchant(merchant_id=request.ctx.principal.merchant_id)
    return ok(MerchantOut.model_validate(merchant))


@merchants_bp.get("/stores")
@endpoint(
    summary="List stores",
    tag="merchant",
    roles=ALL_STAFF,
    response=StoreList,
    description="Store-scoped roles see only their own store.",
)
async def list_stores(request: Request):
    principal = request.ctx.principal
    stores = await tenancy.list_stores(scope=scope_of(principal))
    return ok(StoreList(items=[StoreOut.model_validate(s) for s in stores]))


@merchants_bp.post("/stores")
@endpoint(
    summary="Create a store", tag="merchant", roles=ADMINS, body=StoreIn, response=StoreOut, status=201, errors=(409,)
)
async def create_store(request: Request, body: StoreIn):
    store = await tenancy.create_store(
        merchant_id=request.ctx.principal.merchant_id, code=body.code, name=body.name, address=body.address
    )
    return ok(StoreOut.model_validate(store), status=201)


@merchants_bp.get("/staff")
@endpoint(
    summary="List staff",
    tag="merchant",
    roles=MANAGERS,
    response=StaffList,
    description="A store manager sees the staff of their store.",
)
async def list_staff(request: Request):
    principal = request.ctx.principal
    staff = await staff_domain.list_staff(scope=scope_of(principal))
    return ok(StaffList(items=[StaffOut.model_validate(s) for s in staff]))


@merchants_bp.post("/staff")
@endpoint(
    summary="Create a staff login",
    tag="merchant",
    roles=ADMINS,
    body=StaffIn,
    response=StaffOut,
    status=201,
    errors=(404, 409),
    description="Only an owner may create another owner.",
)
async def create_staff(request: Request, body: StaffIn):
    principal = request.ctx.principal
    if body.role == "owner" and principal.role != "owner":
        raise Forbidden("only an owner may create an owner", code="staff.owner_only")
    staff = await staff_domain.create_staff(
        merchant_id=principal.merchant_id,
        username=body.username,
        password=body.password,
        role=body.role,
        store_id=body.store_id,
        display_name=body.display_name,
    )
    return ok(StaffOut.model_validate(staff), status=201)


@merchants_bp.get("/member-fields")
@endpoint(summary="List member custom fields", tag="members", roles=ALL_STAFF, response=FieldList)
async def list_member_fields(request: Request):
    fields = await custom_fields.list_fields(merchant_id=request.ctx.principal.merchant_id)
    return ok(FieldList(items=[FieldOut.model_validate(f) for f in fields]))


@merchants_bp.post("/member-fields")
@endpoint(
    summary="Define a member custom field",
    tag="members",
    roles=ADMINS,
    body=FieldIn,
    response=FieldOut,
    status=201,
    errors=(409,),
)
async def create_member_field(request: Request, body: FieldIn):
    field = await custom_fields.define_field(merchant_id=request.ctx.principal.merchant_id, **body.model_dump())
    return ok(FieldOut.model_validate(field), status=201)


class ApiKeyIn(Schema):
    name: str = Field(min_length=1, max_length=64)


class ApiKeyOut(Out):
    id: int
    store_id: int
    name: str
    prefix: str = Field(description="The key's first 8 characters after hy_pos_, to tell keys apart")
    created_by_staff_id: int | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute")


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The whole key, hy_pos_<prefix>_<secret>: shown this once, stored only hashed")


class ApiKeyList(Out):
    items: list[ApiKeyOut]


@merchants_bp.post("/stores/<store_id:int>/api-keys")
@endpoint(
    summary="Create a POS API key for a store",
    tag="merchant",
    roles=MANAGERS,
    body=ApiKeyIn,
    response=ApiKeyCreatedOut,
    status=201,
    errors=(409,),
    description="The till sends it as `Authorization: ApiKey <key>` and acts with role pos in this store. The key "
    "is in this answer only; Huiyuan keeps its SHA-256 hash. A store manager may create keys for their own store.",
)
async def create_api_key(request: Request, store_id: int, body: ApiKeyIn):
    principal = request.ctx.principal
    row, key = await api_keys.create_key(
        scope=scope_of(principal), store_id=store_id, name=body.name, staff_id=principal.subject_id
    )
    out = ApiKeyOut.model_validate(row).model_dump()
    return ok(ApiKeyCreatedOut(**out, key=key), status=201)


@merchants_bp.get("/stores/<store_id:int>/api-keys")
@endpoint(
    summary="List a store's POS API keys",
    tag="merchant",
    roles=MANAGERS,
    response=ApiKeyList,
    description="Oldest first, revoked ones included; never the secret.",
)
async def list_api_keys(request: Request, store_id: int):
    rows = await api_keys.list_keys(scope=scope_of(request.ctx.principal), store_id=store_id)
    return ok(ApiKeyList(items=[ApiKeyOut.model_validate(r) for r in rows]))


@merchants_bp.post("/stores/<store_id:int>/api-keys/<key_id:int>/revoke")
@endpoint(
    summary="Revoke a POS API key",
    tag="merchant",
    roles=MANAGERS,
    response=ApiKeyOut,
    description="Effective at once in every process (the revocation is broadcast); revoking twice is harmless.",
)
async def revoke_api_key(request: Request, store_id: int, key_id: int):
    row = await api_keys.revoke_key(scope=scope_of(request.ctx.principal), store_id=store_id, key_id=key_id)
    await broadcast_api_key_revoked(request, row.prefix)
    return ok(ApiKeyOut.model_validate(row))


bp = Blueprint.group(auth_bp, merchants_bp)
