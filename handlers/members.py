"""Member registration, lookup and profile changes by staff."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.ledger import books as ledger
from models.members import members
from models.tenancy import merchants as tenancy
from server.api import Out, Schema, endpoint, ok
from server.auth import ALL_STAFF, Principal

bp = Blueprint("members", url_prefix="/api/members")
WRITERS = ("owner", "hq_admin", "store_manager", "cashier")


class MemberIn(Schema):
    store_id: int | None = Field(None, description="Origin store; store-scoped staff always register into theirs")
    phone: str | None = Field(None, max_length=24)
    name: str = Field("", max_length=64)
    gender: Literal["unknown", "male", "female"] = "unknown"
    birthday: date | None = None
    openid: str | None = Field(None, max_length=64)
    unionid: str | None = Field(None, max_length=64)
    id_card_no: str | None = Field(None, max_length=18, description="Stored encrypted; only a mask is returned")
    custom_fields: dict[str, Any] = Field(default_factory=dict)


class MemberPatch(Schema):
    phone: str | None = Field(None, max_length=24)
    name: str | None = Field(None, max_length=64)
    gender: Literal["unknown", "male", "female"] | None = None
    birthday: date | None = None
    id_card_no: str | None = Field(None, max_length=18)
    custom_fields: dict[str, Any] | None = Field(None, description="Merged into the current values; null removes")


class MemberOut(Out):
    id: int
    store_id: int | None
    openid: str | None
    unionid: str | None
    phone: str | None
    name: str
    gender: str
    birthday: date | None
    custom_fields: dict[str, Any]
    id_card_no_masked: str | None
    points: int
    balance: int = Field(description="Stored value in fen")
    created_at: datetime
    updated_at: datetime


class MemberFilters(Schema):
    phone: str | None = Field(None, max_length=24)
    name: str | None = Field(None, max_length=64)
    id_card_no: str | None = Field(None, max_length=18)
    openid: str | None = Field(None, max_length=64)
    card_code: str | None = Field(None, max_length=32, description="Code of the member's WeChat member card")
    store_id: int | None = Field(None, ge=1, le=2**31 - 1, description="HQ roles only; store roles see their store")
    source: Literal["staff", "oa_qr", "card", "mp", "import"] | None = None
    subscribed: bool | None = Field(None, description="Follows the official account")
    activated: bool | None = Field(None, description="Activated the member card")
    created_from: date | None = Field(None, description="Registered on or after this day (merchant's time zone)")
    created_to: date | None = Field(None, description="Registered on or before this day (merchant's time zone)")

    def for_principal(self, principal: Principal) -> dict[str, Any]:
        """The filters as domain arguments; store-scoped roles stay fixed to their store."""
        filters = self.model_dump(exclude={"offset", "limit"})
        if principal.store_scope is not None:
            filters["store_id"] = principal.store_scope
        return {"merchant_id": principal.merchant_id, **filters}


class MemberQuery(MemberFilters):
    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(20, ge=1, le=100)


class MemberPage(Out):
    total: int
    items: list[MemberOut]


async def serialize(member: members.Member) -> MemberOut:
    points, balance = await ledger.get_balances(member_id=member.id)
    return MemberOut(
        id=member.id,
        store_id=member.origin_store_id,
        openid=member.openid,
        unionid=member.unionid,
        phone=member.phone,
        name=member.name,
        gender=member.gender,
        birthday=member.birthday,
        custom_fields=member.custom_fields,
        id_card_no_masked=member.id_card_masked(),
        points=points,
        balance=balance,
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


async def visible_member(principal: Principal, member_id: int) -> members.Member:
    """The member if the caller may see it (same merchant; same store for store-scoped roles)."""
    return await members.get_member(
        merchant_id=principal.merchant_id, member_id=member_id, store_id=principal.store_scope
    )


@bp.post("/")
@endpoint(
    summary="Register a member",
    tag="members",
    roles=WRITERS,
    body=MemberIn,
    response=MemberOut,
    status=201,
    errors=(404, 409),
    description="409 with `member_id` when the phone, openid or ID card is taken.",
)
async def create_member(request: Request, body: MemberIn):
    principal = request.ctx.principal
    store_id = principal.store_scope if principal.store_scope is not None else body.store_id
    if store_id is not None:
        await tenancy.get_store(merchant_id=principal.merchant_id, store_id=store_id)
    profile = body.model_dump(exclude={"store_id"})
    member = await members.create_member(
        merchant_id=principal.merchant_id,
        origin_store_id=store_id,
        profile=profile,
        actor=f"staff:{principal.subject_id}",
    )
    return ok(await serialize(member), status=201)


@bp.get("/")
@endpoint(
    summary="Search members",
    tag="members",
    roles=ALL_STAFF,
    query=MemberQuery,
    response=MemberPage,
    description="Newest first. Store-scoped roles see only members of their store (store_id is ignored for them). "
    "Registration dates are days in the merchant's time zone. A tier filter comes with the loyalty engine.",
)
async def search_members(request: Request, query: MemberQuery):
    filters = query.for_principal(request.ctx.principal)
    total, found = await members.search_members(offset=query.offset, limit=query.limit, **filters)
    return ok(MemberPage(total=total, items=[await serialize(m) for m in found]))


@bp.get("/<member_id:int>")
@endpoint(summary="Read a member", tag="members", roles=ALL_STAFF, response=MemberOut, errors=(404,))
async def read_member(request: Request, member_id: int):
    return ok(await serialize(await visible_member(request.ctx.principal, member_id)))


@bp.patch("/<member_id:int>")
@endpoint(
    summary="Update a member", tag="members", roles=WRITERS, body=MemberPatch, response=MemberOut, errors=(404, 409)
)
async def update_member(request: Request, member_id: int, body: MemberPatch):
    principal = request.ctx.principal
    member = await visible_member(principal, member_id)
    updated = await members.update_member(
        member=member, changes=body.model_dump(exclude_unset=True), actor=f"staff:{principal.subject_id}"
    )
    return ok(await serialize(updated))
