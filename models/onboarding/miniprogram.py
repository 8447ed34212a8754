"""Mini-program members: login through jscode2session, unionid merge, phone binding, self-service, member QR."""

from __future__ import annotations

import base64
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.cipher import cipher
from models.kernel.errors import Conflict, DomainError, NotFound, Unauthorized, Unprocessable, wechat_failure
from models.ledger.books import get_balances
from models.members import members
from models.members.member_card import MemberCard
from models.members.members import Member
from models.members.qr import sign_member_qr, verify_member_qr
from models.members.timeline import record
from models.tenancy.merchants import Store, WechatAccount, find_wechat_account
from models.tenancy.visibility import Scope
from models.tiers.standing import tier_name
from wechat import wxa
from wechat.crypto import wxa_decrypt
from wechat.errors import WeChatAPIError, WeChatCryptoError, WeChatError

if TYPE_CHECKING:
    from wechat.gateway import AppClient, WeChatGateway

DEFAULT_TIER_NAME = "普通会员"
WATERMARK_MAX_AGE = 86_400  # legacy encryptedData older (or newer) than this is refused as a replay


@dataclass(frozen=True)
class MpLogin:
    member: Member
    created: bool


@dataclass(frozen=True)
class MemberProfile:
    member: Member
    points: int
    balance: int
    tier_name: str
    store: Store | None


@dataclass(frozen=True)
class MyCard:
    card: MemberCard
    points: int
    balance: int
    tier_name: str


def session_context(member_id: int) -> str:
    return f"mp_session:{member_id}"


def mask_phone(phone: str | None) -> str | None:
    """138****0001: the first three and last four digits stay visible."""
    if not phone:
        return None
    if len(phone) <= 7:
        return phone[:1] + "*" * (len(phone) - 1)
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


async def _wechat(pending: Awaitable[Any], path: str, *, code_error: DomainError | None = None) -> Any:
    """Await a WeChat call; a bad/used code becomes code_error, other failures 502/503."""
    try:
        return await pending
    except WeChatAPIError as exc:
        if code_error is not None and exc.errcode in wxa.INVALID_CODE_ERRCODES:
            raise code_error from None
        raise wechat_failure(exc, action=path) from None
    except WeChatError as exc:
        raise wechat_failure(exc, action=path) from None


async def _mp_account(*, appid: str | None = None, merchant_id: int | None = None) -> WechatAccount:
    if merchant_id is not None:
        account = await WechatAccount.filter(merchant_id=merchant_id, kind="miniprogram").order_by("id").first()
    else:
        account = await find_wechat_account(kind="miniprogram", key=appid)
    if account is None:
        raise NotFound("no such mini-program", code="mp.app_not_found")
    return account


async def _client(gateway: WeChatGateway, account: WechatAccount) -> AppClient:
    try:
        return await gateway.miniprogram_client(account.appid)
    except WeChatError as exc:
        raise NotFound("no such mini-program", code="mp.app_not_found") from exc


async def login(
    *,
    gateway: WeChatGateway,
    code: str,
    appid: str | None = None,
    referral_code: str | None = None,
    store_code: str | None = None,
) -> MpLogin:
    """Exchange a wx.login code for the member behind it (registered on first contact, merged by unionid)."""
    account = await _mp_account(appid=appid)
    client = await _client(gateway, account)
    session: wxa.Session = await _wechat(
        wxa.code_to_session(client, js_code=code),
        "jscode2session",
        code_error=Unauthorized("login code is invalid or was used", code="mp.code_invalid"),
    )
    # a stale or unknown store code must not block the login: the member just gets no origin store
    store = await Store.get_or_none(merchant_id=account.merchant_id, code=store_code) if store_code else None
    member, created = await members.register_wechat_member(
        merchant_id=account.merchant_id,
        mp_openid=session.openid,
        unionid=session.unionid,
        origin_store_id=store.id if store else None,
        referral_code=referral_code,
        source="mp",
    )
    sealed = cipher().encrypt(session.session_key, context=session_context(member.id))
    await Member.filter(id=member.id).update(mp_session_key_enc=sealed)
    return MpLogin(member=member, created=created)


async def get_profile(*, merchant_id: int, member_id: int) -> MemberProfile:
    """The member's own view: profile, points, balance (fen), tier and origin store."""
    member = await members.get_member(scope=Scope(merchant_id=merchant_id), member_id=member_id)
    points, balance = await get_balances(member_id=member.id)
    store = await Store.get_or_none(id=member.origin_store_id) if member.origin_store_id else None
    return MemberProfile(
        member=member,
        points=points,
        balance=balance,
        tier_name=await tier_name(merchant_id=merchant_id, member_id=member.id),
        store=store,
    )


async def update_profile(*, merchant_id: int, member_id: int, changes: dict[str, Any]) -> MemberProfile:
    """The member changes their own name, gender, birthday or custom fields (never the phone)."""
    allowed = {"name", "gender", "birthday", "custom_fields"}
    if set(changes) - allowed:
        raise Unprocessable("only name, gender, birthday and custom_fields", code="validation.failed")
    member = await members.get_member(scope=Scope(merchant_id=merchant_id), member_id=member_id)
    await members.update_member(member=member, changes=changes, actor="member")
    return await get_profile(merchant_id=merchant_id, member_id=member_id)


