"""Merchant set-up: stores, staff logins and member custom fields."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.kernel.errors import Forbidden
from models.members import custom_fields
from models.tenancy import merchants as tenancy
from models.tenancy import staff as staff_domain
from server.api import Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MANAGERS

bp = Blueprint("merchants", url_prefix="/api")


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


@bp.get("/merchant")
@endpoint(summary="The caller's merchant", tag="merchant", roles=ALL_STAFF, response=MerchantOut)
async def my_merchant(request: Request):
    merchant = await tenancy.get_merchant(merchant_id=request.ctx.principal.merchant_id)
    return ok(MerchantOut.model_validate(merchant))


@bp.get("/stores")
@endpoint(
    summary="List stores",
    tag="merchant",
    roles=ALL_STAFF,
    response=StoreList,
    description="Store-scoped roles see only their own store.",
)
async def list_stores(request: Request):
    principal = request.ctx.principal
    stores = await tenancy.list_stores(merchant_id=principal.merchant_id, store_id=principal.store_scope)
    return ok(StoreList(items=[StoreOut.model_validate(s) for s in stores]))


@bp.post("/stores")
@endpoint(
    summary="Create a store", tag="merchant", roles=ADMINS, body=StoreIn, response=StoreOut, status=201, errors=(409,)
)
async def create_store(request: Request, body: StoreIn):
    store = await tenancy.create_store(
        merchant_id=request.ctx.principal.merchant_id, code=body.code, name=body.name, address=body.address
    )
    return ok(StoreOut.model_validate(store), status=201)


@bp.get("/staff")
@endpoint(
    summary="List staff",
    tag="merchant",
    roles=MANAGERS,
    response=StaffList,
    description="A store manager sees the staff of their store.",
)
async def list_staff(request: Request):
    principal = request.ctx.principal
    staff = await staff_domain.list_staff(merchant_id=principal.merchant_id, store_id=principal.store_scope)
    return ok(StaffList(items=[StaffOut.model_validate(s) for s in staff]))


@bp.post("/staff")
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


@bp.get("/member-fields")
@endpoint(summary="List member custom fields", tag="members", roles=ALL_STAFF, response=FieldList)
async def list_member_fields(request: Request):
    fields = await custom_fields.list_fields(merchant_id=request.ctx.principal.merchant_id)
    return ok(FieldList(items=[FieldOut.model_validate(f) for f in fields]))


@bp.post("/member-fields")
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
