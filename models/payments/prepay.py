"""Recharge, plan and service package orders: the amount fixed server-side, the order first, then the prepay."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.errors import Conflict, Unavailable, Unprocessable, wechat_errors
from models.ledger import books as ledger
from models.members.members import Member
from models.packages import templates as package_templates
from models.payments.catalogue import CUSTOM_AMOUNT_MAX, CUSTOM_AMOUNT_MIN, get_package, get_plan, package_on_sale
from models.payments.orders import PayOrder, purchases_counted
from models.tenancy.merchants import WechatAccount
from wechat import payapi
from wechat.errors import WeChatPayError
from wechat.paysign import V2_SIGN_TYPES, v2_jsapi_pay_params, v3_jsapi_pay_params

ORDER_TTL = timedelta(minutes=30)
BUSY_PAY_CODES = frozenset({"SYSTEMERROR", "SYSTEM_ERROR", "HTTP_ERROR", "FREQUENCY_LIMITED", "FREQUENCY_LIMIT_EXCEED"})


@dataclass(frozen=True)
class PayAccount:
    """What an order needs from the merchant's pay account and mini-program."""

    mch_id: str
    appid: str
    api_version: str
    keys: dict[str, str] = field(repr=False)

    @property
    def v2_sign_type(self) -> str:
        sign_type = self.keys.get("sign_type") or "MD5"
        return sign_type if sign_type in V2_SIGN_TYPES else "MD5"


@dataclass(frozen=True)
class Checkout:
    order: PayOrder
    pay_params: dict[str, str]  # wx.requestPayment's timeStamp, nonceStr, package, signType, paySign (+ appId)


@dataclass(frozen=True)
class _Sale:
    kind: str
    amount: int
    description: str
    snapshot: dict[str, Any]
    package_id: int | None = None
    plan_id: int | None = None
    bonus_balance: int = 0
    bonus_points: int = 0
    per_member_limit: int = 0


async def pay_account(*, merchant_id: int) -> PayAccount:
    """The merchant's pay account and the mini-program its members pay in (409 when not configured)."""
    pay = await WechatAccount.filter(merchant_id=merchant_id, kind="pay").order_by("id").first()
    app = await WechatAccount.filter(merchant_id=merchant_id, kind="miniprogram").order_by("id").first()
    if pay is None or app is None:
        raise Conflict("WeChat Pay is not configured for this merchant", code="payments.not_configured")
    keys = pay.secrets()
    version = keys.get("api_version") or "v3"
    return PayAccount(mch_id=pay.mch_id, appid=app.appid, api_version=version if version == "v2" else "v3", keys=keys)


def new_out_trade_no() -> str:
    """28 characters, time-ordered, unguessable: HY + UTC yyyymmddHHMMSS + 12 random digits."""
    return f"HY{clock.now():%Y%m%d%H%M%S}{secrets.randbelow(10**12):012d}"


def _snapshot(model: Any, names: tuple[str, ...]) -> dict[str, Any]:
    values = {name: getattr(model, name) for name in names}
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


async def create_recharge_order(
    *, gateway: Any, merchant_id: int, member_id: int, package_id: int | None, amount: int | None, client_ip: str
) -> Checkout:
    """Recharge a package (its price, server-side) or a custom amount within the limits; one of the two."""
    if (package_id is None) == (amount is None):
        raise Unprocessable("give either package_id or amount", code="recharge.package_or_amount", field="amount")
    if package_id is not None:
        package = await get_package(merchant_id=merchant_id, package_id=package_id)
        if not package_on_sale(package=package, now=clock.now()):
            raise Conflict("this package is not on sale now", code="recharge_package.not_on_sale")
        snapshot = _snapshot(
            package, ("id", "name", "price", "bonus_balance", "bonus_points", "gift_tier_id", "gifts", "valid_until")
        )
        sale = _Sale(
            kind="recharge",
            amount=package.price,
            description=f"储值 {package.name}"[:127],
            snapshot={"package": snapshot, "gift_tier_id": package.gift_tier_id},
            package_id=package.id,
            bonus_balance=package.bonus_balance,
            bonus_points=package.bonus_points,
            per_member_limit=package.per_member_limit,
        )
    else:
        assert amount is not None
        if not CUSTOM_AMOUNT_MIN <= amount <= CUSTOM_AMOUNT_MAX:
            raise Unprocessable(
                f"amount must be {CUSTOM_AMOUNT_MIN}..{CUSTOM_AMOUNT_MAX} fen",
                code="recharge.amount_invalid",
                field="amount",
            )
        sale = _Sale(kind="recharge", amount=amount, description="储值充值", snapshot={"custom_amount": amount})
    return await _checkout(
        gateway=gateway, merchant_id=merchant_id, member_id=member_id, sale=sale, client_ip=client_ip
    )


async def create_plan_order(
    *, gateway: Any, merchant_id: int, member_id: int, plan_id: int, client_ip: str
) -> Checkout:
    """Buy (or renew) an active paid plan at its current price."""
    plan = await get_plan(merchant_id=merchant_id, plan_id=plan_id)
    if not plan.is_active:
        raise Conflict("this plan is not on sale", code="paid_plan.not_on_sale")
    snapshot = _snapshot(
        plan,
        ("id", "code", "name", "period", "price", "tier_id", "points_multiplier_permille", "benefits", "refund_rule"),
    )
    sale = _Sale(
        kind="plan",
        amount=plan.price,
        description=f"会员 {plan.name}"[:127],
        snapshot={"plan": snapshot},
        plan_id=plan.id,
    )
    return await _checkout(
        gateway=gateway, merchant_id=merchant_id, member_id=member_id, sale=sale, client_ip=client_ip
    )


