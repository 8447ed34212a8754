"""Official-account parametric QR codes (qrcode/create): request shapes only."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wechat.gateway import AppClient


async def create_permanent_qrcode(client: AppClient, *, scene: str) -> tuple[str, str]:
    """qrcode/create (QR_LIMIT_STR_SCENE) for a string scene; returns (ticket, url), each "" when WeChat omits it."""
    answer = await client.call(
        "POST",
        "/cgi-bin/qrcode/create",
        json={"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": scene}}},
    )
    return str(answer.get("ticket") or ""), str(answer.get("url") or "")
