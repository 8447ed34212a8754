"""Official-account pushes as typed events (OAEvent); the table of who handles which kind is server/wiring.py."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wechatpy.events import EVENT_TYPES
from wechatpy.messages import MESSAGE_TYPES, UnknownMessage


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
    """wechatpy's parse_message mapping applied to an already parsed push (wechat.xmlutil) (no XML re-parse)."""
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
Handler = Callable[[OAEvent], Awaitable[Reply | None]]  # the routes are the table in server/wiring.py