async def create_package_order(
    *, gateway: Any, merchant_id: int, member_id: int, template_id: int, store_id: int | None, client_ip: str
) -> Checkout:
    """Buy an active service package at its current price; the order keeps its terms, delivered as they were."""
    terms = await package_templates.terms_on_sale(merchant_id=merchant_id, template_id=template_id, store_id=store_id)
    if terms.price <= 0:
        raise Conflict("a free package is not paid with WeChat Pay", code="package.free")
    sale = _Sale(
        kind="package",
        amount=terms.price,
        description=f"套餐 {terms.name}"[:127],
        snapshot={"template": terms.snapshot(), "store_id": store_id},
    )
    return await _checkout(
        gateway=gateway, merchant_id=merchant_id, member_id=member_id, sale=sale, client_ip=client_ip
    )


async def _create_order(*, merchant_id: int, member: Member, account: PayAccount, sale: _Sale) -> PayOrder:
    """The CREATED order; the per-member limit is checked under the member's account row lock."""

    async def create() -> PayOrder:
        async with in_transaction():
            if sale.per_member_limit > 0 and sale.package_id is not None:
                # serialises one member's concurrent orders (lock order: account first, as in the ledger)
                await ledger.BalanceAccount.filter(member_id=member.id).select_for_update().first()
                now = clock.now()
                used = await purchases_counted(member_id=member.id, package_ids=[sale.package_id], now=now)
                if used.get(sale.package_id, 0) >= sale.per_member_limit:
                    raise Conflict(
                        "the purchase limit of this package is reached", code="recharge_package.limit_reached"
                    )
            return await PayOrder.create(
                merchant_id=merchant_id,
                member_id=member.id,
                kind=sale.kind,
                out_trade_no=new_out_trade_no(),
                package_id=sale.package_id,
                plan_id=sale.plan_id,
                amount=sale.amount,
                bonus_balance=sale.bonus_balance,
                bonus_points=sale.bonus_points,
                description=sale.description,
                api_version=account.api_version,
                mch_id=account.mch_id,
                appid=account.appid,
                openid=member.mp_openid,
                snapshot=sale.snapshot,
                expires_at=clock.now() + ORDER_TTL,
            )

    return await ledger.retrying(create, what="create pay order")


async def _checkout(*, gateway: Any, merchant_id: int, member_id: int, sale: _Sale, client_ip: str) -> Checkout:
    member = await Member.get_or_none(id=member_id, merchant_id=merchant_id)
    if member is None:
        raise Conflict("member not found", code="member.not_found")
    if not member.mp_openid:
        raise Conflict("log in with the mini-program before paying", code="payments.mp_openid_required")
    account = await pay_account(merchant_id=merchant_id)
    order = await _create_order(merchant_id=merchant_id, member=member, account=account, sale=sale)
    # outside the transaction: a failure leaves the order CREATED, and reconciliation closes it
    prepay_id = await prepay(gateway=gateway, order=order, account=account, client_ip=client_ip)
    await PayOrder.filter(id=order.id, status="CREATED").update(prepay_id=prepay_id)
    order.prepay_id = prepay_id
    return Checkout(order=order, pay_params=pay_params(order=order, account=account))


@contextmanager
def pay_errors(action: str) -> Iterator[None]:
    """WeChat Pay failures as 502 (refused) or 503 (busy, unreachable)."""
    with wechat_errors(action):
        try:
            yield
        except httpx.HTTPError as exc:
            raise Unavailable(f"WeChat Pay is unavailable ({action})", code="wechat.unavailable") from exc
        except WeChatPayError as exc:
            if exc.code in BUSY_PAY_CODES or exc.code.startswith("HTTP_5"):
                raise Unavailable(f"WeChat Pay is busy ({action})", code="wechat.unavailable") from exc
            raise


async def prepay(*, gateway: Any, order: PayOrder, account: PayAccount, client_ip: str) -> str:
    """The JSAPI prepay (v2 unifiedorder or v3 jsapi, per the order) for a CREATED order; returns the prepay_id."""
    client = await gateway.pay_client(order.mch_id, version=order.api_version)
    with pay_errors("prepay"):
        return await payapi.jsapi_prepay(
            client,
            appid=order.appid,
            description=order.description,
            out_trade_no=order.out_trade_no,
            amount=order.amount,
            openid=order.openid,
            notify_url=f"{gateway.self_url}/pay/notify/{order.api_version}/{order.mch_id}",
            expires_at=order.expires_at,
            client_ip=client_ip,
            sign_type=account.v2_sign_type,
        )


def pay_params(*, order: PayOrder, account: PayAccount) -> dict[str, str]:
    """wx.requestPayment parameters, signed server-side (v2 MD5/HMAC-SHA256 with the key, v3 RSA)."""
    nonce, timestamp = secrets.token_hex(16), str(int(clock.now().timestamp()))
    if order.api_version == "v2":
        return v2_jsapi_pay_params(
            appid=order.appid,
            prepay_id=order.prepay_id,
            key=account.keys["api_key"],
            sign_type=account.v2_sign_type,
            nonce_str=nonce,
            timestamp=timestamp,
        )
    return v3_jsapi_pay_params(
        appid=order.appid,
        prepay_id=order.prepay_id,
        private_key_pem=account.keys["private_key"],
        nonce_str=nonce,
        timestamp=timestamp,
    )
