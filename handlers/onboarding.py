"""How customers arrive: store/staff QR codes and onboarding settings; mini-program login, phone, self-service."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import Field, StrictInt, model_validator
from sanic import Blueprint, raw
from sanic.request import Request

from handlers.schemas import MemberOut, serialize
from models.coupons.issue import check_gift_templates
from models.members.qr import MEMBER_QR_REFRESH
from models.onboarding import miniprogram, qrcodes
from models.tenancy import onboarding_settings
from server.api import MAX_ID, Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MANAGERS, MEMBER, issue_member_token, scope_of

qrcodes_bp = Blueprint("qrcodes")
MAX_POINTS = 10_000_000
MAX_FEN = 100_000_000


class QrCodeIn(Schema):
    kind: Literal["oa", "mp"] = Field(description="oa: permanent official-account code; mp: mini-program code")
    store_id: int | None = Field(None, ge=1, le=MAX_ID)
    staff_id: int | None = Field(None, ge=1, le=MAX_ID, description="Scans credit this staff member and their store")
    label: str = Field("", max_length=64)

    @model_validator(mode="after")
    def one_target(self) -> QrCodeIn:
        if (self.store_id is None) == (self.staff_id is None):
            raise ValueError("give exactly one of store_id and staff_id")
        return self


class QrCodeOut(Out):
    id: int
    kind: str
    scene: str = Field(description="store:<code> | staff:<id>")
    store_id: int | None
    staff_id: int | None
    ticket: str
    url: str
    label: str
    is_active: bool
    scan_count: int
    created_at: datetime
    image_url: str = Field(description="Path of the printable image (?format=png|svg)")


class QrCodeQuery(Schema):
    kind: Literal["oa", "mp"] | None = None
    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(50, ge=1, le=200)


class QrCodePage(Out):
    total: int
    items: list[QrCodeOut]


class ImageQuery(Schema):
    format: Literal["png", "svg"] = "png"


class SettingsOut(Out):
    welcome_points: int
    welcome_balance: int = Field(description="fen")
    referrer_points: int
    referee_points: int
    welcome_text: str
    tier_name: str
    welcome_coupon_template_ids: list[int] = Field(description="Coupon templates (gift channel) granted at activation")


class SettingsIn(Schema):
    welcome_points: StrictInt | None = Field(None, ge=0, le=MAX_POINTS)
    welcome_balance: StrictInt | None = Field(None, ge=0, le=MAX_FEN, description="fen")
    referrer_points: StrictInt | None = Field(None, ge=0, le=MAX_POINTS)
    referee_points: StrictInt | None = Field(None, ge=0, le=MAX_POINTS)
    welcome_text: str | None = Field(None, min_length=1, max_length=600)
    tier_name: str | None = Field(None, min_length=1, max_length=32)
    welcome_coupon_template_ids: list[StrictInt] | None = Field(None, max_length=20)


def serialize_qr_code(code: qrcodes.QrCode) -> QrCodeOut:
    return QrCodeOut.model_validate(
        {
            **{name: getattr(code, name) for name in QrCodeOut.model_fields if name != "image_url"},
            "image_url": f"/api/qrcodes/{code.id}/image",
        }
    )


@qrcodes_bp.post("/api/qrcodes")
@endpoint(
    summary="Create a store or staff QR code",
    tag="qrcodes",
    roles=MANAGERS,
    body=QrCodeIn,
    response=QrCodeOut,
    status=201,
    also=(200,),
    errors=(404, 502, 503),
    description="Exactly one of store_id/staff_id. oa → qrcode/create (QR_LIMIT_STR_SCENE, scene store:<code> or "
    "staff:<id>); mp → getwxacodeunlimit (scene ≤ 32 chars). The same kind and target again answers 200 with the "
    "existing code. Store managers only for their own store and its staff.",
)
async def create_qr_code(request: Request, body: QrCodeIn):
    principal = request.ctx.principal
    code, created = await qrcodes.create_qr_code(
        gateway=request.app.ctx.wechat,
        merchant_id=principal.merchant_id,
        kind=body.kind,
        store_id=body.store_id,
        staff_id=body.staff_id,
        label=body.label,
        store_scope=principal.store_scope,
    )
    return ok(serialize_qr_code(code), status=201 if created else 200)


@qrcodes_bp.get("/api/qrcodes")
@endpoint(
    summary="List QR codes with scan counts",
    tag="qrcodes",
    roles=ALL_STAFF,
    query=QrCodeQuery,
    response=QrCodePage,
    description="Newest first. Store-scoped roles see their store's codes only.",
)
async def list_qr_codes(request: Request, query: QrCodeQuery):
    principal = request.ctx.principal
    total, found = await qrcodes.list_qr_codes(scope=scope_of(principal), **query.model_dump())
    return ok(QrCodePage(total=total, items=[serialize_qr_code(code) for code in found]))


@qrcodes_bp.post("/api/qrcodes/<qr_code_id:int>/disable")
@endpoint(
    summary="Disable a QR code",
    tag="qrcodes",
    roles=MANAGERS,
    response=QrCodeOut,
    errors=(404,),
    description="Scans of a disabled code register the member without store/staff attribution; it still renders.",
)
async def disable_qr_code(request: Request, qr_code_id: int):
    principal = request.ctx.principal
    code = await qrcodes.disable_qr_code(scope=scope_of(principal), qr_code_id=qr_code_id)
    return ok(serialize_qr_code(code))


@qrcodes_bp.get("/api/qrcodes/<qr_code_id:int>/image")
@endpoint(
    summary="Printable QR code image",
    tag="qrcodes",
    roles=ALL_STAFF,
    query=ImageQuery,
    content_type="image/png, image/svg+xml",
    errors=(404,),
    description="image/png or image/svg+xml. Official-account codes are rendered locally from their URL; "
    "mini-program codes are the PNG WeChat returned (svg → 422).",
)
async def qr_code_image(request: Request, qr_code_id: int, query: ImageQuery):
    principal = request.ctx.principal
    code = await qrcodes.get_qr_code(scope=scope_of(principal), qr_code_id=qr_code_id)
    content, content_type = qrcodes.render_qr_code(qr_code=code, image_format=query.format)
    return raw(content, content_type=content_type)


@qrcodes_bp.get("/api/onboarding-settings")
@endpoint(
    summary="Welcome and referral settings",
    tag="onboarding",
    roles=ALL_STAFF,
    response=SettingsOut,
    description="The defaults until the merchant changes them.",
)
async def read_settings(request: Request):
    settings = await onboarding_settings.get_onboarding_settings(merchant_id=request.ctx.principal.merchant_id)
    return ok(SettingsOut.model_validate(settings))


@qrcodes_bp.put("/api/onboarding-settings")
@endpoint(
    summary="Change welcome and referral settings",
    tag="onboarding",
    roles=ADMINS,
    body=SettingsIn,
    response=SettingsOut,
    errors=(422,),
    description="Fields left out keep their value. Points and fen are non-negative integers. Welcome coupons are "
    "active templates with the gift channel (422 coupon_template.not_giftable).",
)
async def update_settings(request: Request, body: SettingsIn):
    merchant_id = request.ctx.principal.merchant_id
    if body.welcome_coupon_template_ids:
        await check_gift_templates(
            merchant_id=merchant_id, template_ids=body.welcome_coupon_template_ids, field="welcome_coupon_template_ids"
        )
    settings = await onboarding_settings.update_onboarding_settings(
        merchant_id=merchant_id, changes=body.model_dump(exclude_none=True)
    )
    return ok(SettingsOut.model_validate(settings))


miniprogram_bp = Blueprint("miniprogram")
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


@miniprogram_bp.post("/api/mp/login")
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


@miniprogram_bp.get("/api/mp/me")
@endpoint(summary="My profile", tag="miniprogram", roles=MEMBER_ONLY, response=MeOut, errors=(404,))
async def read_me(request: Request):
    principal = request.ctx.principal
    return ok(_me(await miniprogram.get_profile(merchant_id=principal.merchant_id, member_id=principal.subject_id)))


@miniprogram_bp.patch("/api/mp/me")
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


@miniprogram_bp.post("/api/mp/me/phone")
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


@miniprogram_bp.get("/api/mp/me/card")
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


@miniprogram_bp.get("/api/mp/me/qr")
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


@miniprogram_bp.get("/api/mp/me/referral")
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


@miniprogram_bp.post("/api/members/resolve-qr")
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
        scope=scope_of(principal),
    )
    return ok(await serialize(member))


bp = Blueprint.group(qrcodes_bp, miniprogram_bp)
