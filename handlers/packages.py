"""Service packages (套餐/次卡): templates, selling at the till, visits, undo, refunds, the member's view."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import Field, StrictInt, model_validator
from sanic import Blueprint
from sanic.request import Request

from handlers.schemas import ActivePackage
from models.kernel.errors import Forbidden
from models.members import members
from models.packages import sales, templates, uses
from models.packages.tables import MemberPackage, PackageTemplate
from models.payments import refunds as pay_refunds
from server.api import Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MANAGERS, MEMBER, POS, scope_of

bp = Blueprint("packages")

TILL = ("owner", "hq_admin", "store_manager", "cashier")
MAX_FEN = templates.MAX_PRICE
Id = Field(ge=1, le=2**31 - 1)


class TemplateIn(Schema):
    name: str = Field(min_length=1, max_length=64)
    kind: Literal["uses", "time"]
    uses: StrictInt | None = Field(None, ge=1, le=10_000, description="kind uses: the number of uses")
    days: StrictInt | None = Field(None, ge=1, le=3_660, description="kind time: the pass's length in local days")
    price: StrictInt = Field(ge=0, le=MAX_FEN, description="fen")
    valid_days: StrictInt | None = Field(None, ge=1, le=3_660, description="kind uses: days after the sale; null: none")
    service_sku: str = Field("", max_length=64)
    service_category: str = Field("", max_length=64)
    store_ids: list[StrictInt] = Field(default_factory=list, max_length=200, description="empty: every store")
    status: Literal["active", "retired"] = "active"


class TemplatePatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=64)
    uses: StrictInt | None = Field(None, ge=1, le=10_000)
    days: StrictInt | None = Field(None, ge=1, le=3_660)
    price: StrictInt | None = Field(None, ge=0, le=MAX_FEN)
    valid_days: StrictInt | None = Field(None, ge=1, le=3_660)
    service_sku: str | None = Field(None, max_length=64)
    service_category: str | None = Field(None, max_length=64)
    store_ids: list[StrictInt] | None = Field(None, max_length=200)
    status: Literal["active", "retired"] | None = None


class TemplateOut(Out):
    id: int
    name: str
    kind: str
    uses: int | None
    days: int | None
    price: int
    valid_days: int | None
    service_sku: str
    service_category: str
    store_ids: list[int]
    status: str
    created_at: datetime


class TemplateList(Out):
    items: list[TemplateOut]


class TemplateQuery(Schema):
    status: Literal["active", "retired"] | None = None


class PaymentIn(Schema):
    method: Literal["balance", "cash", "card", "wechat", "alipay", "other"]
    amount: StrictInt = Field(ge=1, le=MAX_FEN, description="fen")


class SaleIn(Schema):
    template_id: StrictInt = Id
    idempotency_key: str = Field(min_length=1, max_length=128)
    payments: list[PaymentIn] = Field(default_factory=list, max_length=10, description="Must add up to the price")
    store_id: StrictInt | None = Field(None, ge=1, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_balance(self) -> SaleIn:
        if sum(p.method == "balance" for p in self.payments) > 1:
            raise ValueError("at most one balance payment")
        return self


class PackageOut(Out):
    id: int
    member_id: int
    template_id: int
    kind: str
    name: str
    uses_total: int
    uses_left: int
    days_total: int
    uses_count: int
    valid_from: datetime
    valid_until: datetime | None
    price_paid: int
    payments: list[PaymentIn]
    balance_paid: int
    balance_entry_id: int | None
    status: str
    sold_at: datetime
    sold_by: int | None
    store_id: int | None
    refund_amount: int
    refund_balance: int
    refunded_at: datetime | None


class PackageList(Out):
    items: list[PackageOut]


class PackageQuery(Schema):
    status: Literal["active", "used_up", "expired", "refunded"] | None = None


class UseIn(Schema):
    idempotency_key: str = Field(min_length=1, max_length=128, description="The visit: one use per key")
    store_id: StrictInt | None = Field(None, ge=1, le=2**31 - 1)


class UseOut(Out):
    id: int
    member_package_id: int
    visit_key: str
    day: date | None
    store_id: int | None
    staff_id: int | None
    at: datetime
    reversed_at: datetime | None


class UseResult(Out):
    use: UseOut
    package: PackageOut


class RefundIn(Schema):
    idempotency_key: str = Field(min_length=1, max_length=128)


class MyPackage(ActivePackage):
    status: str


class MyPackages(Out):
    items: list[MyPackage]


class OnSale(Out):
    id: int
    name: str
    kind: str = Field(description="uses: N uses of a service | time: a pass of `days` local days")
    uses: int | None
    days: int | None
    price: int = Field(description="fen")
    valid_days: int | None = Field(description="kind uses: local days after the purchase; null: never expires")
    store_ids: list[int] = Field(description="The stores it is used in; empty: every store")
    all_stores: bool


class OnSaleList(Out):
    items: list[OnSale]


class BuyIn(Schema):
    template_id: StrictInt = Id
    store_id: StrictInt | None = Field(None, ge=1, le=2**31 - 1, description="Bought for this store (its coverage)")
    idempotency_key: str = Field(min_length=1, max_length=100, description="One purchase per key (per member)")


def _template(row: PackageTemplate) -> TemplateOut:
    return TemplateOut.model_validate(row, from_attributes=True)


def _package(row: MemberPackage) -> PackageOut:
    return PackageOut.model_validate(row, from_attributes=True)


def _store(request: Request, store_id: int | None) -> int | None:
    """The store of a till action: a store-scoped role acts in its own store only."""
    scope = request.ctx.principal.store_scope
    if scope is not None and store_id not in (None, scope):
        raise Forbidden("staff of one store act in that store", code="auth.store_scope", field="store_id")
    return store_id or scope


@bp.post("/api/package-templates")
@endpoint(
    summary="Create a package template", tag="packages", roles=ADMINS, body=TemplateIn, response=TemplateOut, status=201
)
async def create_template(request: Request, body: TemplateIn):
    template = await templates.create_template(merchant_id=request.ctx.principal.merchant_id, data=body.model_dump())
    return ok(_template(template), status=201)


@bp.get("/api/package-templates")
@endpoint(summary="The package templates", tag="packages", roles=ALL_STAFF, query=TemplateQuery, response=TemplateList)
async def list_templates(request: Request, query: TemplateQuery):
    rows = await templates.list_templates(merchant_id=request.ctx.principal.merchant_id, status=query.status)
    return ok(TemplateList(items=[_template(row) for row in rows]))


@bp.patch("/api/package-templates/<template_id:int>")
@endpoint(
    summary="Change a package template",
    tag="packages",
    roles=ADMINS,
    body=TemplatePatch,
    response=TemplateOut,
    description="Packages already sold keep the uses, validity and price they were sold with.",
)
async def patch_template(request: Request, template_id: int, body: TemplatePatch):
    template = await templates.update_template(
        merchant_id=request.ctx.principal.merchant_id,
        template_id=template_id,
        changes=body.model_dump(exclude_unset=True),
    )
    return ok(_template(template))


@bp.post("/api/members/<member_id:int>/packages")
@endpoint(
    summary="Sell a package at the till",
    tag="packages",
    roles=TILL,
    body=SaleIn,
    response=PackageOut,
    status=201,
    also=(200,),
    errors=(409,),
    description="Payments must add up to the price (422 package.payments_mismatch); a balance payment is a stored-"
    "value debit in the same transaction (409 balance.insufficient). 200 for a repeat of the idempotency key.",
)
async def sell(request: Request, member_id: int, body: SaleIn):
    principal = request.ctx.principal
    store_id = _store(request, body.store_id)
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    package, created = await sales.sell_package(
        merchant_id=principal.merchant_id,
        member_id=member_id,
        template_id=body.template_id,
        sale_key=body.idempotency_key,
        payments=[p.model_dump() for p in body.payments],
        store_id=store_id,
        staff_id=principal.subject_id,
    )
    return ok(_package(package), status=201 if created else 200)


@bp.get("/api/members/<member_id:int>/packages")
@endpoint(summary="A member's packages", tag="packages", roles=ALL_STAFF, query=PackageQuery, response=PackageList)
async def member_packages(request: Request, member_id: int, query: PackageQuery):
    principal = request.ctx.principal
    await members.ensure_visible(scope=scope_of(principal), member_id=member_id)
    rows = await sales.list_packages(merchant_id=principal.merchant_id, member_id=member_id, status=query.status)
    return ok(PackageList(items=[_package(row) for row in rows]))


@bp.post("/api/members/<member_id:int>/packages/<package_id:int>/uses")
@endpoint(
    summary="Use a package for a visit",
    tag="packages",
    roles=(*TILL, POS),
    body=UseIn,
    response=UseResult,
    status=201,
    also=(200,),
    errors=(409,),
    description="One use per visit key (200 for a repeat); 409 package.used_up, package.expired, package.refunded, "
    "package.used_today (a time pass: one visit a local day).",
)
async def use(request: Request, member_id: int, package_id: int, body: UseIn):
    principal = request.ctx.principal
    scope = scope_of(principal)
    package_use, created = await uses.use_package(
        scope=scope,
        member_id=member_id,
        package_id=package_id,
        visit_key=body.idempotency_key,
        store_id=_store(request, body.store_id),
        staff_id=None if principal.kind == "api_key" else principal.subject_id,  # a store's POS key is no staff
    )
    package = await sales.get_package(scope=scope, member_id=member_id, package_id=package_id)
    out = UseResult(use=UseOut.model_validate(package_use, from_attributes=True), package=_package(package))
    return ok(out, status=201 if created else 200)


@bp.post("/api/members/<member_id:int>/packages/<package_id:int>/uses/<use_id:int>/reverse")
@endpoint(
    summary="Undo a visit: the use comes back",
    tag="packages",
    roles=MANAGERS,
    response=UseResult,
    errors=(409,),
    description="A repeat changes nothing; 409 package.refunded once the package was refunded.",
)
async def reverse(request: Request, member_id: int, package_id: int, use_id: int):
    scope = scope_of(request.ctx.principal)
    package_use = await uses.reverse_use(scope=scope, member_id=member_id, package_id=package_id, use_id=use_id)
    package = await sales.get_package(scope=scope, member_id=member_id, package_id=package_id)
    return ok(UseResult(use=UseOut.model_validate(package_use, from_attributes=True), package=_package(package)))


@bp.post("/api/members/<member_id:int>/packages/<package_id:int>/refund")
@endpoint(
    summary="Refund a package's unused part",
    tag="packages",
    roles=MANAGERS,
    body=RefundIn,
    response=PackageOut,
    errors=(409,),
    description="price_paid * uses_left // uses_total (a time pass: days left of its days, floored); the stored-"
    "value share goes back to the lots it came from. A package bought with WeChat Pay in the mini-program gets "
    "that amount back through a WeChat Pay refund of its order (sent through the outbox; see /api/pay-refunds). "
    "Once: 200 for a repeat of the key, 409 package.refunded, package.used_up, package.expired.",
)
async def refund(request: Request, member_id: int, package_id: int, body: RefundIn):
    principal = request.ctx.principal
    package, _ = await pay_refunds.refund_member_package(
        scope=scope_of(principal),
        member_id=member_id,
        package_id=package_id,
        refund_key=body.idempotency_key,
        staff_id=principal.subject_id,
        store_id=principal.store_scope,
    )
    return ok(_package(package))


@bp.get("/api/mp/me/packages")
@endpoint(summary="My packages: uses left and valid until", tag="packages", roles=(MEMBER,), response=MyPackages)
async def my_packages(request: Request):
    principal = request.ctx.principal
    rows = await sales.list_packages(merchant_id=principal.merchant_id, member_id=principal.subject_id, status=None)
    return ok(MyPackages(items=[MyPackage.model_validate(row, from_attributes=True) for row in rows]))


@bp.get("/api/mp/package-templates")
@endpoint(
    summary="Service packages I can buy",
    tag="miniprogram",
    roles=(MEMBER,),
    response=OnSaleList,
    description="The merchant's active package templates, newest first, with the stores each is used in. Buy one "
    "with WeChat Pay (POST /api/mp/package-orders) or with stored value (POST /api/mp/packages).",
)
async def packages_on_sale(request: Request):
    rows = await templates.list_templates(merchant_id=request.ctx.principal.merchant_id, status="active")
    items = [OnSale(**_template(row).model_dump(), all_stores=not row.store_ids) for row in rows]
    return ok(OnSaleList(items=items))


@bp.post("/api/mp/packages")
@endpoint(
    summary="Buy a service package with my stored value",
    tag="miniprogram",
    roles=(MEMBER,),
    body=BuyIn,
    response=PackageOut,
    status=201,
    also=(200,),
    errors=(404, 409),
    description="The template's current price is debited from my stored value in the same transaction as the "
    "package: 409 balance.insufficient (nothing is written), package.template_retired; 404 "
    "package.template_not_found; 422 package.store_not_covered. 200 for a repeat of the idempotency key.",
)
async def buy_with_balance(request: Request, body: BuyIn):
    principal = request.ctx.principal
    package, created = await sales.buy_with_balance(
        merchant_id=principal.merchant_id,
        member_id=principal.subject_id,
        template_id=body.template_id,
        store_id=body.store_id,
        idempotency_key=body.idempotency_key,
    )
    return ok(_package(package), status=201 if created else 200)
