"""Inbound official-account pushes: the log that makes a redelivered push a no-op, and the exactly-once run."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from wechat.events import Handler, OAEvent, Reply


class InboundEvent(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    appid = fields.CharField(max_length=32)
    dedupe_key = fields.CharField(max_length=128)
    msg_type = fields.CharField(max_length=32)
    event = fields.CharField(max_length=64, default="")
    openid = fields.CharField(max_length=64, default="")
    payload: dict[str, Any] = fields.JSONField()
    reply: dict[str, Any] | None = fields.JSONField(null=True)  # the passive reply, answered again to redeliveries
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "wechat_inbound_event"
        unique_together = (("appid", "dedupe_key"),)


def dedupe_key(message: dict[str, str]) -> str:
    """WeChat's own rule: MsgId for messages, FromUserName + CreateTime for events."""
    msg_id = message.get("MsgId") or message.get("MsgID")
    if msg_id and message.get("MsgType") != "event":
        return f"msg:{msg_id}"
    return f"evt:{message.get('FromUserName', '')}:{message.get('CreateTime', '')}:{message.get('Event', '')}"


async def record_event(*, merchant_id: int, appid: str, message: dict[str, Any]) -> tuple[InboundEvent, bool]:
    """Store an event once; (event, False) for a redelivery, which gets the first delivery's row."""
    key = dedupe_key(message)[:128]
    try:
        event = await InboundEvent.create(
            merchant_id=merchant_id,
            appid=appid,
            dedupe_key=key,
            msg_type=message.get("MsgType", "")[:32],
            event=(message.get("Event") or "")[:64],
            openid=message.get("FromUserName", "")[:64],
            payload=message,
        )
        return event, True
    except IntegrityError:
        return await InboundEvent.get(appid=appid, dedupe_key=key), False


async def save_reply(*, event: InboundEvent, reply: dict[str, str]) -> None:
    """Keep the reply so that WeChat's retry of a slow answer gets the same one."""
    await InboundEvent.filter(id=event.id).update(reply=reply)


async def list_events(*, merchant_id: int, limit: int = 50) -> list[InboundEvent]:
    return await InboundEvent.filter(merchant_id=merchant_id).order_by("-id").limit(limit)


async def receive_push(
    *, merchant_id: int, appid: str, message: dict[str, str], dispatch: Handler
) -> tuple[Reply | None, bool]:
    """Record a verified push and run `dispatch` on it in one transaction, once: (reply, fresh).

    A redelivery (same MsgId, or FromUserName + CreateTime + Event) runs nothing and gets the first reply again.
    """
    async with in_transaction():
        recorded, fresh = await record_event(merchant_id=merchant_id, appid=appid, message=message)
        if not fresh:
            return (Reply(recorded.reply) if recorded.reply is not None else None), False
        reply = await dispatch(OAEvent(merchant_id=merchant_id, appid=appid, message=message))
        if reply is not None:
            await save_reply(event=recorded, reply=reply)
    return reply, True
