"""Emulated member-card endpoints (/card/...) of api.weixin.qq.com."""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any, cast
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sanic import HTTPResponse

from wechat.emulator.oa import qr_url
from wechat.emulator.state import EmulatorState, derive_key
from wechat.emulator.wire import Api, Call, wx_error, wx_ok

MEMBER_CARD_REQUIRED = ("supply_bonus", "supply_balance", "prerogative")
_INT_FIELDS = ("bonus", "add_bonus", "balance", "add_balance")
_INIT_INT_FIELDS = ("init_bonus", "init_balance")


def encrypt_card_code(state: EmulatorState, appid: str, code: str) -> str:
    """Return the encrypt_code WeChat would put in a card jump URL for code."""
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(derive_key(state.apps[appid].secret, "card-code")).encrypt(nonce, code.encode(), None)
    return base64.b64encode(nonce + sealed).decode("ascii")


def decrypt_card_code(state: EmulatorState, appid: str, encrypt_code: str) -> str | None:
    """Return the code inside an encrypt_code this emulator produced for appid, else None."""
    try:
        raw = base64.b64decode(encrypt_code, validate=True)
        plain = AESGCM(derive_key(state.apps[appid].secret, "card-code")).decrypt(raw[:12], raw[12:], None)
    except (binascii.Error, ValueError, InvalidTag):
        return None
    return plain.decode("utf-8", "replace")


def member_record(state: EmulatorState, card_id: str, code: str, openid: str = "") -> dict[str, Any]:
    """Return (creating if needed) the emulator's record of one member card code."""
    record = state.members.setdefault(
        (card_id, code),
        {
            "card_id": card_id,
            "code": code,
            "openid": openid,
            "activated": False,
            "bonus": 0,
            "balance": 0,
            "membership_number": "",
            "status": "NORMAL",
            "user_info": {"common_field_list": [], "custom_field_list": []},
        },
    )
    if openid and not record["openid"]:
        record["openid"] = openid
    return record


def _missing(body: dict[str, Any], *names: str) -> str | None:
    """Return the first required field that is absent or empty."""
    return next((name for name in names if body.get(name) in (None, "")), None)


def _ints_error(body: dict[str, Any], names: tuple[str, ...]) -> HTTPResponse | None:
    """Return 47001 when one of the named fields is present but not an integer."""
    if any(not isinstance(body.get(n, 0), int) or isinstance(body.get(n), bool) for n in names):
        return wx_error(47001, f"data format error: {', '.join(names)} must be integers")
    return None


def _card_error(call: Call, card_id: Any) -> HTTPResponse | None:
    """Return 40073 unless card_id is a card of the calling account."""
    if not isinstance(card_id, str) or not call.state.card_known(call.appid, card_id):
        return wx_error(40073, "invalid card id")
    call.state.cards.setdefault(card_id, {"appid": call.appid, "card_type": "MEMBER_CARD", "card": {}})
    return None


