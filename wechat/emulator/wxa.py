"""Emulated mini-program phone-number endpoints, with controls that play the phone side (getPhoneNumber)."""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

from sanic import HTTPResponse
from sanic.request import Request

from wechat.crypto import wxa_encrypt
from wechat.emulator.control import ControlError, _body, _text, reply
from wechat.emulator.state import EmulatorState
from wechat.emulator.wire import Api, Call, wx_error, wx_ok

PHONE_CODE_TTL = 300
_PHONE = re.compile(r"^[0-9]{5,20}$")
_COUNTRY = re.compile(r"^[0-9]{1,4}$")


def phone_info(*, appid: str, phone: str, country_code: str, timestamp: int) -> dict[str, Any]:
    """The phone_info object WeChat returns (and encrypts for the legacy getPhoneNumber)."""
    full = phone if country_code == "86" else f"+{country_code}{phone}"
    return {
        "phoneNumber": full,
        "purePhoneNumber": phone,
        "countryCode": country_code,
        "watermark": {"timestamp": timestamp, "appid": appid},
    }


def _phone_fields(body: dict[str, Any]) -> tuple[str, str]:
    """Return (phone, country code) of a control body, or raise ControlError."""
    phone, country = _text(body, "phone"), str(body.get("country_code", "86"))
    if not _PHONE.match(phone) or not _COUNTRY.match(country):
        raise ControlError("phone must be 5-20 digits and country_code 1-4 digits")
    return phone, country


def _mp_appid(state: EmulatorState, body: dict[str, Any], request: Request) -> str:
    """Return the appid named in body, or the configured mini-program's."""
    appid = _text(body, "appid", request.app.ctx.settings.wechat.miniprogram.appid)
    if appid not in state.apps:
        raise ControlError(f"unknown appid {appid}", 404)
    return appid


def register(api: Api) -> None:
    """Add /wxa/business/getuserphonenumber and the phone controls."""
    state = api.state

    @api.route("/wxa/business/getuserphonenumber")
    async def getuserphonenumber(call: Call) -> HTTPResponse:
        code = call.body.get("code")
        if not isinstance(code, str) or not code:
            return wx_error(41008, "missing code")
        payload = call.state.open("phone-code", code)
        if payload is None or payload["a"] != call.appid or payload["e"] < call.state.clock():
            return wx_error(40029)
        # mp codes and phone codes are MAC'd for different purposes, so one set of used codes serves both
        if code in call.state.used_mp_codes:
            return wx_error(40029)
        call.state.used_mp_codes.add(code)
        info = phone_info(appid=call.appid, phone=payload["p"], country_code=payload["c"], timestamp=int(state.clock()))
        return wx_ok(phone_info=info)

    async def phone_code(request: Request) -> HTTPResponse:
        """Return a single-use getPhoneNumber code (valid 5 minutes) for a phone."""
        try:
            body = _body(request)
            appid = _mp_appid(state, body, request)
            phone, country = _phone_fields(body)
        except ControlError as error:
            return reply({"error": {"code": "emulator.bad_request", "message": error.message}}, error.status)
        payload = {"p": phone, "c": country, "e": int(state.clock()) + PHONE_CODE_TTL, "n": secrets.token_hex(4)}
        return reply({"code": state.mint(appid, "phone-code", payload)})

    async def phone_encrypt(request: Request) -> HTTPResponse:
        """Return legacy getPhoneNumber encryptedData/iv under the session_key last issued to openid.

        watermark_appid and timestamp override the watermark, to play a forged or stale payload.
        """
        try:
            body = _body(request)
            appid = _mp_appid(state, body, request)
            openid = _text(body, "openid")
            phone, country = _phone_fields(body)
            session_key = state.sessions.get((appid, openid))
            if session_key is None:
                raise ControlError(f"no session for {openid}: log in with an mp-code first", 404)
            timestamp = body.get("timestamp", int(state.clock()))
            if not isinstance(timestamp, int):
                raise ControlError("timestamp must be an integer (epoch seconds)")
        except ControlError as error:
            return reply({"error": {"code": "emulator.bad_request", "message": error.message}}, error.status)
        watermark_appid = str(body.get("watermark_appid") or appid)
        info = phone_info(appid=watermark_appid, phone=phone, country_code=country, timestamp=timestamp)
        iv = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
        return reply({"encrypted_data": wxa_encrypt(session_key=session_key, iv=iv, data=info), "iv": iv})

    api.bp.add_route(phone_code, "/control/phone-code", methods=["POST"], name="control_phone_code")
    api.bp.add_route(phone_encrypt, "/control/phone-encrypt", methods=["POST"], name="control_phone_encrypt")
