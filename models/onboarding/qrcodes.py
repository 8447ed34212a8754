"""Parametric QR codes per store/staff (official account and mini-program) and the scans they bring."""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import segno
from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F
from tortoise.models import Model

from models.kernel.errors import DomainError, NotFound, Unprocessable, wechat_errors
from models.tenancy.merchants import Store, merchant_client
from models.tenancy.staff import Staff
from models.tenancy.visibility import Scope
from wechat.qrcode import create_permanent_qrcode
from wechat.wxa import wxacode_unlimited

if TYPE_CHECKING:
    from wechat.gateway import WeChatGateway

PNG_MAGIC = b"\x89PNG"
MAX_INT = 2**31 - 1


class QrCode(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    kind = fields.CharField(max_length=8)  # oa (qrcode/create) | mp (getwxacodeunlimit) | card (card/qrcode)
    scene = fields.CharField(max_length=64)  # store:<code> | staff:<id> | ref:<code>; card QR: outer_str
    store_id = fields.IntField(null=True)
    staff_id = fields.IntField(null=True)
    card_id = fields.CharField(max_length=64, default="")
    ticket = fields.CharField(max_length=255, default="")
    url = fields.CharField(max_length=512, default="")
    image_png = fields.BinaryField(null=True)  # mini-program codes come back as images
    label = fields.CharField(max_length=64, default="")
    is_active = fields.BooleanField(default=True)
    scan_count = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "qr_code"
        unique_together = (("merchant_id", "kind", "scene"),)


class QrScan(Model):
    id = fields.BigIntField(primary_key=True)
    merchant_id = fields.IntField()
    qr_code_id = fields.IntField(null=True)
    member_id = fields.IntField()
    scene = fields.CharField(max_length=64)
    event = fields.CharField(max_length=16)  # subscribe | scan | mp
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "qr_scan"
        # the second: each member's first scan, for the conversion funnel (models/analytics/reports.py)
        indexes = (("qr_code_id", "id"), ("merchant_id", "member_id", "created_at"))


QR_KINDS = ("oa", "mp")
MP_PAGE = "pages/index/index"
MP_SCENE_MAX = 32
MP_SCENE_CHARS = re.compile(r"^[0-9A-Za-z!#$&'()*+,/:;=?@\-._~]+$")
PNG_SCALE = 8

log = logging.getLogger("huiyuan.qrcodes")


@dataclass(frozen=True)
class SceneOrigin:
    """What a scanned scene attributes a member to; empty when the scene names nothing (or its code is off)."""

    store_id: int | None = None
    staff_id: int | None = None
    referral_code: str | None = None
    qr_code_id: int | None = None  # the active code that counts the scan


async def _scene_target(*, merchant_id: int, store_id: int | None, staff_id: int | None) -> tuple[str, int | None]:
    """The scene naming a store or staff member of this merchant, and the store the code belongs to."""
    if staff_id is not None:
        staff = await Staff.get_or_none(id=staff_id, merchant_id=merchant_id)
        if staff is None:
            raise NotFound("staff not found", code="staff.not_found")
        return f"staff:{staff.id}", staff.store_id
    store = await Store.get_or_none(id=store_id, merchant_id=merchant_id)
    if store is None:
        raise NotFound("store not found", code="store.not_found")
    return f"store:{store.code}", store.id


async def _issue(gateway: WeChatGateway, *, merchant_id: int, kind: str, scene: str) -> dict[str, Any]:
    """Ask WeChat for the code: a ticket and URL (oa) or the PNG itself (mp)."""
    with wechat_errors(action="qrcode"):
        if kind == "oa":
            client = await merchant_client(gateway, merchant_id=merchant_id, kind="official")
            ticket, url = await create_permanent_qrcode(client, scene=scene)
            if not (ticket and url):
                raise DomainError("WeChat returned no ticket/url", code="wechat.api_error", status=502)
            return {"ticket": ticket, "url": url}
        client = await merchant_client(gateway, merchant_id=merchant_id, kind="miniprogram")
        image = await wxacode_unlimited(client, scene=scene, page=MP_PAGE, check_path=False)
    if not image.startswith(PNG_MAGIC):
        raise DomainError("WeChat did not return an image", code="wechat.api_error", status=502)
    return {"image_png": image}


async def create_qr_code(
    *,
    gateway: WeChatGateway,
    merchant_id: int,
    kind: str,
    store_id: int | None,
    staff_id: int | None,
    label: str = "",
    store_scope: int | None = None,
) -> tuple[QrCode, bool]:
    """A permanent code for a store or staff member; the same (kind, scene) again returns the first code."""
    if (store_id is None) == (staff_id is None):
        raise Unprocessable("give exactly one of store_id and staff_id", code="qrcode.target_invalid")
    if kind not in QR_KINDS:
        raise Unprocessable(f"kind must be one of {', '.join(QR_KINDS)}", code="qrcode.kind_invalid", field="kind")
    scene, code_store_id = await _scene_target(merchant_id=merchant_id, store_id=store_id, staff_id=staff_id)
    if store_scope is not None and code_store_id != store_scope:
        raise NotFound("store not found" if staff_id is None else "staff not found", code="qrcode.target_not_found")
    if kind == "mp" and (len(scene) > MP_SCENE_MAX or not MP_SCENE_CHARS.match(scene)):
        raise Unprocessable(
            f"mini-program scene {scene!r} must be at most {MP_SCENE_MAX} URL-safe characters",
            code="qrcode.scene_invalid",
        )
    existing = await QrCode.get_or_none(merchant_id=merchant_id, kind=kind, scene=scene)
    if existing is not None:
        return existing, False
    issued = await _issue(gateway, merchant_id=merchant_id, kind=kind, scene=scene)  # before, never inside, the insert
    try:
        code = await QrCode.create(
            merchant_id=merchant_id,
            kind=kind,
            scene=scene,
            store_id=code_store_id,
            staff_id=staff_id,
            label=label,
            **issued,
        )
    except IntegrityError:
        return await QrCode.get(merchant_id=merchant_id, kind=kind, scene=scene), False
    return code, True


def _listed(*, scope: Scope):
    return QrCode.filter(kind__in=QR_KINDS, **scope.store_rows())  # card-claim codes belong to models.cards


async def list_qr_codes(
    *, scope: Scope, kind: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[int, list[QrCode]]:
    """The merchant's oa/mp codes (one store's for a store-scoped caller), newest first, with scan counts."""
    query = _listed(scope=scope)
    if kind:
        query = query.filter(kind=kind)
    total = await query.count()
    return total, await query.order_by("-id").offset(offset).limit(limit)


async def get_qr_code(*, scope: Scope, qr_code_id: int) -> QrCode:
    """An oa/mp code of this merchant, visible to a store-scoped role only if it belongs to that store."""
    code = await _listed(scope=scope).filter(id=qr_code_id).first()
    if code is None:
        raise NotFound("QR code not found", code="qrcode.not_found")
    return code


async def disable_qr_code(*, scope: Scope, qr_code_id: int) -> QrCode:
    """Stop attributing scans to a code (it still renders, and its history stays)."""
    code = await get_qr_code(scope=scope, qr_code_id=qr_code_id)
    await QrCode.filter(id=code.id).update(is_active=False)
    code.is_active = False
    return code


def render_qr_code(*, qr_code: QrCode, image_format: str) -> tuple[bytes, str]:
    """The printable image: rendered locally from the code's URL, or the PNG WeChat returned (mini-program)."""
    if qr_code.kind == "mp":
        if image_format != "png" or not qr_code.image_png:
            raise Unprocessable("a mini-program code is only available as PNG", code="qrcode.format_unavailable")
        return bytes(qr_code.image_png), "image/png"
    buffer = io.BytesIO()
    qr = segno.make(qr_code.url, error="m")
    if image_format == "svg":
        qr.save(buffer, kind="svg", scale=PNG_SCALE, border=4)
        return buffer.getvalue(), "image/svg+xml"
    qr.save(buffer, kind="png", scale=PNG_SCALE, border=4)
    return buffer.getvalue(), "image/png"


def parse_scene(scene: str) -> tuple[str, str] | None:
    """("store", code) | ("staff", id) | ("ref", referral code), or None for anything else."""
    prefix, sep, value = scene.partition(":")
    if not sep or not value or prefix not in ("store", "staff", "ref"):
        return None
    if prefix == "staff" and not (value.isdigit() and 0 < int(value) <= MAX_INT):
        return None
    return prefix, value


async def resolve_scene(*, merchant_id: int, kind: str, scene: str) -> SceneOrigin:
    """Who a scanned scene credits: the active code's store/staff/referrer; a disabled code or unknown target, nobody.

    Reads only; call it before writing the member so the code's row is locked last.
    """
    parsed = parse_scene(scene)
    if parsed is None:
        log.info("scene %r of merchant %s names nothing we know", scene, merchant_id)
        return SceneOrigin()
    code = await QrCode.get_or_none(merchant_id=merchant_id, kind=kind, scene=scene)
    if code is not None and not code.is_active:
        log.info("scan of disabled %s code %s (%s): no attribution", kind, code.id, scene)
        return SceneOrigin()
    code_id = code.id if code is not None else None
    prefix, value = parsed
    if prefix == "ref":
        return SceneOrigin(referral_code=value, qr_code_id=code_id)
    if prefix == "store":
        store_id = cast(  # flat values_list of first(): one id or None
            int | None,
            await Store.filter(merchant_id=merchant_id, code=value, is_active=True)
            .first()
            .values_list("id", flat=True),
        )
        if store_id is None:
            log.info("scan of unknown store %r for merchant %s: no attribution", value, merchant_id)
            return SceneOrigin(qr_code_id=code_id)
        return SceneOrigin(store_id=store_id, qr_code_id=code_id)
    staff = await Staff.filter(id=int(value), merchant_id=merchant_id, is_active=True).first()
    if staff is None:
        log.info("scan of unknown staff %s for merchant %s: no attribution", value, merchant_id)
        return SceneOrigin(qr_code_id=code_id)
    return SceneOrigin(store_id=staff.store_id, staff_id=staff.id, qr_code_id=code_id)


async def record_scan(*, merchant_id: int, origin: SceneOrigin, member_id: int, scene: str, event: str) -> QrScan:
    """Log one scan; the code's count rises only while it is still active (conditional update)."""
    counted = None
    if origin.qr_code_id is not None:
        updated = await QrCode.filter(id=origin.qr_code_id, is_active=True).update(scan_count=F("scan_count") + 1)
        counted = origin.qr_code_id if updated else None
    return await QrScan.create(
        merchant_id=merchant_id, qr_code_id=counted, member_id=member_id, scene=scene[:64], event=event
    )
