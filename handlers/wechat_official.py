"""Official-account callback: URL check, pushes in the account's message mode, replay memory, exactly-once dispatch.

WeChat's three message modes (set per account on mp.weixin.qq.com, mirrored in WechatAccount.message_mode):
plaintext (明文) pushes the XML as it is; compatible (兼容) pushes the plaintext fields AND <Encrypt>, with
encrypt_type=aes&msg_signature=... in the URL; safe (安全) pushes <Encrypt> only. The URL signature covers
(token, timestamp, nonce), never the body: only msg_signature (over <Encrypt>) proves the content. So an account in
compatible or safe mode takes nothing but a push with a valid msg_signature, and in compatible mode the decrypted
copy is used, never the plaintext one. A signature is accepted once within MAX_CLOCK_SKEW (_remember_signature).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time

from pydantic import Field
from redis.exceptions import RedisError
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


def _encrypted(request: Request, outer: dict[str, str]) -> bool:
    """Whether the push is encrypted as WeChat sends it in compatible/safe mode: flag, msg_signature, <Encrypt>."""
    args = request.args
    return args.get("encrypt_type") == "aes" and bool(args.get("msg_signature")) and bool(outer.get("Encrypt"))


async def _remember_signature(request: Request, appid: str, signature: str) -> None:
    """Accept a (timestamp, nonce, signature) once within MAX_CLOCK_SKEW; the same one again is a replay.

    `signature` is what covers the content used: msg_signature for an encrypted push, the URL signature for a
    plaintext one. A replay with a byte-identical body goes on to the MsgId / event dedupe, which answers the
    first reply and changes nothing (WeChat's retries of a slow answer are told apart by that dedupe whatever
    their query string); a replay with another body is refused: in plaintext mode it is the attack of a genuine
    signed query string carrying a forged push.
    Redis unreachable: the push goes on unremembered (logged). Lost meanwhile: in plaintext mode a replayed query
    string with a forged body is accepted within MAX_CLOCK_SKEW (the DB dedupe stops only a repeated MsgId /
    FromUserName + CreateTime + Event); compatible and safe mode lose nothing, msg_signature covers the body.
    """
    args, ctx = request.args, request.app.ctx
    digest = hashlib.sha256(request.body).hexdigest()
    key = ctx.keys("oa-signature", "{" + appid + "}", args.get("timestamp", ""), args.get("nonce", ""), signature)
    try:
        if await ctx.redis.set(key, digest, nx=True, ex=2 * MAX_CLOCK_SKEW):
            return
        first = await ctx.redis.get(key)
    except (RedisError, OSError) as exc:
        log.warning("signature memory unavailable (%s): push for %s checked by the DB dedupe only", exc, appid)
        return
    if first is not None and first != digest:
        raise Forbidden("this signature was already used for another push", code="wechat.push_replayed")


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
    description="In the account's message mode: plaintext (URL signature), compatible or safe (AES, "
    "`encrypt_type=aes` + `msg_signature`; a plaintext push to such an account is 403 `wechat.plaintext_refused`). "
    "A signature is accepted once: the same query string with another body is 403 `wechat.push_replayed`. "
    "Answers `success` or a passive reply (encrypted for an encrypted push); redelivered pushes "
    "(same MsgId, or FromUserName + CreateTime + Event) change nothing.",
)
async def receive_push(request: Request, appid: str | None = None):
    account = await find_wechat_account(kind="official", key=appid)
    if account is None:
        log.warning("push for unknown official account %s acknowledged and dropped", appid)
        return text("success")
    account_secrets = account.secrets()
    _check_signature(request, account_secrets["token"])
    mode = account.message_mode_of(account_secrets)
    crypto: OACrypto | None = None
    try:
        outer = parse_xml(request.body)
        if mode != "plaintext" and not _encrypted(request, outer):
            raise Forbidden(
                f"the account is in {mode} mode: a push without encrypt_type=aes, msg_signature and Encrypt is refused",
                code="wechat.plaintext_refused",
            )
        if request.args.get("encrypt_type") == "aes":
            # plaintext mode with an EncodingAESKey: an encrypted push is proven by msg_signature, taken (a mode switch
            # on mp.weixin.qq.com reaches WeChat first); without the key it is refused
            crypto = _crypto(account.appid, account_secrets)
            message = parse_xml(
                crypto.decrypt(
                    encrypt=outer.get("Encrypt", ""),
                    msg_signature=request.args.get("msg_signature", ""),
                    timestamp=request.args.get("timestamp", ""),
                    nonce=request.args.get("nonce", ""),
                )
            )  # compatible mode: the plaintext copy next to <Encrypt> is never read
        else:
            message = outer
    except WeChatError as exc:
        raise Forbidden(f"push rejected: {exc}", code="wechat.push_invalid") from None
    if not message.get("MsgType") or not message.get("FromUserName"):
        raise Forbidden("push has no MsgType/FromUserName", code="wechat.push_invalid")
    signature = request.args.get("msg_signature" if crypto is not None else "signature", "")
    await _remember_signature(request, account.appid, signature)
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
