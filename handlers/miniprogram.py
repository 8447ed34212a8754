"""Mini-program login, phone binding and member self-service; the cashier's scan of a member QR."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import Field, model_validator
from sanic import Blueprint
from sanic.request import Request

from handlers.members import MemberOut, serialize
from models.onboarding import miniprogram
from server.api import Out, Schema, endpoint, ok
from server.auth import ALL_STAFF, MEMBER, MEMBER_QR_REFRESH, issue_member_token

bp = Blueprint("miniprogram")
MEMBER_ONLY = (MEMBER,)


class LoginIn(Schema):
    code: str = Field(min_length=1, max_length=512, description="The code from wx.login()")
    appid: str | None = Field(None, max_length=32, description="Mini-program appid; the default one when omitted")
    referral_code: str | None = Field(None, max_length=16, description="Referrer's code (scene ref:<code>)")
    store_code: str | None = Field(
        None, max_length=32, description="Store the member arrived through; unknown ones are ignored"
    )


class LoginOut(Out):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    member_id: int
    is_new: bool = Field(description="True when this login registered the member")


class StoreRef(Out):
    id: int
    code: str
    name: str


class MeOut(Out):
    member_id: int
    member_no: str | None
    name: str
    gender: str
    birthday: date | None
    phone: str | None = Field(description="Masked, e.g. 138****0001")
    custom_fields: dict[str, Any]
    points: int
    balance: int = Field(description="Stored value in fen")
    tier_name: str
    referral_code: str | None
    activated: bool
    store: StoreRef | None


class MePatch(Schema):
    name: str | None = Field(None, max_length=64)
    gender: Literal["unknown", "male", "female"] | None = None
    birthday: date | None = None
    custom_fields: dict[str, Any] | None = Field(None, description="Merged into the current values; null removes")


class PhoneIn(Schema):
    code: str | None = Field(None, min_length=1, max_length=512, description="getPhoneNumber code (new way)")
    encrypted_data: str | None = Field(None, min_length=1, max_length=4096, description="Legacy encryptedData")
    iv: str | None = Field(None, min_length=1, max_length=64, description="Legacy iv")

    @model_validator(mode="after")
    def one_way(self) -> PhoneIn:
        legacy = self.encrypted_data is not None and self.iv is not None
        partial = (self.encrypted_data is None) != (self.iv is None)
        if (self.code is not None) == legacy or partial:
            raise ValueError("give either code, or encrypted_data and iv")
        return self


class MyCardOut(Out):
    card_id: str
    code: str
    status: str
    points: int
    balance: int = Field(description="Stored value in fen")
    tier_name: str


class QrOut(Out):
    token: str = Field(description="Signed member token to render as QR code or barcode")
    expires_in: int
    refresh_in: int = Field(description="Seconds after which the page should fetch a new token")


class ResolveQrIn(Schema):
    token: str = Field(min_length=1, max_length=128)


class ReferralOut(Out):
    referral_code: str
    mp_code_png_base64: str = Field(description="Mini-program code (PNG) with scene ref:<referral_code>")


def _me(profile: miniprogram.MemberProfile) -> MeOut:
    member, store = profile.member, profile.store
    return MeOut(
        member_id=member.id,
        member_no=member.member_no,
        name=member.name,
        gender=member.gender,
        birthday=member.birthday,
        phone=miniprogram.mask_phone(member.phone),
        custom_fields=member.custom_fields,
        points=profile.points,
        balance=profile.balance,
        tier_name=profile.tier_name,
        referral_code=member.referral_code,
        activated=member.activated_at is not None,
        store=StoreRef(id=store.id, code=store.code, name=store.name) if store else None,
    )


@bp.post("/api/mp/login")
@endpoint(
    summary="Mini-program login",
    tag="miniprogram",
    body=LoginIn,
    response=LoginOut,
    errors=(401, 404, 502, 503),
    description="jscode2session, then find or register the member (merged with an OA member of the same "
    "unionid); referral and store count for a new member only. 401 mp.code_invalid for a bad or used code. "
    "The session_key stays on the server.",
)
async def login(request: Request, body: LoginIn):
    result = await miniprogram.login(
        gateway=request.app.ctx.wechat,
        code=body.code,
        appid=body.appid,
        referral_code=body.referral_code,
        store_code=body.store_code,
    )
    security = request.app.ctx.settings.security
    token, expires_in = issue_member_token(
        secret=security.jwt_secret,
        ttl=security.member_token_ttl,
        member_id=result.member.id,
        merchant_id=result.member.merchant_id,
    )
    return ok(LoginOut(access_token=token, expires_in=expires_in, member_id=result.member.id, is_new=result.created))


@bp.get("/api/mp/me")
@endpoint(summary="My profile", tag="miniprogram", roles=MEMBER_ONLY, response=MeOut, errors=(404,))
async def read_me(request: Request):
    principal = request.ctx.principal
    return ok(_me(await miniprogram.get_profile(merchant_id=principal.merchant_id, member_id=principal.subject_id)))


@bp.patch("/api/mp/me")
@endpoint(
    summary="Change my profile",
    tag="miniprogram",
    roles=MEMBER_ONLY,
    body=MePatch,
    response=MeOut,
    errors=(404,),
    description="Name, gender, birthday, custom fields; the phone is bound through /api/mp/me/phone.",
)
async def update_me(request: Request, body: MePatch):
    principal = request.ctx.principal
    profile = await miniprogram.update_profile(
        merchant_id=principal.merchant_id, member_id=principal.subject_id, changes=body.model_dump(exclude_unset=True)
    )
    return ok(_me(profile))


@bp.post("/api/mp/me/phone")
@endpoint(
    summary="Bind my phone number",
    tag="miniprogram",
    roles=MEMBER_ONLY,
    body=PhoneIn,
    response=MeOut,
    errors=(404, 409, 502, 503),
    description="Either the getPhoneNumber `code` (exchanged through getuserphonenumber) or the legacy "
    "`encrypted_data`/`iv` (decrypted with the stored session_key; the watermark appid must be this "
    "mini-program's and its timestamp within 24 hours of now). 409 member.phone_taken with member_id.",
)
async def bind_phone(request: Request, body: PhoneIn):
    principal = request.ctx.principal
    profile = await miniprogram.bind_phone(
        gateway=request.app.ctx.wechat,
        merchant_id=principal.merchant_id,
        member_id=principal.subject_id,
        code=body.code,
        encrypted_data=body.encrypted_data,
        iv=body.iv,
    )
    return ok(_me(profile))


@bp.get("/api/mp/me/card")
@endpoint(
    summary="My member card",
    tag="miniprogram",
    roles=MEMBER_ONLY,
    response=MyCardOut,
    errors=(404,),
    description="404 card.not_claimed until the card is in the member's card wallet.",
)
async def my_card(request: Request):
    principal = request.ctx.principal
    mine = await miniprogram.get_card(merchant_id=principal.merchant_id, member_id=principal.subject_id)
    return ok(
        MyCardOut(
            card_id=mine.card.card_id,
            code=mine.card.code,
            status=mine.card.status,
            points=mine.points,
            balance=mine.balance,
            tier_name=mine.tier_name,
        )
    )


@bp.get("/api/mp/me/qr")
@endpoint(
    summary="My dynamic member QR code",
    tag="miniprogram",
    roles=MEMBER_ONLY,
    response=QrOut,
    errors=(404,),
    description="A signed token valid 60 s for the cashier to scan (POST /api/members/resolve-qr); "
    "fetch a new one every refresh_in seconds.",
)
async def my_qr(request: Request):
    principal = request.ctx.principal
    token, expires_in = await miniprogram.member_qr(
        secret=request.app.ctx.settings.security.jwt_secret,
        merchant_id=principal.merchant_id,
        member_id=principal.subject_id,
    )
    return ok(QrOut(token=token, expires_in=expires_in, refresh_in=MEMBER_QR_REFRESH))


@bp.get("/api/mp/me/referral")
@endpoint(
    summary="My referral code and mini-program code",
    tag="miniprogram",
    roles=MEMBER_ONLY,
    response=ReferralOut,
    errors=(404, 502, 503),
    description="The mini-program code opens the mini-program with scene ref:<referral_code>.",
)
async def my_referral(request: Request):
    principal = request.ctx.principal
    code, png = await miniprogram.referral_qr(
        gateway=request.app.ctx.wechat, merchant_id=principal.merchant_id, member_id=principal.subject_id
    )
    return ok(ReferralOut(referral_code=code, mp_code_png_base64=png))


@bp.post("/api/members/resolve-qr")
@endpoint(
    summary="Resolve a member's dynamic QR code",
    tag="members",
    roles=ALL_STAFF,
    body=ResolveQrIn,
    response=MemberOut,
    errors=(404,),
    description="401 member_qr.invalid when expired or forged; store-scoped roles see only their store's members.",
)
async def resolve_qr(request: Request, body: ResolveQrIn):
    principal = request.ctx.principal
    member = await miniprogram.resolve_member_qr(
        secret=request.app.ctx.settings.security.jwt_secret,
        token=body.token,
        merchant_id=principal.merchant_id,
        store_id=principal.store_scope,
    )
    return ok(await serialize(member))
