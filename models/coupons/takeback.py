"""A granted pack taken back when what paid for it is refunded: the unused coupons voided, the used ones left used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.coupons.changes import coupons_changed
from models.coupons.issue import gift_keys
from models.coupons.tables import Coupon, CouponClaim
from models.kernel import clock


@dataclass(frozen=True)
class PackState:
    voided: int  # coupons of the pack now voided (only a take-back voids a coupon)
    kept_used: int  # coupons of the pack the member had already used: they stay used


async def _claim_ids(*, merchant_id: int, member_id: int, coupons: list[dict[str, Any]], key_prefix: str) -> list[int]:
    """The pack's claims, found by their exact idempotency keys (the unique (template, key) index, no range)."""
    keys = gift_keys(coupons=coupons, key_prefix=key_prefix)
    if not keys:
        return []
    rows = await CouponClaim.filter(
        merchant_id=merchant_id,
        member_id=member_id,
        template_id__in=sorted({template_id for template_id, _ in keys}),
        idempotency_key__in=[key for _, key in keys],
    ).values_list("id", flat=True)
    return [int(claim_id) for claim_id in rows]  # type: ignore[call-overload]


async def pack_state(*, merchant_id: int, member_id: int, coupons: list[dict[str, Any]], key_prefix: str) -> PackState:
    """How many of the pack's coupons are voided and how many were used."""
    claim_ids = await _claim_ids(merchant_id=merchant_id, member_id=member_id, coupons=coupons, key_prefix=key_prefix)
    if not claim_ids:
        return PackState(voided=0, kept_used=0)
    statuses = [str(status) for status in await Coupon.filter(claim_id__in=claim_ids).values_list("status", flat=True)]
    return PackState(voided=statuses.count("voided"), kept_used=statuses.count("used"))


async def void_pack(*, merchant_id: int, member_id: int, coupons: list[dict[str, Any]], key_prefix: str) -> PackState:
    """Void the pack's coupons still usable in ONE guarded UPDATE (`status = 'usable'`): a coupon redeemed at the
    till at the same moment is either used (and stays used) or voided, never both; re-running voids nothing more."""
    claim_ids = await _claim_ids(merchant_id=merchant_id, member_id=member_id, coupons=coupons, key_prefix=key_prefix)
    if not claim_ids:
        return PackState(voided=0, kept_used=0)
    voided = await Coupon.filter(claim_id__in=claim_ids, status="usable").update(status="voided")
    if voided:
        await coupons_changed([(merchant_id, member_id)])
    # the used ones stay used, marked: returning the order that used one voids it rather than giving it back
    kept_used = await Coupon.filter(claim_id__in=claim_ids, status="used").update(taken_back_at=clock.now())
    return PackState(voided=voided, kept_used=kept_used)


async def restore_pack(*, merchant_id: int, member_id: int, coupons: list[dict[str, Any]], key_prefix: str) -> int:
    """Undo a take-back (its refund was cancelled): the pack's voided coupons are usable again, guarded on
    `status = 'voided'`, and the used ones lose their take-back mark; one past its validity is then marked
    expired by the expiry job as any other."""
    claim_ids = await _claim_ids(merchant_id=merchant_id, member_id=member_id, coupons=coupons, key_prefix=key_prefix)
    if not claim_ids:
        return 0
    await Coupon.filter(claim_id__in=claim_ids, taken_back_at__isnull=False).update(taken_back_at=None)
    restored = await Coupon.filter(claim_id__in=claim_ids, status="voided").update(status="usable")
    if restored:
        await coupons_changed([(merchant_id, member_id)])
    return restored
