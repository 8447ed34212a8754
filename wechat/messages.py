"""Official-account messages (template send): request shapes only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wechat.gateway import AppClient


async def send_template(
    client: AppClient,
    *,
    touser: str,
    template_id: str,
    data: dict[str, Any],
    url: str = "",
    miniprogram: dict[str, Any] | None = None,
    client_msg_id: str = "",
) -> int:
    """message/template/send to one follower; returns WeChat's msgid (0 when it gives none)."""
    body: dict[str, Any] = {"touser": touser, "template_id": template_id, "data": data}
    if url:
        body["url"] = url
    if miniprogram:
        body["miniprogram"] = miniprogram
    if client_msg_id:
        body["client_msg_id"] = client_msg_id
    answer = await client.call("POST", "/cgi-bin/message/template/send", json=body)
    msgid = answer.get("msgid")
    return msgid if isinstance(msgid, int) and not isinstance(msgid, bool) else 0