async def _phone_by_code(gateway: WeChatGateway, account: WechatAccount, code: str) -> dict[str, Any]:
    client = await _client(gateway, account)
    info: dict[str, Any] = await _wechat(
        wxa.phone_info(client, code=code),
        "getuserphonenumber",
        code_error=Unprocessable("phone code is invalid or was used", code="mp.phone_code_invalid"),
    )
    return info


def _phone_by_encrypted_data(member: Member, account: WechatAccount, encrypted_data: str, iv: str) -> dict[str, Any]:
    if not member.mp_session_key_enc:
        raise Conflict("no mini-program session: log in again", code="mp.session_missing")
    session_key = cipher().decrypt(member.mp_session_key_enc, context=session_context(member.id))
    try:
        info = wxa_decrypt(session_key=session_key, encrypted_data=encrypted_data, iv=iv, appid=account.appid)
    except WeChatCryptoError:
        raise Unprocessable(
            "encrypted_data does not decrypt under this session for this mini-program",
            code="mp.encrypted_data_invalid",
        ) from None
    timestamp = info["watermark"].get("timestamp")
    now = clock.now().timestamp()
    if not isinstance(timestamp, int) or abs(now - timestamp) > WATERMARK_MAX_AGE:
        raise Unprocessable("encrypted_data is older than 24 hours", code="mp.encrypted_data_stale")
    return info


def _phone_of(info: dict[str, Any]) -> str:
    phone = wxa.phone_number(info)
    if not phone:
        raise Unprocessable("WeChat returned no phone number", code="mp.phone_missing")
    return phone


async def bind_phone(
    *,
    gateway: WeChatGateway,
    merchant_id: int,
    member_id: int,
    code: str | None = None,
    encrypted_data: str | None = None,
    iv: str | None = None,
) -> MemberProfile:
    """Set the member's phone from WeChat's getPhoneNumber (code exchange, or legacy encryptedData/iv)."""
    member = await members.get_member(scope=Scope(merchant_id=merchant_id), member_id=member_id)
    account = await _mp_account(merchant_id=merchant_id)
    if code is not None:
        info, method = await _phone_by_code(gateway, account, code), "code"
    elif encrypted_data is not None and iv is not None:
        info, method = _phone_by_encrypted_data(member, account, encrypted_data, iv), "encrypted_data"
    else:
        raise Unprocessable("give code, or encrypted_data and iv", code="validation.failed")
    phone = _phone_of(info)
    if phone != member.phone:
        async with in_transaction():
            await members.update_member(member=member, changes={"phone": phone}, actor="member")
            await record(
                merchant_id=merchant_id,
                member_id=member_id,
                kind="phone_bound",
                actor="member",
                detail={"method": method, "phone": mask_phone(phone)},
            )
    return await get_profile(merchant_id=merchant_id, member_id=member_id)


async def get_card(*, merchant_id: int, member_id: int) -> MyCard:
    """The member's card in the WeChat card wallet (latest not removed) with points, balance and tier."""
    profile = await get_profile(merchant_id=merchant_id, member_id=member_id)
    card = (
        await MemberCard.filter(merchant_id=merchant_id, member_id=member_id)
        .exclude(status="removed")
        .order_by("-id")
        .first()
    )
    if card is None:
        raise NotFound("no member card claimed yet", code="card.not_claimed")
    return MyCard(card=card, points=profile.points, balance=profile.balance, tier_name=profile.tier_name)


async def member_qr(*, secret: str, merchant_id: int, member_id: int) -> tuple[str, int]:
    """A fresh short-lived signed token for the member's dynamic QR/barcode; returns (token, expires_in)."""
    await members.ensure_visible(scope=Scope(merchant_id=merchant_id), member_id=member_id)
    return sign_member_qr(secret=secret, member_id=member_id, merchant_id=merchant_id)


async def resolve_member_qr(*, secret: str, token: str, scope: Scope) -> Member:
    """The member behind a scanned QR token; another merchant's or another store's member is not found."""
    token_merchant_id, member_id = verify_member_qr(token, secret=secret)
    if token_merchant_id != scope.merchant_id:
        raise NotFound("member not found", code="member.not_found")
    return await members.get_member(scope=scope, member_id=member_id)


async def referral_qr(*, gateway: WeChatGateway, merchant_id: int, member_id: int) -> tuple[str, str]:
    """The member's referral code and a mini-program code (PNG, base64) whose scene carries it."""
    member = await members.get_member(scope=Scope(merchant_id=merchant_id), member_id=member_id)
    referral_code = member.referral_code or await _assign_referral_code(member)
    client = await _client(gateway, await _mp_account(merchant_id=merchant_id))
    image: bytes = await _wechat(wxa.wxacode_unlimited(client, scene=f"ref:{referral_code}"), "getwxacodeunlimit")
    return referral_code, base64.b64encode(image).decode("ascii")


async def _assign_referral_code(member: Member) -> str:
    # members created before referral codes existed get one on first use; the unique key settles races
    for _ in range(5):
        candidate = members.new_referral_code()
        try:
            await Member.filter(id=member.id, referral_code=None).update(referral_code=candidate)
        except IntegrityError:  # another member holds this code: try another
            continue
        current = await Member.filter(id=member.id).values_list("referral_code", flat=True)
        if current and current[0]:
            return str(current[0])
    raise Conflict("could not assign a referral code", code="member.referral_code_unavailable")
