"""Emulated access-token, QR-code, message and mini-program endpoints of api.weixin.qq.com."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import secrets
from typing import Any

import segno
from sanic import HTTPResponse

from wechat.emulator.state import EmulatorState
from wechat.emulator.wire import Api, Call, wx_error, wx_json, wx_ok

QR_TEMPORARY = ("QR_SCENE", "QR_STR_SCENE")
QR_MAX_EXPIRE = 2_592_000
_SCENE_CHARS = re.compile(r"^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]{1,32}$")


def png_of(content: str) -> bytes:
    """Return a PNG QR code that encodes content."""
    buffer = io.BytesIO()
    segno.make_qr(content, error="m").save(buffer, kind="png", scale=5, border=2)
    return buffer.getvalue()


def qr_url(ticket: str) -> str:
    """Return the weixin.qq.com/q/... URL a ticket's QR code encodes."""
    digest = hashlib.sha256(ticket.encode()).digest()[:16]
    return "http://weixin.qq.com/q/" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def mint_qr_ticket(state: EmulatorState, appid: str, *, action: str, scene: str, expire_seconds: int = 0) -> str:
    """Return a ticket for a parametric QR code (expire_seconds 0 = permanent)."""
    expires_at = int(state.clock()) + expire_seconds if expire_seconds else 0
    return state.mint(appid, "qr-ticket", {"t": action, "s": scene, "e": expires_at, "n": secrets.token_hex(4)})


def check_secret(state: EmulatorState, appid: str, secret: str) -> HTTPResponse | None:
    """Return WeChat's error for an unknown appid or a wrong secret, else None."""
    if not appid:
        return wx_error(41002)
    account = state.apps.get(appid)
    if account is None:
        return wx_error(40013)
    if not secret:
        return wx_error(41004)
    if not hmac.compare_digest(account.secret.encode(), secret.encode()):
        return wx_error(40125)
    return None


def _scene_value(action: str, scene: dict[str, Any]) -> str | None:
    """Return the scene as text, or None when it does not fit the action."""
    if action in ("QR_SCENE", "QR_LIMIT_SCENE"):
        scene_id = scene.get("scene_id")
        upper = 100_000 if action == "QR_LIMIT_SCENE" else 2**32 - 1
        valid = isinstance(scene_id, int) and not isinstance(scene_id, bool) and 1 <= scene_id <= upper
        return str(scene_id) if valid else None
    scene_str = scene.get("scene_str")
    return scene_str if isinstance(scene_str, str) and 1 <= len(scene_str) <= 64 else None


def _check_template_data(data: Any) -> HTTPResponse | None:
    """Return 47003 unless data is {"key": {"value": ...}, ...}."""
    if not isinstance(data, dict) or not data:
        return wx_error(47003, "argument invalid! data is empty")
    for key, item in data.items():
        if not isinstance(item, dict) or "value" not in item:
            return wx_error(47003, f"argument invalid! data.{key}.value is empty")
    return None


def _check_message(call: Call) -> HTTPResponse | None:
    """Return WeChat's error for a template/subscribe message missing touser, template_id or data."""
    touser, template_id = call.body.get("touser"), call.body.get("template_id")
    if not isinstance(touser, str) or not touser:
        return wx_error(40003, "invalid openid")
    if not isinstance(template_id, str) or not template_id:
        return wx_error(40037, "invalid template_id")
    return _check_template_data(call.body.get("data"))


