"""Outbox topics of the WeChat member card: activation and sync of points, balance and tier."""

from __future__ import annotations

from typing import Any

from models.cards.activation import activate_from_event, push_activation
from models.cards.sync import sync_card
from models.cards.template import push_card_update
from models.kernel.outbox import OutboxMessage

SYNC_LOCK_SECONDS = 30


async def activate_card(gateway: Any, message: OutboxMessage) -> None:
    """submit_membercard_user_info: fetch the form, activate once, then card/membercard/activate."""
    payload = message.payload
    await activate_from_event(
        wechat=gateway,
        merchant_id=payload["merchant_id"],
        card_id=payload["card_id"],
        code=payload["code"],
        activate_ticket=payload.get("activate_ticket") or "",
        retry=message.attempts > 1,
    )


async def call_activate(gateway: Any, message: OutboxMessage) -> None:
    """card/membercard/activate for a card activated from the mini-program."""
    payload = message.payload
    await push_activation(
        wechat=gateway, merchant_id=payload["merchant_id"], card_id=payload["card_id"], code=payload["code"]
    )


async def sync_member_card(gateway: Any, message: OutboxMessage) -> None:
    """card/membercard/updateuser; one member's syncs run one at a time, so the last state read is the last sent."""
    member_id = message.payload["member_id"]
    lock = gateway.redis.lock(
        gateway.keys("card-sync", "{" + str(member_id) + "}"),
        timeout=SYNC_LOCK_SECONDS,
        blocking_timeout=SYNC_LOCK_SECONDS,
    )
    async with lock:
        await sync_card(wechat=gateway, member_id=member_id, books=list(message.payload.get("books") or []))


async def update_card(gateway: Any, message: OutboxMessage) -> None:
    """card/update after the points rules changed (the card's bonus rule shows them)."""
    await push_card_update(wechat=gateway, merchant_id=message.payload["merchant_id"])
