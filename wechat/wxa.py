"""Mini-program server APIs (jscode2session, getuserphonenumber, getwxacodeunlimit): request shapes only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wechat.errors import WeChatError

if TYPE_CHECKING:
    from wechat.gateway import AppClient

INVALID_CODE_ERRCODES = frozenset({40029, 40163})  # a wx.login / getPhoneNumber code that is wrong or was used


@dataclass(frozen=True)
class Session:
    """What jscode2session says about the member behind a wx.login code."""

    openid: str
    session_key: str
    unionid: str | None


async def code_to_session(client: AppClient, *, js_code: str) -> Session:
    """jscode2session for a wx.login code; raises WeChatError when the answer lacks openid/session_key."""
    params = {
        "appid": client.credentials.appid,
        "secret": client.credentials.secret,
        "js_code": js_code,
        "grant_type": "authorization_code",
    }
    answer = await client.call_public("GET", "/sns/jscode2session", params=params)
    openid, session_key, unionid = answer.get("openid"), answer.get("session_key"), answer.get("unionid")
    if not isinstance(openid, str) or not openid or not isinstance(session_key, str) or not session_key:
        raise WeChatError("jscode2session answer lacks openid/session_key")
    return Session(
        openid=openid, session_key=session_key, unionid=unionid if isinstance(unionid, str) and unionid else None
    )


async def phone_info(client: AppClient, *, code: str) -> dict[str, Any]:
    """getuserphonenumber for a getPhoneNumber code; returns WeChat's phone_info (read it with phone_number)."""
    answer = await client.call("POST", "/wxa/business/getuserphonenumber", json={"code": code})
    info = answer.get("phone_info")
    if not isinstance(info, dict):
        raise WeChatError("no phone_info")
    return info


def phone_number(info: dict[str, Any]) -> str:
    """The number in a phone_info (or decrypted legacy getPhoneNumber data): national for +86; "" when absent."""
    pure, country = str(info.get("purePhoneNumber") or ""), str(info.get("countryCode") or "86")
    if not pure:
        return ""
    return pure if country == "86" else f"+{country}{pure}"


async def wxacode_unlimited(
    client: AppClient, *, scene: str, page: str | None = None, check_path: bool | None = None
) -> bytes:
    """getwxacodeunlimit: the mini-program code image for a scene; raises WeChatError when no image comes back."""
    body: dict[str, Any] = {"scene": scene}
    if page is not None:
        body["page"] = page
    if check_path is not None:
        body["check_path"] = check_path
    image = await client.call("POST", "/wxa/getwxacodeunlimit", json=body, raw=True)
    if not isinstance(image, bytes):
        raise WeChatError("no image")
    return image
