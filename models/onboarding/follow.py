"""Official-account onboarding: follow through a store/staff/referral QR code, scans, unfollow."""

from __future__ import annotations

import logging
from html import escape
from typing import Any, cast

from models.kernel import clock
from models.members.members import Member, register_wechat_member
from models.members.timeline import record
from models.onboarding.qrcodes import QrCode, SceneOrigin, record_scan, resolve_scene
from models.tenancy.onboarding_settings import get_onboarding_settings
from wechat.events import OAEvent, Reply

log = logging.getLogger("huiyuan.onboarding")

CARD_LINK_TEXT = "领取会员卡"


async def card_claim_url(*, merchant_id: int, store_id: int | None) -> str | None:
    """The active card-claim QR link for the store, else the merchant's store-less one, else None."""
    query = QrCode.filter(merchant_id=merchant_id, kind="card", is_active=True).exclude(url="")
    if store_id is not None:
        url = await query.filter(store_id=store_id).order_by("-id").first().values_list("url", flat=True)
        if url:
            return cast(str, url)  # flat values_list of first(): one url
    return cast(  # flat values_list of first(): one url or None
        str | None, await query.filter(store_id=None).order_by("-id").first().values_list("url", flat=True)
    )


async def _welcome(*, merchant_id: int, store_id: int | None) -> Reply:
    settings = await get_onboarding_settings(merchant_id=merchant_id)
    text = settings.welcome_text
    url = await card_claim_url(merchant_id=merchant_id, store_id=store_id)
    if url:
        text += f'\n<a href="{escape(url)}">{CARD_LINK_TEXT}</a>'
    return {"MsgType": "text", "Content": text}


async def on_follow_or_scan(event: OAEvent) -> Reply | None:
    """Register or recognise the follower, attribute a new member to the scanned store/staff/referrer, log the scan.

    Scenes: `store:<code>`, `staff:<id>` (and that staff member's store), `ref:<referral code>`. Origin and
    referrer apply to a new member only. A scene whose code is disabled, or that names an unknown store or
    staff member, still registers the member, without attribution (logged). The code's scan count rises
    only while it is active. Runs inside the callback's transaction: no WeChat calls here.
    """
    subscribing = event.kind == "event:subscribe"
    scene = (getattr(event.typed(), "scene_id", None) or "").strip() or None
    origin = await resolve_scene(merchant_id=event.merchant_id, kind="oa", scene=scene) if scene else SceneOrigin()
    member, created = await register_wechat_member(
        merchant_id=event.merchant_id,
        openid=event.openid,
        origin_store_id=origin.store_id,
        origin_staff_id=origin.staff_id,
        referral_code=origin.referral_code,
        source="oa_qr",
    )
    now = clock.now()
    changes: dict[str, Any] = {"subscribed": True, "unsubscribed_at": None}
    if subscribing:
        changes["subscribed_at"] = now
    await Member.filter(id=member.id).update(**changes)
    if scene:
        await record_scan(
            merchant_id=event.merchant_id,
            origin=origin,
            member_id=member.id,
            scene=scene,
            event="subscribe" if subscribing else "scan",
        )
    await record(
        merchant_id=event.merchant_id,
        member_id=member.id,
        kind="followed" if subscribing else "scanned",
        actor="wechat",
        detail={"scene": scene, "new_member": created, "store_id": origin.store_id, "staff_id": origin.staff_id},
    )
    store_id = origin.store_id if origin.store_id is not None else member.origin_store_id
    return await _welcome(merchant_id=event.merchant_id, store_id=store_id)


async def on_unfollow(event: OAEvent) -> Reply | None:
    """Mark the member as unfollowed and keep everything else; an unknown openid writes nothing."""
    member = await Member.filter(merchant_id=event.merchant_id, openid=event.openid).first()
    if member is None:
        log.info("unsubscribe from unknown openid for merchant %s ignored", event.merchant_id)
        return None
    await Member.filter(id=member.id).update(subscribed=False, unsubscribed_at=clock.now())
    await record(merchant_id=event.merchant_id, member_id=member.id, kind="unfollowed", actor="wechat")
    return None
