"""Official-account callback: URL check, plaintext and safe-mode pushes, exactly-once dispatch."""

from __future__ import annotations

import logging
import secrets
import time

from pydantic import Field
from sanic import Blueprint, text
from sanic.request import Request

from models.kernel import clock, inbound
from models.kernel.errors import Forbidden, NotFound
from models.kernel.inbound import InboundEvent, list_events
from models.tenancy.merchants import find_wechat_account
from server import wiring
from server.api import Out, Schema, endpoint, ok
from server.auth import ADMINS
from wechat.crypto import OACrypto, check_oa_signature
from wechat.errors import WeChatError
from wechat.xmlutil import parse_xml, to_xml

log = logging.getLogger("huiyuan.wechat.callback")
bp = Blueprint("wechat_official")
MAX_CLOCK_SKEW = 300  # seconds; older signed pushes are treated as replays


def _check_signature(request: Request, token: str) -> None:
    args = request.args
    signature, timestamp, nonce = args.get("signature", ""), args.get("timestamp", ""), args.get("nonce", "")
    if not (signature and timestamp and nonce) or not check_oa_signature(
        token=token, signature=signature, timestamp=timestamp, nonce=nonce
    ):
        raise Forbidden("signature does not match", code="wechat.signature_invalid")
    if not timestamp.isdigit() or abs(clock.now().timestamp() - int(timestamp)) > MAX_CLOCK_SKEW:
        raise Forbidden("timestamp is stale", code="wechat.timestamp_stale")


def _crypto(appid: str, account_secrets: dict[str, str]) -> OACrypto:
    """The AES crypto of a safe-mode push; an account without an EncodingAESKey (plaintext mode) cannot take one."""
    key = account_secrets.get("encoding_aes_key") or ""
    if len(key) != 43:
        raise Forbidden("the account has no EncodingAESKey: encrypted pushes are refused", code="wechat.push_invalid")
    return OACrypto(token=account_secrets["token"], encoding_aes_key=key, appid=appid)


@bp.get("/wechat/official")
@bp.get("/wechat/official/<appid:str>", name="official_verify_appid")
@endpoint(
    summary="Official-account URL verification",
    tag="wechat callbacks",
    content_type="text/plain",
    errors=(403, 404),
    description="Echoes `echostr` only when `signature` matches the account token.",
)
async def verify_url(request: Request, appid: str | None = None):
    account = await find_wechat_account(kind="official", key=appid)
    if account is None:
        raise NotFound("unknown official account", code="wechat.account_unknown")
    _check_signature(request, account.secrets()["token"])
    return text(request.args.get("echostr", ""))


@bp.post("/wechat/official")
@bp.post("/wechat/official/<appid:str>", name="official_push_appid")
@endpoint(
    summary="Official-account push (events and messages)",
    tag="wechat callbacks",
    content_type="text/plain, application/xml",
    errors=(400, 403),
    description="Plaintext or safe mode (AES). Answers `success` or a passive reply; redelivered pushes "
    "(same MsgId, or FromUserName + CreateTime + Event) change nothing.",
)
async def receive_push(request: Request, appid: str | None = None):
    account = await find_wechat_account(kind="official", key=appid)
    if account is None:
        log.warning("push for unknown official account %s acknowledged and dropped", appid)
        return text("success")
    account_secrets = account.secrets()
    _check_signature(request, account_secrets["token"])
    safe_mode = request.args.get("encrypt_type") == "aes"
    crypto = _crypto(account.appid, account_secrets) if safe_mode else None
    try:
        outer = parse_xml(request.body)
        if crypto is not None:
            message = parse_xml(
                crypto.decrypt(
                    encrypt=outer.get("Encrypt", ""),
                    msg_signature=request.args.get("msg_signature", ""),
                    timestamp=request.args.get("timestamp", ""),
                    nonce=request.args.get("nonce", ""),
                )
            )
        else:
            message = outer
    except WeChatError as exc:
        raise Forbidden(f"push rejected: {exc}", code="wechat.push_invalid") from None
    if not message.get("MsgType") or not message.get("FromUserName"):
        raise Forbidden("push has no MsgType/FromUserName", code="wechat.push_invalid")
    reply, fresh = await inbound.receive_push(
        merchant_id=account.merchant_id, appid=account.appid, message=message, dispatch=wiring.dispatch_oa_event
    )
    if not fresh:
        log.info("duplicate push %s from %s answered again", message.get("Event") or message.get("MsgType"), appid)
    if reply is None:
        return text("success")
    reply_xml = to_xml(
        {
            "ToUserName": message["FromUserName"],
            "FromUserName": message.get("ToUserName", ""),
            "CreateTime": int(time.time()),
            **reply,
        }
    )
    if crypto is not None:
        reply_xml = crypto.encrypt_reply(reply_xml, nonce=secrets.token_hex(8), timestamp=str(int(time.time())))
    return text(reply_xml, content_type="application/xml")


class EventOut(Out):
    id: int
    appid: str
    msg_type: str
    event: str
    openid: str
    payload: dict


class EventQuery(Schema):
    limit: int = Field(50, ge=1, le=200)


class EventList(Out):
    items: list[EventOut]


@bp.get("/api/wechat/events")
@endpoint(
    summary="Recent official-account pushes received",
    tag="wechat",
    roles=ADMINS,
    query=EventQuery,
    response=EventList,
    description="One row per distinct push; redeliveries are not repeated here.",
)
async def recent_events(request: Request, query: EventQuery):
    rows: list[InboundEvent] = await list_events(merchant_id=request.ctx.principal.merchant_id, limit=query.limit)
    return ok(EventList(items=[EventOut.model_validate(r) for r in rows]))
