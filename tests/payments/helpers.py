"""Shared steps of the payment tests: catalogue, paying members, orders, the emulator's pay side, signed notifies.

Other payment tests (refunds, plans) import these: keep the signatures stable.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx

from jobs.scheduler import run_job
from models.kernel import clock
from models.members.members import register_wechat_member
from models.tenancy.merchants import find_wechat_account, get_merchant, upsert_wechat_account
from tests.cards.helpers import member_headers
from wechat.emulator import PLATFORM_PUBLIC_KEY_ID, platform_private_key_pem
from wechat.paysign import v2_sign, v3_aead_encrypt, v3_response_message, v3_sign_message
from wechat.xmlutil import to_xml

EMU = "/_emulator"
V2_SUCCESS = "<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"


async def use_pay_version(version: str, *, sign_type: str = "MD5") -> None:
    """Switch the demo pay account to API v2 or v3 (and the v2 sign type used for prepay and paySign)."""
    account = await find_wechat_account(kind="pay")
    assert account is not None
    keys = {**account.secrets(), "api_version": version, "sign_type": sign_type}
    merchant = await get_merchant(merchant_id=account.merchant_id)
    await upsert_wechat_account(
        merchant=merchant, kind="pay", mch_id=account.mch_id, secrets=keys, api_base=account.api_base
    )


async def paying_member(app: Any, *, merchant_id: int, mp_openid: str, openid: str | None = None) -> tuple[int, dict]:
    """A member with a mini-program openid (linked to the OA member of `openid` if given); (id, auth headers)."""
    member, _ = await register_wechat_member(merchant_id=merchant_id, openid=openid, mp_openid=mp_openid, source="mp")
    return member.id, member_headers(app, member_id=member.id, merchant_id=merchant_id)


async def add_package(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> dict:
    body = {"name": "充100送20", "price": 10_000, "bonus_balance": 2_000, "bonus_points": 50, **fields}
    response = await client.post("/api/recharge-packages", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def add_plan(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> dict:
    body = {"code": "PLUS-M", "name": "PLUS 月卡", "period": "month", "price": 1_900, **fields}
    response = await client.post("/api/paid-plans", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def recharge(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> dict:
    """POST /api/mp/recharge-orders expecting 201; returns {"order", "pay_params"}."""
    response = await client.post("/api/mp/recharge-orders", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def buy_plan(client: httpx.AsyncClient, headers: dict[str, str], plan_id: int) -> dict:
    response = await client.post("/api/mp/plan-orders", json={"plan_id": plan_id}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def pay(client: httpx.AsyncClient, out_trade_no: str, **options: Any) -> dict:
    """The member pays: the emulator marks the order paid and sends the notify (unless deliver=False)."""
    response = await client.post(f"{EMU}/control/pay-success", json={"out_trade_no": out_trade_no, **options})
    assert response.status_code == 200, response.text
    return response.json()


async def me(client: httpx.AsyncClient, headers: dict[str, str]) -> dict:
    response = await client.get("/api/mp/me", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def order_status(client: httpx.AsyncClient, headers: dict[str, str], out_trade_no: str) -> str:
    response = await client.get(f"/api/mp/orders/{out_trade_no}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["status"]


async def anomalies(client: httpx.AsyncClient, admin: dict[str, str]) -> list[tuple[str, str]]:
    """(kind, out_trade_no) of the merchant's payment anomalies, oldest first."""
    response = await client.get("/api/pay-anomalies", headers=admin)
    assert response.status_code == 200, response.text
    return [(a["kind"], a["out_trade_no"]) for a in reversed(response.json()["items"])]


def v2_notify(
    settings: Any,
    *,
    out_trade_no: str,
    total_fee: int,
    transaction_id: str = "",
    appid: str = "",
    mch_id: str = "",
    key: str = "",
    **overrides: str,
) -> bytes:
    """A v2 payment notify as WeChat sends it, signed (MD5) with the demo merchant key or `key`."""
    fields = {
        "appid": appid or settings.wechat.miniprogram.appid,
        "mch_id": mch_id or settings.wechat.pay.mch_id,
        "nonce_str": secrets.token_hex(8),
        "out_trade_no": out_trade_no,
        "result_code": "SUCCESS",
        "return_code": "SUCCESS",
        "total_fee": str(total_fee),
        "fee_type": "CNY",
        "transaction_id": transaction_id or "4200" + "".join(str(secrets.randbelow(10)) for _ in range(24)),
        "openid": "o_payer",
        "time_end": "20260101120000",
        **overrides,
    }
    fields["sign"] = v2_sign(fields, key=key or settings.wechat.pay.api_key)
    return to_xml(fields).encode()


def v3_notify(
    settings: Any, *, out_trade_no: str, total: int, transaction_id: str = "", **overrides: Any
) -> tuple[bytes, dict[str, str]]:
    """A v3 TRANSACTION.SUCCESS notify (body, headers) sealed with the demo v3 key, signed as the platform."""
    resource = {
        "appid": settings.wechat.miniprogram.appid,
        "mchid": settings.wechat.pay.mch_id,
        "out_trade_no": out_trade_no,
        "transaction_id": transaction_id or "4200" + "".join(str(secrets.randbelow(10)) for _ in range(24)),
        "trade_type": "JSAPI",
        "trade_state": "SUCCESS",
        "payer": {"openid": "o_payer"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
        **overrides,
    }
    nonce, aad = secrets.token_hex(6), "transaction"
    ciphertext = v3_aead_encrypt(
        api_v3_key=settings.wechat.pay.api_v3_key, nonce=nonce, associated_data=aad, plaintext=json.dumps(resource)
    )
    envelope = {
        "id": str(uuid.uuid4()),
        "event_type": "TRANSACTION.SUCCESS",
        "resource_type": "encrypt-resource",
        "resource": {
            "original_type": aad,
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": ciphertext,
            "associated_data": aad,
            "nonce": nonce,
        },
    }
    body = json.dumps(envelope).encode()
    stamp, header_nonce = str(int(time.time())), secrets.token_hex(8)
    message = v3_response_message(timestamp=stamp, nonce=header_nonce, body=body).decode()
    headers = {
        "Wechatpay-Timestamp": stamp,
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Serial": PLATFORM_PUBLIC_KEY_ID,
        "Wechatpay-Signature": v3_sign_message(private_key_pem=platform_private_key_pem(), message=message),
        "Content-Type": "application/json",
    }
    return body, headers


async def run_later(app: Any, job_id: str, *, minutes: float) -> str | None:
    """Run a job with the clock `minutes` ahead of real time."""
    later = clock.now() + timedelta(minutes=minutes)
    clock.set_clock(lambda: later)
    try:
        return await run_job(job_id, app.ctx.jobs)
    finally:
        clock.set_clock(None)
