"""Typed dispatch of official-account pushes to handlers that domains register."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wechatpy.events import EVENT_TYPES
from wechatpy.messages import MESSAGE_TYPES, UnknownMessage

log = logging.getLogger("huiyuan.wechat.events")


@dataclass(frozen=True)
class OAEvent:
    """One push from an official account, already verified, decrypted and deduplicated."""

    merchant_id: int
    appid: str
    message: dict[str, str]

    @property
    def kind(self) -> str:
        """`event:<name>` (lowercased, e.g. event:subscribe, event:scan) or `msg:<type>`."""
        if self.message.get("MsgType") == "event":
            return "event:" + self.message.get("Event", "").lower()
        return "msg:" + self.message.get("MsgType", "").lower()

    @property
    def openid(self) -> str:
        return self.message.get("FromUserName", "")

    def typed(self) -> Any:
        """The wechatpy message/event object (e.g. SubscribeScanEvent with scene_id), from our safe parse."""
        return typed_message(self.message)


def typed_message(message: dict[str, str]) -> Any:
    """wechatpy's parse_message mapping applied to an already defusedxml-parsed push (no XML re-parse)."""
    fields = dict(message)
    message_type = fields.get("MsgType", "").lower()
    if message_type != "event":
        return MESSAGE_TYPES.get(message_type, UnknownMessage)(fields)
    event_type = fields.get("Event", "").lower()
    event_key = fields.get("EventKey") or ""
    if event_type == "subscribe" and event_key.startswith("qrscene_"):
        event_type = fields["Event"] = "subscribe_scan"
        fields["EventKey"] = event_key[len("qrscene_") :]
    return EVENT_TYPES.get(event_type, UnknownMessage)(fields)


Reply = dict[str, str]  # e.g. {"MsgType": "text", "Content": "..."}
Handler = Callable[[OAEvent], Awaitable[Reply | None]]
_handlers: dict[str, list[Handler]] = {}


def on(*kinds: str) -> Callable[[Handler], Handler]:
    """Register a handler for event kinds such as "event:subscribe" or "msg:text"."""

    def register(handler: Handler) -> Handler:
        for kind in kinds:
            _handlers.setdefault(kind, []).append(handler)
        return handler

    return register


async def dispatch(event: OAEvent) -> Reply | None:
    """Run every handler for the event's kind (in the caller's transaction); the first reply wins."""
    reply: Reply | None = None
    handlers = _handlers.get(event.kind, [])
    if not handlers:
        log.info("no handler for %s from %s", event.kind, event.appid)
    for handler in handlers:
        result = await handler(event)
        if reply is None and result is not None:
            reply = result
    return reply
