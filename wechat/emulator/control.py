"""Control endpoints (/control/...): accounts, faults, recorded calls, and callbacks fired into the server."""

from __future__ import annotations

import json
import secrets
from typing import Any

from sanic import Blueprint, HTTPResponse
from sanic.request import Request

from wechat.emulator.callbacks import (
    OA_MODES,
    callback_url,
    deliver,
    event_xml,
    oa_request,
    pay_notify_request,
    read_reply,
    refund_notify_request,
)
from wechat.emulator.card import encrypt_card_code, member_record
from wechat.emulator.oa import mint_qr_ticket
from wechat.emulator.pay import PayRuleError, mark_paid
from wechat.emulator.state import AppAccount, EmulatorState, Fault, MerchantAccount, new_digits
from wechat.emulator.wire import dump_json, strip_mount

MAX_REPEAT = 50


class ControlError(Exception):
    """A control request cannot be served; becomes {"error": {"code", "message"}}."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def reply(data: dict[str, Any], status: int = 200) -> HTTPResponse:
    """Answer a control call with JSON."""
    return HTTPResponse(dump_json(data), status=status, content_type="application/json")


def _body(request: Request) -> dict[str, Any]:
    """Return the JSON object body (empty when there is none)."""
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except ValueError as exc:
        raise ControlError("body is not JSON") from exc
    if not isinstance(data, dict):
        raise ControlError("body must be a JSON object")
    return data


def _text(body: dict[str, Any], name: str, default: str | None = None) -> str:
    """Return a required (or defaulted) non-empty string field."""
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise ControlError(f"{name} is required (non-empty string)")
    return value


def _mode(body: dict[str, Any], name: str, default: str) -> str:
    """Return a message mode field (plaintext, compatible or safe), or default when absent."""
    value = body.get(name) or default
    if value and value not in OA_MODES:
        raise ControlError(f"{name} must be one of {', '.join(OA_MODES)}")
    return value


def _repeat(body: dict[str, Any]) -> int:
    """Return how many times to deliver (1..MAX_REPEAT)."""
    repeat = body.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= MAX_REPEAT:
        raise ControlError(f"repeat must be an integer 1..{MAX_REPEAT}")
    return repeat


class Control:
    """The control endpoints of one emulator blueprint."""

    def __init__(self, state: EmulatorState, *, official_appid: str, miniprogram_appid: str, mount: str) -> None:
        """Remember the defaults the shorthand endpoints use."""
        self.state = state
        self.official_appid = official_appid
        self.miniprogram_appid = miniprogram_appid
        self.mount = mount

    def app(self, body: dict[str, Any], default: str) -> AppAccount:
        """Return the account named by body's appid (or the default)."""
        appid = _text(body, "appid", default)
        account = self.state.apps.get(appid)
        if account is None:
            raise ControlError(f"unknown appid {appid}; register it with POST {self.mount}/control/accounts", 404)
        return account

    async def accounts(self, body: dict[str, Any]) -> dict[str, Any]:
        """Register an app account and/or a merchant at run time."""
        added: list[str] = []
        if body.get("appid"):
            self.state.add_app(
                AppAccount(
                    appid=_text(body, "appid"),
                    secret=_text(body, "secret"),
                    token=str(body.get("token", "")),
                    original_id=str(body.get("original_id", "")),
                    encoding_aes_key=str(body.get("encoding_aes_key", "")),
                    message_mode=_mode(body, "message_mode", ""),
                )
            )
            added.append(body["appid"])
        if body.get("mch_id"):
            self.state.add_merchant(
                MerchantAccount(
                    mch_id=_text(body, "mch_id"),
                    api_key=_text(body, "api_key"),
                    api_v3_key=str(body.get("api_v3_key", "")),
                    merchant_public_key=str(body.get("merchant_public_key", "")),
                    verify_v3_signature=body.get("verify_v3_signature", True) is not False,
                )
            )
            added.append(body["mch_id"])
        if not added:
            raise ControlError("give appid+secret (and token, encoding_aes_key) and/or mch_id+api_key (+api_v3_key)")
        return {"registered": added}

    async def expire_tokens(self, body: dict[str, Any]) -> dict[str, Any]:
        """Invalidate every token of appid issued before now (40001 afterwards)."""
        account = self.app(body, self.official_appid)
        self.state.expire_tokens(account.appid)
        return {"expired": account.appid}

    async def fail_next(self, body: dict[str, Any]) -> dict[str, Any]:
        """Make the next `times` calls to path answer errcode."""
        path = strip_mount(_text(body, "path"), self.mount)
        errcode, times, status = body.get("errcode", -1), body.get("times", 1), body.get("status")
        if not isinstance(errcode, int | str) or not isinstance(times, int) or times < 1:
            raise ControlError("errcode must be an int (or a pay err_code string) and times a positive integer")
        if status is not None and not isinstance(status, int):
            raise ControlError("status must be an HTTP status code")
        raw = body.get("raw")
        if raw is not None and not isinstance(raw, str):
            raise ControlError("raw must be the text of the answer")
        fault = Fault(
            errcode=errcode,
            errmsg=str(body.get("errmsg", "")),
            status=status,
            times=times,
            unsigned=body.get("unsigned") is True,
            raw=raw,
        )
        self.state.set_fault(path, fault)
        return {"path": path, "errcode": errcode, "times": times}

    async def card_encrypt_code(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return the encrypt_code WeChat would put in a card URL for (card_id, code)."""
        account = self.app(body, self.official_appid)
        code = _text(body, "code")
        member_record(self.state, _text(body, "card_id"), code, str(body.get("openid", "")))
        return {"encrypt_code": encrypt_card_code(self.state, account.appid, code)}

    async def card_member(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return the emulator's record of one member card (bonus, balance, custom_field_value1..3 as last sent)."""
        record = self.state.members.get((_text(body, "card_id"), _text(body, "code")))
        if record is None:
            raise ControlError("no such member card code", 404)
        return dict(record)

    async def mp_code(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return a single-use wx.login code for openid."""
        account = self.app(body, self.miniprogram_appid)
        return {"code": self.state.mint_mp_code(account.appid, _text(body, "openid"), str(body.get("unionid") or ""))}

    async def oa_event(self, body: dict[str, Any], request: Request) -> dict[str, Any]:
        """Push one OA event `repeat` times with the same CreateTime, in `mode` (default: the account's mode;
        the older `safe_mode: false` is plaintext, `safe_mode: true` safe)."""
        account = self.app(body, self.official_appid)
        openid, event = _text(body, "openid"), _text(body, "event")
        extra = body.get("extra") or {}
        if not isinstance(extra, dict):
            raise ControlError("extra must be an object of XML field: value")
        create_time = body.get("create_time") or int(self.state.clock())
        if not isinstance(create_time, int):
            raise ControlError("create_time must be an integer (epoch seconds)")
        event_key = body.get("event_key")
        result: dict[str, Any] = {"appid": account.appid, "event": event, "create_time": create_time}
        fields = {**extra, **self._card_side_effects(account, openid, event, body, extra, result)}
        legacy = {True: "safe", False: "plaintext"}.get(body["safe_mode"]) if "safe_mode" in body else None
        mode = _mode(body, "mode", legacy or account.mode)
        if mode != "plaintext" and len(account.encoding_aes_key) != 43:
            raise ControlError(
                f"{account.appid} has no 43-character encoding_aes_key: register one or pass mode plaintext"
            )
        try:
            xml = event_xml(
                account=account,
                openid=openid,
                event=event,
                create_time=create_time,
                event_key=None if event_key is None else str(event_key),
                fields=fields,
            )
        except (TypeError, ValueError) as exc:
            raise ControlError(f"cannot build the event XML: {exc}") from exc
        content, params = oa_request(account, xml, openid=openid, mode=mode)
        result["mode"] = mode
        wechat = request.app.ctx.wechat
        deliveries = await deliver(
            wechat.http,
            f"{wechat.self_url}/wechat/official/{account.appid}",
            content=content,
            params=params,
            headers={"Content-Type": "text/xml"},
            repeat=_repeat(body),
            concurrent=body.get("concurrent") is True,
        )
        for delivery in deliveries:
            delivery["reply"] = read_reply(account, delivery.get("body") or "")
        return {**result, "xml": xml, "deliveries": deliveries}

    def _card_side_effects(
        self,
        account: AppAccount,
        openid: str,
        event: str,
        body: dict[str, Any],
        extra: dict[str, Any],
        result: dict[str, Any],
    ) -> dict[str, Any]:
        """Fill card fields from shorthand keys and remember codes / activate info the event implies."""
        fields: dict[str, Any] = {}
        for short, xml_name in (("card_id", "CardId"), ("code", "UserCardCode"), ("outer_str", "OuterStr")):
            if body.get(short) and xml_name not in extra:
                fields[xml_name] = str(body[short])
        card_id = str(fields.get("CardId", extra.get("CardId", "")))
        if event == "user_get_card" and not (fields.get("UserCardCode") or extra.get("UserCardCode")):
            fields["UserCardCode"] = new_digits(12)
        code = str(fields.get("UserCardCode", extra.get("UserCardCode", "")))
        if card_id and code:
            record = member_record(self.state, card_id, code, openid)
            result.update(card_id=card_id, code=code)
            if event == "user_del_card":
                record["status"] = "DELETE"
        if event == "submit_membercard_user_info":
            ticket = str(body.get("activate_ticket") or secrets.token_urlsafe(24))
            info = body.get("info") or {"common_field_list": [], "custom_field_list": []}
            self.state.activate_infos[ticket] = {"appid": account.appid, "openid": openid, "info": info}
            if card_id and code:
                self.state.members[(card_id, code)]["user_info"] = info
            if "ActivateTicket" not in extra:
                fields["ActivateTicket"] = ticket  # what the activation page receives, carried on the event here
            result["activate_ticket"] = ticket
        return fields

    async def scan(self, body: dict[str, Any], request: Request) -> dict[str, Any]:
        """Shorthand: scanning a store QR code (subscribe + qrscene_store:S, or SCAN + store:S)."""
        account = self.app(body, self.official_appid)
        scene = f"store:{_text(body, 'store')}"
        ticket = mint_qr_ticket(self.state, account.appid, action="QR_LIMIT_STR_SCENE", scene=scene)
        subscribed = body.get("subscribed") is True
        event: dict[str, Any] = {
            **{
                k: body[k]
                for k in ("appid", "openid", "repeat", "concurrent", "safe_mode", "mode", "create_time")
                if k in body
            },
            "event": "SCAN" if subscribed else "subscribe",
            "event_key": scene if subscribed else f"qrscene_{scene}",
            "extra": {"Ticket": ticket},
        }
        return await self.oa_event(event, request)

    async def pay_success(self, body: dict[str, Any], request: Request) -> dict[str, Any]:
        """Mark an order paid and send its signed notify (v2 XML or v3 JSON) to the server."""
        order = self.state.find_order(_text(body, "out_trade_no"), body.get("mch_id"))
        if order is None:
            raise ControlError("no such order: create it with /pay/unifiedorder or /v3/pay/transactions/jsapi", 404)
        try:
            mark_paid(self.state, order)
        except PayRuleError as error:
            raise ControlError(f"{error.err_code}: {error.message}", 409) from error
        default_path, content, headers = pay_notify_request(self.state, order)
        wechat = request.app.ctx.wechat
        deliveries = []
        if body.get("deliver", True) is not False:  # "deliver": false: paid, but the notify is lost
            deliveries = await deliver(
                wechat.http,
                callback_url(wechat.self_url, order.notify_url, default_path),
                content=content,
                headers=headers,
                repeat=_repeat(body),
                concurrent=body.get("concurrent") is True,
            )
        return {
            "out_trade_no": order.out_trade_no,
            "transaction_id": order.transaction_id,
            "version": order.version,
            "deliveries": deliveries,
        }

    async def refund_success(self, body: dict[str, Any], request: Request) -> dict[str, Any]:
        """Mark a refund successful and send its notify (v2 req_info / v3 AEAD) to the server."""
        refund = self.state.find_refund(_text(body, "out_refund_no"), body.get("mch_id"))
        if refund is None:
            raise ControlError("no such refund: create it with /secapi/pay/refund or /v3/refund/domestic/refunds", 404)
        if refund.status != "SUCCESS":
            refund.status, refund.success_at = "SUCCESS", self.state.clock()
        default_path, content, headers = refund_notify_request(self.state, refund)
        order = self.state.find_order(refund.out_trade_no, refund.mch_id)
        wechat = request.app.ctx.wechat
        notify_url = refund.notify_url or (order.notify_url if order else "")
        deliveries = []
        if body.get("deliver", True) is not False:  # "deliver": false: refunded, but the notify is lost
            deliveries = await deliver(
                wechat.http,
                callback_url(wechat.self_url, notify_url, default_path),
                content=content,
                headers=headers,
                repeat=_repeat(body),
                concurrent=body.get("concurrent") is True,
            )
        return {"out_refund_no": refund.out_refund_no, "refund_id": refund.refund_id, "deliveries": deliveries}

    def register(self, bp: Blueprint) -> None:
        """Add the /control routes."""
        plain: dict[str, Any] = {
            "accounts": self.accounts,
            "expire-tokens": self.expire_tokens,
            "fail-next": self.fail_next,
            "card-encrypt-code": self.card_encrypt_code,
            "card-member": self.card_member,
            "mp-code": self.mp_code,
        }
        firing: dict[str, Any] = {
            "oa-event": self.oa_event,
            "scan": self.scan,
            "pay-success": self.pay_success,
            "refund-success": self.refund_success,
        }
        for name, action in plain.items():
            bp.add_route(
                self._wrap(action, False),
                f"/control/{name}",
                methods=["POST"],
                name=f"control_{name.replace('-', '_')}",
            )
        for name, action in firing.items():
            bp.add_route(
                self._wrap(action, True), f"/control/{name}", methods=["POST"], name=f"control_{name.replace('-', '_')}"
            )
        bp.add_route(self.list_calls, "/control/calls", methods=["GET"], name="control_calls")
        bp.add_route(self.clear_calls, "/control/calls", methods=["DELETE"], name="control_calls_clear")
        bp.add_route(self.reset, "/control/reset", methods=["POST"], name="control_reset")

    def _wrap(self, action: Any, needs_request: bool) -> Any:
        """Adapt an action to a Sanic handler that maps ControlError to the error envelope."""

        async def handler(request: Request) -> HTTPResponse:
            try:
                body = _body(request)
                result = await (action(body, request) if needs_request else action(body))
            except ControlError as error:
                return reply({"error": {"code": "emulator.bad_request", "message": error.message}}, error.status)
            return reply(result)

        return handler

    async def list_calls(self, request: Request) -> HTTPResponse:
        """Return recorded API calls under ?path= (a prefix)."""
        prefix = request.args.get("path") or ""
        return reply({"calls": self.state.calls_under(strip_mount(prefix, self.mount) if prefix else "")})

    async def clear_calls(self, request: Request) -> HTTPResponse:
        """Forget recorded calls."""
        self.state.calls.clear()
        return reply({"cleared": True})

    async def reset(self, request: Request) -> HTTPResponse:
        """Forget everything except the accounts."""
        self.state.reset()
        return reply({"reset": True})
