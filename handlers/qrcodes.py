"""Store and staff QR codes for the official account and the mini-program, and onboarding settings."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, StrictInt, model_validator
from sanic import Blueprint, raw
from sanic.request import Request

from models.onboarding import qrcodes
from models.tenancy import onboarding_settings
from server.api import MAX_ID, Out, Schema, endpoint, ok
from server.auth import ADMINS, ALL_STAFF, MANAGERS

bp = Blueprint("qrcodes")
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


class SettingsIn(Schema):
    welcome_points: StrictInt | None = Field(None, ge=0, le=MAX_POINTS)
    welcome_balance: StrictInt | None = Field(None, ge=0, le=MAX_FEN, description="fen")
    referrer_points: StrictInt | None = Field(None, ge=0, le=MAX_POINTS)
    referee_points: StrictInt | None = Field(None, ge=0, le=MAX_POINTS)
    welcome_text: str | None = Field(None, min_length=1, max_length=600)
    tier_name: str | None = Field(None, min_length=1, max_length=32)


def serialize(code: qrcodes.QrCode) -> QrCodeOut:
    return QrCodeOut.model_validate(
        {
            **{name: getattr(code, name) for name in QrCodeOut.model_fields if name != "image_url"},
            "image_url": f"/api/qrcodes/{code.id}/image",
        }
    )


@bp.post("/api/qrcodes")
@endpoint(
    summary="Create a store or staff QR code",
    tag="qrcodes",
    roles=MANAGERS,
    body=QrCodeIn,
    response=QrCodeOut,
    status=201,
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
    return ok(serialize(code), status=201 if created else 200)


@bp.get("/api/qrcodes")
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
    total, found = await qrcodes.list_qr_codes(
        merchant_id=principal.merchant_id, store_id=principal.store_scope, **query.model_dump()
    )
    return ok(QrCodePage(total=total, items=[serialize(code) for code in found]))


@bp.post("/api/qrcodes/<qr_code_id:int>/disable")
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
    code = await qrcodes.disable_qr_code(
        merchant_id=principal.merchant_id, qr_code_id=qr_code_id, store_id=principal.store_scope
    )
    return ok(serialize(code))


@bp.get("/api/qrcodes/<qr_code_id:int>/image")
@endpoint(
    summary="Printable QR code image",
    tag="qrcodes",
    roles=ALL_STAFF,
    query=ImageQuery,
    errors=(404,),
    description="image/png or image/svg+xml. Official-account codes are rendered locally from their URL; "
    "mini-program codes are the PNG WeChat returned (svg → 422).",
)
async def qr_code_image(request: Request, qr_code_id: int, query: ImageQuery):
    principal = request.ctx.principal
    code = await qrcodes.get_qr_code(
        merchant_id=principal.merchant_id, qr_code_id=qr_code_id, store_id=principal.store_scope
    )
    content, content_type = qrcodes.render_qr_code(qr_code=code, image_format=query.format)
    return raw(content, content_type=content_type)


@bp.get("/api/onboarding-settings")
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


@bp.put("/api/onboarding-settings")
@endpoint(
    summary="Change welcome and referral settings",
    tag="onboarding",
    roles=ADMINS,
    body=SettingsIn,
    response=SettingsOut,
    description="Fields left out keep their value. Points and fen are non-negative integers.",
)
async def update_settings(request: Request, body: SettingsIn):
    settings = await onboarding_settings.update_onboarding_settings(
        merchant_id=request.ctx.principal.merchant_id, changes=body.model_dump(exclude_none=True)
    )
    return ok(SettingsOut.model_validate(settings))