def register(api: Api) -> None:
    """Add the /card endpoints."""

    @api.route("/card/create")
    async def card_create(call: Call) -> HTTPResponse:
        card = call.body.get("card")
        card_type = card.get("card_type") if isinstance(card, dict) else None
        detail = card.get(card_type.lower()) if isinstance(card_type, str) and isinstance(card, dict) else None
        if not isinstance(detail, dict):
            return wx_error(47001, "data format error: card.card_type and its object are required")
        if not isinstance(detail.get("base_info"), dict):
            return wx_error(41011, "missing required fields base_info")
        if card_type == "MEMBER_CARD":
            missing = _missing(detail, *MEMBER_CARD_REQUIRED)
            if missing:
                return wx_error(41011, f"missing required fields m_data.has_{missing}")
        card_id = call.state.mint_card_id(call.appid)
        call.state.cards[card_id] = {
            "appid": call.appid,
            "card_type": card_type,
            "card": detail,
            "status": "CARD_STATUS_NOT_VERIFY",
        }
        return wx_ok(card_id=card_id)

    @api.route("/card/update")
    async def card_update(call: Call) -> HTTPResponse:
        card_id = call.body.get("card_id")
        invalid = _card_error(call, card_id)
        if invalid is not None:
            return invalid
        stored = call.state.cards[cast(str, card_id)]["card"]  # _card_error rejected a missing card_id
        for key, value in call.body.items():
            if key != "card_id" and isinstance(value, dict):
                for field, item in value.items():
                    if isinstance(item, dict) and isinstance(stored.get(field), dict):
                        stored[field] = {**stored[field], **item}
                    else:
                        stored[field] = item
        return wx_ok(send_check=False)

    @api.route("/card/qrcode/create")
    async def card_qrcode_create(call: Call) -> HTTPResponse:
        action_info = call.body.get("action_info")
        card = action_info.get("card") if isinstance(action_info, dict) else None
        if call.body.get("action_name") != "QR_CARD" or not isinstance(card, dict):
            return wx_error(40053, "invalid action info, only QR_CARD is emulated")
        invalid = _card_error(call, card.get("card_id"))
        if invalid is not None:
            return invalid
        expire = call.body.get("expire_seconds")
        expire = min(max(expire, 60), 1800) if isinstance(expire, int) and not isinstance(expire, bool) else 0
        payload = {
            "c": card["card_id"],
            "o": str(card.get("outer_str") or ""),
            "e": int(call.state.clock()) + expire if expire else 0,
            "n": secrets.token_hex(4),
        }
        ticket = call.state.mint(call.appid, "card-ticket", payload)
        base = f"{call.request.scheme}://{call.request.host}{call.request.path[: -len(call.path)]}"
        return wx_ok(
            ticket=ticket,
            expire_seconds=expire or 365 * 86400,
            url=qr_url(ticket),
            show_qrcode_url=f"{base}/cgi-bin/showqrcode?ticket={quote(ticket)}",
        )

    @api.route("/card/code/decrypt")
    async def code_decrypt(call: Call) -> HTTPResponse:
        encrypt_code = call.body.get("encrypt_code")
        code = decrypt_card_code(call.state, call.appid, encrypt_code) if isinstance(encrypt_code, str) else None
        if code is None:
            return wx_error(40056, "invalid serial code")
        return wx_ok(code=code)

    @api.route("/card/membercard/activate")
    async def membercard_activate(call: Call) -> HTTPResponse:
        missing = _missing(call.body, "membership_number", "code")
        if missing:
            return wx_error(41011, f"missing required fields {missing}")
        invalid_int = _ints_error(call.body, _INIT_INT_FIELDS)
        if invalid_int is not None:
            return invalid_int
        card_id = call.body.get("card_id") or next(
            (c for c, code in call.state.members if code == call.body["code"]), None
        )
        invalid = _card_error(call, card_id)
        if invalid is not None:
            return invalid
        record = member_record(call.state, cast(str, card_id), str(call.body["code"]))  # _card_error checked it
        record.update(activated=True, membership_number=str(call.body["membership_number"]))
        record["bonus"] = call.body.get("init_bonus", record["bonus"])
        record["balance"] = call.body.get("init_balance", record["balance"])
        for index in (1, 2, 3):
            if f"init_custom_field_value{index}" in call.body:
                record[f"custom_field_value{index}"] = call.body[f"init_custom_field_value{index}"]
        return wx_ok()

    @api.route("/card/membercard/activateuserform/set")
    async def activateuserform_set(call: Call) -> HTTPResponse:
        invalid = _card_error(call, call.body.get("card_id"))
        if invalid is not None:
            return invalid
        call.state.user_forms[call.body["card_id"]] = {k: v for k, v in call.body.items() if k != "card_id"}
        return wx_ok()

    @api.route("/card/membercard/activatetempinfo/get")
    async def activatetempinfo_get(call: Call) -> HTTPResponse:
        info = call.state.activate_infos.get(str(call.body.get("activate_ticket") or ""))
        if info is None or info["appid"] != call.appid:
            return wx_error(40097, "invalid args, activate_ticket")
        return wx_ok(info=info["info"])

    @api.route("/card/membercard/updateuser")
    async def membercard_updateuser(call: Call) -> HTTPResponse:
        missing = _missing(call.body, "code", "card_id")
        if missing:
            return wx_error(41011, f"missing required fields {missing}")
        invalid = _card_error(call, call.body["card_id"])
        if invalid is not None:
            return invalid
        invalid = _ints_error(call.body, _INT_FIELDS)
        if invalid is not None:
            return invalid
        record = member_record(call.state, call.body["card_id"], str(call.body["code"]))
        for kind in ("bonus", "balance"):
            if kind in call.body:
                record[kind] = call.body[kind]
            record[kind] += call.body.get(f"add_{kind}", 0)
        for key in ("custom_field_value1", "custom_field_value2", "custom_field_value3", "background_pic_url"):
            if key in call.body:
                record[key] = call.body[key]
        return wx_ok(result_bonus=record["bonus"], result_balance=record["balance"], openid=record["openid"])

    @api.route("/card/membercard/userinfo/get")
    async def membercard_userinfo_get(call: Call) -> HTTPResponse:
        record = call.state.members.get((str(call.body.get("card_id")), str(call.body.get("code"))))
        if record is None:
            return wx_error(40056, "invalid serial code")
        return wx_ok(
            openid=record["openid"],
            nickname="",
            membership_number=record["membership_number"],
            bonus=record["bonus"],
            balance=record["balance"],
            sex="UNKNOWN",
            user_info=record["user_info"],
            user_card_status=record["status"],
        )