def register(api: Api) -> None:
    """Add the access-token, QR-code, message and mini-program endpoints."""

    @api.route("/cgi-bin/token", "GET", kind="none", auth="none")
    async def token(call: Call) -> HTTPResponse:
        if call.arg("grant_type") != "client_credential":
            return wx_error(40002)
        denied = check_secret(call.state, call.arg("appid"), call.arg("secret"))
        if denied is not None:
            return denied
        access_token, expires_in = call.state.issue_token(call.arg("appid"), "token")
        return wx_json({"access_token": access_token, "expires_in": expires_in})

    @api.route("/cgi-bin/stable_token", auth="none")
    async def stable_token(call: Call) -> HTTPResponse:
        if call.body.get("grant_type") != "client_credential":
            return wx_error(40002)
        appid, secret = str(call.body.get("appid") or ""), str(call.body.get("secret") or "")
        denied = check_secret(call.state, appid, secret)
        if denied is not None:
            return denied
        access_token, expires_in = call.state.stable_token(appid, force_refresh=call.body.get("force_refresh") is True)
        return wx_json({"access_token": access_token, "expires_in": expires_in})

    @api.route("/cgi-bin/qrcode/create")
    async def qrcode_create(call: Call) -> HTTPResponse:
        action = call.body.get("action_name")
        action_info = call.body.get("action_info")
        scene = action_info.get("scene") if isinstance(action_info, dict) else None
        if action not in ("QR_SCENE", "QR_STR_SCENE", "QR_LIMIT_SCENE", "QR_LIMIT_STR_SCENE") or not isinstance(
            scene, dict
        ):
            return wx_error(40053, "invalid action info")
        value = _scene_value(action, scene)
        if value is None:
            return wx_error(40053, "invalid action info, scene_id or scene_str out of range")
        expire = 0
        if action in QR_TEMPORARY:
            requested = call.body.get("expire_seconds", 60)
            if not isinstance(requested, int) or requested < 1:
                return wx_error(40009, "invalid expire_seconds")
            expire = min(requested, QR_MAX_EXPIRE)
        ticket = mint_qr_ticket(call.state, call.appid, action=action, scene=value, expire_seconds=expire)
        reply: dict[str, Any] = {"ticket": ticket, "url": qr_url(ticket)}
        if expire:
            reply["expire_seconds"] = expire
        return wx_json(reply)

    @api.route("/cgi-bin/showqrcode", "GET", kind="none", auth="none")
    async def showqrcode(call: Call) -> HTTPResponse:
        ticket = call.arg("ticket")
        payload = call.state.open("qr-ticket", ticket) or call.state.open("card-ticket", ticket)
        if payload is None or (payload.get("e") and payload["e"] < call.state.clock()):
            return HTTPResponse(b"invalid or expired ticket", status=404, content_type="text/plain")
        return HTTPResponse(png_of(qr_url(ticket)), content_type="image/png")

    @api.route("/cgi-bin/message/template/send")
    async def template_send(call: Call) -> HTTPResponse:
        invalid = _check_message(call)
        if invalid is not None:
            return invalid
        msgid = secrets.randbelow(2**53)
        call.state.messages.append({"kind": "template", "appid": call.appid, "msgid": msgid, **call.body})
        return wx_ok(msgid=msgid)

    @api.route("/cgi-bin/message/subscribe/send")
    async def subscribe_send(call: Call) -> HTTPResponse:
        invalid = _check_message(call)
        if invalid is not None:
            return invalid
        if call.body.get("miniprogram_state", "formal") not in ("developer", "trial", "formal"):
            return wx_error(47003, "argument invalid! miniprogram_state")
        page = call.body.get("page")
        if page is not None and (not isinstance(page, str) or page.startswith("/")):
            return wx_error(41030, "invalid page")
        msgid = secrets.randbelow(2**53)
        call.state.messages.append({"kind": "subscribe", "appid": call.appid, "msgid": msgid, **call.body})
        return wx_ok(msgid=msgid)

    @api.route("/sns/jscode2session", "GET", kind="none", auth="none")
    async def jscode2session(call: Call) -> HTTPResponse:
        appid = call.arg("appid")
        denied = check_secret(call.state, appid, call.arg("secret"))
        if denied is not None:
            return denied
        if call.arg("grant_type") != "authorization_code":
            return wx_error(40002)
        code = call.arg("js_code")
        if not code:
            return wx_error(41008)
        payload = call.state.open("mp-code", code)
        if payload is None or payload["a"] != appid or payload["e"] < call.state.clock():
            return wx_error(40029)
        if code in call.state.used_mp_codes:
            return wx_error(40163)
        call.state.used_mp_codes.add(code)
        session_key = base64.b64encode(secrets.token_bytes(16)).decode()
        call.state.sessions[(appid, payload["o"])] = session_key
        reply = {"session_key": session_key, "openid": payload["o"]}
        if payload.get("u"):
            reply["unionid"] = payload["u"]
        return wx_json(reply)

    @api.route("/wxa/getwxacodeunlimit")
    async def getwxacodeunlimit(call: Call) -> HTTPResponse:
        scene, page = call.body.get("scene"), call.body.get("page", "")
        if not isinstance(scene, str) or not _SCENE_CHARS.match(scene):
            return wx_error(40169, "invalid length for scene, or the data is not json string")
        if not isinstance(page, str) or page.startswith("/"):
            return wx_error(41030, "invalid page")
        width = call.body.get("width", 430)
        if not isinstance(width, int) or not 280 <= width <= 1280:
            width = 430
        content = f"https://mp.weixin.qq.com/a/~{scene}" + (f"?page={page}" if page else "")
        return HTTPResponse(png_of(content), content_type="image/png")
