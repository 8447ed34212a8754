"""The WeChat member card: template, claim QR codes, activation, code decryption."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.cards import activation as card_activation
from models.cards import template as cards
from models.kernel.errors import Forbidden
from server.api import MAX_ID, Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MANAGERS, MEMBER, scope_of

bp = Blueprint("cards")
URL = r"^https?://\S+$"


class CardFormIn(Schema):
    required: list[str] = Field(default_factory=list, max_length=20)
    optional: list[str] = Field(default_factory=list, max_length=20)


class CardTemplateIn(Schema):
    brand_name: str = Field(min_length=1, max_length=12, description="Merchant name on the card (fixed after creation)")
    title: str = Field(min_length=1, max_length=9)
    logo_url: str = Field(max_length=128, pattern=URL, description="A logo uploaded to WeChat (mmbiz.qpic.cn)")
    color: str = Field(pattern=r"^Color(0[1-9]0|100)$", description="Color010 … Color100")
    notice: str = Field(min_length=1, max_length=16)
    description: str = Field(min_length=1, max_length=1024)
    service_phone: str | None = Field(None, max_length=24)
    activate_url: str | None = Field(None, max_length=128, pattern=URL, description="Page opened after the form")
    coupons_url: str | None = Field(
        None, max_length=128, pattern=URL, description="Page the card's coupon count (custom_field2) opens"
    )
    prerogative: str = Field(min_length=1, max_length=1024, description="Member privileges text")
    form: CardFormIn = Field(
        default_factory=CardFormIn,
        description="Activation form: USER_FORM_INFO_FLAG_MOBILE / _NAME / _BIRTHDAY / _SEX or custom field keys",
    )


class CardTemplateOut(Out):
    id: int
    card_id: str | None
    status: str = Field(description="draft | checking | approved | rejected")
    reject_reason: str
    config: dict[str, Any]
    form: dict[str, list[str]]
    updated_at: datetime


class ClaimQrIn(Schema):
    store_id: int | None = Field(None, ge=1, le=MAX_ID, description="Omit for the merchant's store-less code")


class ClaimQrOut(Out):
    id: int
    store_id: int | None
    outer_str: str = Field(description="Store code carried by user_get_card as OuterStr")
    card_id: str
    ticket: str
    url: str = Field(description="Image of the QR code (show_qrcode_url)")
    created_at: datetime


class ClaimQrList(Out):
    items: list[ClaimQrOut]


class DecryptIn(Schema):
    encrypt_code: str = Field(min_length=1, max_length=512)


class CardCodeOut(Out):
    member_id: int
    code: str
    card_id: str
    status: str = Field(description="claimed | activated | removed")


class MpActivateIn(Schema):
    activate_ticket: str = Field(min_length=1, max_length=512)
    card_id: str = Field(min_length=1, max_length=64)
    encrypt_code: str = Field(min_length=1, max_length=512)


class MemberCardOut(Out):
    card_id: str
    code: str
    status: str
    activated_at: datetime | None
    points: int
    balance: int = Field(description="fen")
    tier_name: str


def _template_out(template: cards.CardTemplate) -> CardTemplateOut:
    return CardTemplateOut(
        id=template.id,
        card_id=template.card_id,
        status=template.status,
        reject_reason=template.reject_reason,
        config=template.config,
        form={k: list(v) for k, v in (template.activate_form or {}).items()},
        updated_at=template.updated_at,
    )


def _qr_out(code: Any) -> ClaimQrOut:
    return ClaimQrOut(
        id=code.id,
        store_id=code.store_id,
        outer_str=code.scene,
        card_id=code.card_id,
        ticket=code.ticket,
        url=code.url,
        created_at=code.created_at,
    )


@bp.put("/api/card-template")
@endpoint(
    summary="Create or update the member card",
    tag="cards",
    roles=ADMINS,
    body=CardTemplateIn,
    response=CardTemplateOut,
    errors=(502, 503),
    description="card/create the first time (then card/update) and activateuserform/set; the card goes to "
    "WeChat's review (status checking). Unknown form fields are 422.",
)
async def put_template(request: Request, body: CardTemplateIn):
    template = await cards.save_template(
        wechat=request.app.ctx.wechat,
        merchant_id=request.ctx.principal.merchant_id,
        config=body.model_dump(exclude={"form"}),
        required=body.form.required,
        optional=body.form.optional,
    )
    return ok(_template_out(template))


@bp.get("/api/card-template")
@endpoint(summary="The member card", tag="cards", roles=ALL_STAFF, response=CardTemplateOut, errors=(404,))
async def get_template(request: Request):
    return ok(_template_out(await cards.get_template(merchant_id=request.ctx.principal.merchant_id)))


@bp.post("/api/card-template/claim-qrcodes")
@endpoint(
    summary="Card-claim QR code of a store",
    tag="cards",
    roles=MANAGERS,
    body=ClaimQrIn,
    response=ClaimQrOut,
    status=201,
    also=(200,),
    errors=(404, 409, 502, 503),
    description="card/qrcode/create with outer_str = the store code; one code per store (a repeat answers 200 "
    "with the first). Store managers get their own store's code.",
)
async def create_claim_qrcode(request: Request, body: ClaimQrIn):
    principal = request.ctx.principal
    code, created = await cards.create_claim_qrcode(
        wechat=request.app.ctx.wechat,
        merchant_id=principal.merchant_id,
        store_id=body.store_id,
        store_scope=principal.store_scope,
    )
    return ok(_qr_out(code), status=201 if created else 200)


@bp.get("/api/card-template/claim-qrcodes")
@endpoint(summary="Card-claim QR codes", tag="cards", roles=ALL_STAFF, response=ClaimQrList)
async def list_claim_qrcodes(request: Request):
    principal = request.ctx.principal
    codes = await cards.list_claim_qrcodes(scope=scope_of(principal))
    return ok(ClaimQrList(items=[_qr_out(c) for c in codes]))


@bp.post("/api/cards/decrypt-code")
@endpoint(
    summary="Member card behind an encrypted card code",
    tag="cards",
    roles=ALL_STAFF,
    body=DecryptIn,
    response=CardCodeOut,
    errors=(404, 502, 503),
    description="card/code/decrypt (the card's use button, the cashier's scanner). 404 for an unknown code or a "
    "member of another store (store-scoped roles).",
)
async def decrypt_code(request: Request, body: DecryptIn):
    principal = request.ctx.principal
    card = await cards.card_by_encrypted_code(
        wechat=request.app.ctx.wechat,
        scope=scope_of(principal),
        encrypt_code=body.encrypt_code,
    )
    return ok(CardCodeOut(member_id=card.member_id, code=card.code, card_id=card.card_id, status=card.status))


@bp.post("/api/mp/card/activate")
@endpoint(
    summary="Activate my member card (mini-program activation page)",
    tag="miniprogram",
    roles=(MEMBER,),
    body=MpActivateIn,
    response=MemberCardOut,
    errors=(403, 404, 409, 502, 503),
    description="Decrypts the card code, reads the submitted form (activatetempinfo) and activates the card once "
    "with the welcome and referral rewards. 422 names a missing required field; 409 when the phone belongs to "
    "another member. WeChat's card/membercard/activate follows through the outbox.",
)
async def mp_activate(request: Request, body: MpActivateIn):
    principal = request.ctx.principal
    if principal.kind != "member":
        raise Forbidden("members only", code="auth.role_forbidden")
    state = await card_activation.activate_from_miniprogram(
        wechat=request.app.ctx.wechat,
        merchant_id=principal.merchant_id,
        member_id=principal.subject_id,
        card_id=body.card_id,
        encrypt_code=body.encrypt_code,
        activate_ticket=body.activate_ticket,
    )
    card = state.card
    return ok(
        MemberCardOut(
            card_id=card.card_id,
            code=card.code,
            status=card.status,
            activated_at=card.activated_at,
            points=state.points,
            balance=state.balance,
            tier_name=state.tier_name,
        )
    )
