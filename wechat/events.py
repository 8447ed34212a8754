"""Typed dispatch of official-account pushes to handlers that domains register."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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
