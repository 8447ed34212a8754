"""Shared steps of the member-card tests: the card template, emulator card events, recorded WeChat calls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from jobs.outbox import deliver_due
from models.kernel import clock
from server import wiring
from server.auth import issue_access_token

EMU = "/_emulator"
MOBILE = "USER_FORM_INFO_FLAG_MOBILE"
NAME = "USER_FORM_INFO_FLAG_NAME"
BIRTHDAY = "USER_FORM_INFO_FLAG_BIRTHDAY"
SEX = "USER_FORM_INFO_FLAG_SEX"
TEMPLATE: dict[str, Any] = {
    "brand_name": "汇元咖啡",
    "title": "汇元会员卡",
    "logo_url": "https://mmbiz.qpic.cn/mmbiz/logo.png",
    "color": "Color010",
    "notice": "结账时出示会员卡",
    "description": "积分可抵现，储值更优惠",
    "prerogative": "会员专享九折",
    "activate_url": "https://huiyuan.test/mp/activate",
    "form": {"required": [MOBILE], "optional": [NAME, BIRTHDAY, SEX]},
}


async def put_template(client: httpx.AsyncClient, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = await client.put("/api/card-template", json={**TEMPLATE, **changes}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def set_rewards(client: httpx.AsyncClient, headers: dict[str, str], **amounts: int) -> None:
    response = await client.put("/api/onboarding-settings", json=amounts, headers=headers)
    assert response.status_code == 200, response.text


async def oa_event(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(f"{EMU}/control/oa-event", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert all(d["status"] == 200 for d in answer["deliveries"]), answer["deliveries"]
    return answer


async def scan(client: httpx.AsyncClient, *, openid: str, store: str = "S001", **body: Any) -> None:
    response = await client.post(f"{EMU}/control/scan", json={"store": store, "openid": openid, **body})
    assert response.status_code == 200, response.text
    assert all(d["status"] == 200 for d in response.json()["deliveries"])


async def claim(client: httpx.AsyncClient, *, openid: str, card_id: str, outer_str: str = "S001", **body: Any) -> str:
    """user_get_card; returns the code WeChat gave the card."""
    answer = await oa_event(client, openid=openid, event="user_get_card", card_id=card_id, outer_str=outer_str, **body)
    return answer["code"]


def form(*, mobile: str | None = "13800000001", name: str = "韩梅梅", **extra: str) -> dict[str, Any]:
    common = [{"name": MOBILE, "value": mobile}] if mobile else []
    common += [{"name": NAME, "value": name}, {"name": BIRTHDAY, "value": "1990-05-17"}, {"name": SEX, "value": "女"}]
    custom = [{"name": label, "value": value} for label, value in extra.items()]
    return {"common_field_list": common, "custom_field_list": custom}


async def submit(
    client: httpx.AsyncClient, *, openid: str, card_id: str, code: str, info: dict[str, Any], **body: Any
) -> str:
    """submit_membercard_user_info; returns the activate_ticket the emulator filed the form under."""
    answer = await oa_event(
        client, openid=openid, event="submit_membercard_user_info", card_id=card_id, code=code, info=info, **body
    )
    return answer["activate_ticket"]


async def calls(client: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    response = await client.get(f"{EMU}/control/calls", params={"path": path})
    assert response.status_code == 200, response.text
    return [call for call in response.json()["calls"] if call["path"] == path]


async def deliver(app: Any) -> int:
    return await deliver_due(gateway=app.ctx.wechat, topics=wiring.OUTBOX_TOPICS)


async def deliver_after_backoff(app: Any) -> int:
    """Deliver with the clock moved past the outbox's retry backoff."""
    later = clock.now() + timedelta(minutes=5)
    clock.set_clock(lambda: later)
    try:
        return await deliver(app)
    finally:
        clock.set_clock(None)


def member_headers(app: Any, *, member_id: int, merchant_id: int) -> dict[str, str]:
    token, _ = issue_access_token(
        secret=app.ctx.settings.security.jwt_secret,
        ttl=600,
        kind="member",
        subject_id=member_id,
        merchant_id=merchant_id,
        role="member",
        store_id=None,
    )
    return {"Authorization": f"Bearer {token}"}


async def points_of(client: httpx.AsyncClient, headers: dict[str, str], member_id: int) -> list[tuple[int, str, str]]:
    """(delta, kind, idempotency_key) of the member's points ledger, oldest first."""
    response = await client.get(f"/api/members/{member_id}/points/ledger", headers=headers)
    assert response.status_code == 200, response.text
    return [(e["delta"], e["kind"], e["idempotency_key"]) for e in reversed(response.json()["items"])]


async def member_id_of(client: httpx.AsyncClient, headers: dict[str, str], openid: str) -> int:
    response = await client.get("/api/members/", params={"openid": openid}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 1, response.json()
    return response.json()["items"][0]["id"]


async def followed_and_claimed(
    client: httpx.AsyncClient, headers: dict[str, str], *, card_id: str, openid: str = "o1"
) -> tuple[int, str]:
    """A new follower through the S001 store code who put the card into the wallet; (member_id, code)."""
    await scan(client, openid=openid)
    code = await claim(client, openid=openid, card_id=card_id)
    return await member_id_of(client, headers, openid), code


async def encrypt_code(client: httpx.AsyncClient, *, card_id: str, code: str) -> str:
    """The encrypt_code WeChat puts into the card's page URL."""
    answer = await client.post(f"{EMU}/control/card-encrypt-code", json={"card_id": card_id, "code": code})
    assert answer.status_code == 200, answer.text
    return answer.json()["encrypt_code"]


async def activated_member(
    client: httpx.AsyncClient, app: Any, headers: dict[str, str], *, card_id: str, openid: str, mobile: str
) -> tuple[int, str]:
    """A member who scanned S001, claimed the card and activated it (outbox delivered); (member_id, code)."""
    member_id, code = await followed_and_claimed(client, headers, card_id=card_id, openid=openid)
    await submit(client, openid=openid, card_id=card_id, code=code, info=form(mobile=mobile))
    await deliver(app)
    return member_id, code
