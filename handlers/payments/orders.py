"""WeChat Pay orders: members buy recharges, plans and service packages; staff see orders and payment anomalies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictInt
from sanic import Blueprint
from sanic.request import Request

from models.payments import orders as pay_orders
from models.payments import prepay as pay_checkout
from server.api import Out, Schema, endpoint, ok
from server.auth import MANAGERS, MEMBER, scope_of

bp = Blueprint("payments")
WECHAT_ERRORS = (409, 502, 503)
STATUSES = Literal["CREATED", "PAID", "CLOSED", "REFUNDING", "REFUNDED"]


class RechargeOrderIn(Schema):
    package_id: StrictInt | None = Field(None, ge=1, description="Buy this package (its price, fixed server-side)")
    amount: StrictInt | None = Field(None, ge=1, description="Or a custom amount in fen, without a package")


class PlanOrderIn(Schema):
    plan_id: StrictInt = Field(ge=1)


class PackageOrderIn(Schema):
    template_id: StrictInt = Field(ge=1, le=2**31 - 1, description="A service package template (套餐/次卡)")
    store_id: StrictInt | None = Field(None, ge=1, le=2**31 - 1, description="Bought for this store (its coverage)")


class OrderOut(Out):
    id: int
    out_trade_no: str
    kind: str
    status: str
    amount: int
    bonus_balance: int
    bonus_points: int
    description: str
    package_id: int | None
    plan_id: int | None
    api_version: str
    expires_at: datetime
    paid_at: datetime | None
    closed_at: datetime | None
    created_at: datetime


class StaffOrderOut(OrderOut):
    member_id: int
    mch_id: str
    appid: str
    transaction_id: str
    refunded_amount: int
    snapshot: dict[str, Any]


class CheckoutOut(Out):
    order: OrderOut
    pay_params: dict[str, str] = Field(
        description="wx.requestPayment arguments: appId, timeStamp, nonceStr, package, signType, paySign"
    )


class OrderQuery(Schema):
    status: STATUSES | None = None
    kind: Literal["recharge", "plan", "package"] | None = None
    member_id: int | None = Field(None, ge=1, le=2**31 - 1)
    before_id: int | None = Field(None, ge=1, le=2**63 - 1)
    limit: int = Field(50, ge=1, le=200)


class OrderPage(Out):
    items: list[StaffOrderOut]
    next_before_id: int | None


class AnomalyOut(Out):
    id: int
    kind: str
    out_trade_no: str
    detail: dict[str, Any]
    resolved: bool
    created_at: datetime


class AnomalyQuery(Schema):
    resolved: bool | None = None
    before_id: int | None = Field(None, ge=1, le=2**63 - 1)
    limit: int = Field(50, ge=1, le=200)


class AnomalyPage(Out):
    items: list[AnomalyOut]
    next_before_id: int | None


class ResolveIn(Schema):
    note: str = Field(min_length=1, max_length=255)


def _client_ip(request: Request) -> str:
    return (request.remote_addr or request.ip or "127.0.0.1")[:45]


def _checkout(result: pay_checkout.Checkout) -> CheckoutOut:
    return CheckoutOut(order=OrderOut.model_validate(result.order), pay_params=result.pay_params)


@bp.post("/api/mp/recharge-orders")
@endpoint(
    summary="Recharge my stored value",
    tag="miniprogram",
    roles=(MEMBER,),
    body=RechargeOrderIn,
    response=CheckoutOut,
    status=201,
    errors=(404, *WECHAT_ERRORS),
    description="Give package_id (amount fixed by the package) or amount (custom, within the documented limits), "
    "not both. Creates the order, then the JSAPI prepay; answers the wx.requestPayment parameters. "
    "409 payments.mp_openid_required before a mini-program login, recharge_package.limit_reached, "
    "recharge_package.not_on_sale; 502/503 when WeChat Pay fails (the order stays CREATED and is closed later).",
)
async def create_recharge_order(request: Request, body: RechargeOrderIn):
    principal = request.ctx.principal
    result = await pay_checkout.create_recharge_order(
        gateway=request.app.ctx.wechat,
        merchant_id=principal.merchant_id,
        member_id=principal.subject_id,
        package_id=body.package_id,
        amount=body.amount,
        client_ip=_client_ip(request),
    )
    return ok(_checkout(result), status=201)


@bp.post("/api/mp/plan-orders")
@endpoint(
    summary="Buy or renew a paid plan",
    tag="miniprogram",
    roles=(MEMBER,),
    body=PlanOrderIn,
    response=CheckoutOut,
    status=201,
    errors=(404, *WECHAT_ERRORS),
    description="The price comes from the plan. Same payment path and errors as a recharge.",
)
async def create_plan_order(request: Request, body: PlanOrderIn):
    principal = request.ctx.principal
    result = await pay_checkout.create_plan_order(
        gateway=request.app.ctx.wechat,
        merchant_id=principal.merchant_id,
        member_id=principal.subject_id,
        plan_id=body.plan_id,
        client_ip=_client_ip(request),
    )
    return ok(_checkout(result), status=201)


@bp.post("/api/mp/package-orders")
@endpoint(
    summary="Buy a service package with WeChat Pay",
    tag="miniprogram",
    roles=(MEMBER,),
    body=PackageOrderIn,
    response=CheckoutOut,
    status=201,
    errors=(404, *WECHAT_ERRORS),
    description="The price comes from the template; the order keeps the template's terms, and the package is "
    "delivered with those terms when the payment is notified, even if the template changed or was retired since. "
    "Same payment path and errors as a recharge, and 404 package.template_not_found, 409 package.template_retired, "
    "package.free (price 0), 422 package.store_not_covered.",
)
async def create_package_order(request: Request, body: PackageOrderIn):
    principal = request.ctx.principal
    result = await pay_checkout.create_package_order(
        gateway=request.app.ctx.wechat,
        merchant_id=principal.merchant_id,
        member_id=principal.subject_id,
        template_id=body.template_id,
        store_id=body.store_id,
        client_ip=_client_ip(request),
    )
    return ok(_checkout(result), status=201)


@bp.get("/api/mp/orders/<out_trade_no:str>")
@endpoint(summary="One of my pay orders", tag="miniprogram", roles=(MEMBER,), response=OrderOut, errors=(404,))
async def my_order(request: Request, out_trade_no: str):
    principal = request.ctx.principal
    order = await pay_orders.get_member_order(
        merchant_id=principal.merchant_id, member_id=principal.subject_id, out_trade_no=out_trade_no
    )
    return ok(OrderOut.model_validate(order))


@bp.get("/api/pay-orders")
@endpoint(summary="Pay orders", tag="payments", roles=MANAGERS, query=OrderQuery, response=OrderPage)
async def list_orders(request: Request, query: OrderQuery):
    principal = request.ctx.principal
    orders = await pay_orders.list_orders(
        scope=scope_of(principal),
        status=query.status,
        member_id=query.member_id,
        kind=query.kind,
        before_id=query.before_id,
        limit=query.limit,
    )
    next_id = orders[-1].id if len(orders) == query.limit else None
    return ok(OrderPage(items=[StaffOrderOut.model_validate(o) for o in orders], next_before_id=next_id))


@bp.get("/api/pay-orders/<order_id:int>")
@endpoint(summary="One pay order", tag="payments", roles=MANAGERS, response=StaffOrderOut, errors=(404,))
async def get_order(request: Request, order_id: int):
    principal = request.ctx.principal
    order = await pay_orders.get_order(scope=scope_of(principal), order_id=order_id)
    return ok(StaffOrderOut.model_validate(order))


@bp.get("/api/pay-anomalies")
@endpoint(
    summary="Payment anomalies",
    tag="payments",
    roles=MANAGERS,
    query=AnomalyQuery,
    response=AnomalyPage,
    description="Verified notifies that could not be applied (amount/appid mismatch, unknown or closed order) "
    "and daily statement mismatches. Nothing was credited for them.",
)
async def list_anomalies(request: Request, query: AnomalyQuery):
    anomalies = await pay_orders.list_anomalies(
        scope=scope_of(request.ctx.principal),
        resolved=query.resolved,
        before_id=query.before_id,
        limit=query.limit,
    )
    next_id = anomalies[-1].id if len(anomalies) == query.limit else None
    return ok(AnomalyPage(items=[AnomalyOut.model_validate(a) for a in anomalies], next_before_id=next_id))


@bp.post("/api/pay-anomalies/<anomaly_id:int>/resolve")
@endpoint(
    summary="Mark a payment anomaly resolved",
    tag="payments",
    roles=MANAGERS,
    body=ResolveIn,
    response=AnomalyOut,
    errors=(404, 409),
)
async def resolve_anomaly(request: Request, anomaly_id: int, body: ResolveIn):
    principal = request.ctx.principal
    anomaly = await pay_orders.resolve_anomaly(
        scope=scope_of(principal),
        anomaly_id=anomaly_id,
        staff_id=principal.subject_id,
        note=body.note,
    )
    return ok(AnomalyOut.model_validate(anomaly))
