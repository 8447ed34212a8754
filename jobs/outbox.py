"""Outbox delivery: workers lease due messages and hand each to its topic's function (server/wiring.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from models.kernel.outbox import OutboxMessage, claim_due, mark_delivered, mark_failed
from wechat.messages import send_template

log = logging.getLogger("huiyuan.outbox")

TEMPLATE_SEND_TOPIC = "wechat.template_send"

Deliver = Callable[[Any, OutboxMessage], Awaitable[None]]  # (gateway, message)
Topics = Mapping[str, Deliver]  # server/wiring.py OUTBOX_TOPICS


async def deliver_due(*, gateway: Any, topics: Topics, limit: int = 50, lease_seconds: int = 60) -> int:
    """Deliver one batch of due messages, each by its topic's function; returns how many were delivered."""
    delivered = 0
    for message in await claim_due(limit=limit, lease_seconds=lease_seconds):
        handler = topics.get(message.topic)
        if handler is None:
            await mark_failed(message=message, error=f"no handler for topic {message.topic}")
            continue
        try:
            await handler(gateway, message)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            log.warning("outbox %s #%s failed (attempt %s): %s", message.topic, message.id, message.attempts, exc)
            await mark_failed(message=message, error=f"{type(exc).__name__}: {exc}")
            continue
        await mark_delivered(message_id=message.id)
        delivered += 1
    return delivered


async def run_forever(*, gateway: Any, topics: Topics, idle_seconds: float = 1.0) -> None:
    """The worker loop each server process runs; claims are exclusive, so any number may run."""
    while True:
        try:
            if await deliver_due(gateway=gateway, topics=topics) == 0:
                await asyncio.sleep(idle_seconds)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the loop must survive a database blip
            log.exception("outbox worker error; retrying")
            await asyncio.sleep(idle_seconds * 5)


async def send_template_message(gateway: Any, message: OutboxMessage) -> None:
    """Send an official-account template message (payload: appid?, touser, template_id, data, url?, miniprogram?)."""
    payload = message.payload
    client = await gateway.official_client(payload.get("appid"))
    await send_template(
        client,
        touser=str(payload.get("touser") or ""),
        template_id=str(payload.get("template_id") or ""),
        data=payload.get("data") or {},
        url=payload.get("url") or "",
        miniprogram=payload.get("miniprogram"),
        client_msg_id=payload.get("client_msg_id") or "",
    )
