"""Issuing coupons: the guarded stock counter, the per-member slot key and the idempotency key, in one transaction."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.transactions import in_transaction

from models.coupons.changes import coupons_changed
from models.coupons.tables import Coupon, CouponClaim, CouponTemplate
from models.coupons.templates import local_day, local_midnight
from models.kernel import clock
from models.kernel.errors import Conflict, Forbidden, NotFound, Unprocessable
from models.ledger import books as ledger
from models.tenancy.merchants import merchant_zone
from models.tiers.standing import current_tier

log = logging.getLogger("huiyuan.coupons")


@dataclass(frozen=True)
class Issued:
    coupon: Coupon
    replayed: bool  # the idempotency key was used before: this is the first coupon, nothing new was issued


class _Replay(Exception):
    """The idempotency key was taken by a concurrent claim: roll this one back and return that one's coupon."""


class _SlotTaken(Exception):
    """Another claim holds this slot: try the member's next one."""


async def _replay(template_id: int, idempotency_key: str) -> Issued | None:
    claim = await CouponClaim.get_or_none(template_id=template_id, idempotency_key=idempotency_key)
    if claim is None:
        return None
    return Issued(coupon=await Coupon.get(claim_id=claim.id), replayed=True)


async def take_stock(*, template_id: int) -> bool:
    """One unit of stock, exactly: `issued + 1 <= total_stock` in the UPDATE, so concurrent claims never oversell."""
    guard = CouponTemplate.filter(id=template_id, status="active").filter(
        Q(total_stock__isnull=True) | Q(total_stock__gte=F("issued") + 1)
    )
    return await guard.update(issued=F("issued") + 1) == 1


async def validity(*, template: CouponTemplate, now: datetime) -> tuple[datetime, datetime]:
    """A new coupon's window: the template's fixed dates, or through the end of the Nth merchant-local day."""
    if template.valid_days is None:
        assert template.valid_until is not None
        return template.valid_from or now, template.valid_until
    zone = await merchant_zone(merchant_id=template.merchant_id)
    return now, local_midnight(local_day(now, zone) + timedelta(days=template.valid_days), zone)


async def issue(
    *,
    merchant_id: int,
    member_id: int,
    template_id: int,
    channel: str,
    idempotency_key: str,
    announce: bool = True,
) -> Issued:
    """Give the member one coupon of the template through this channel; the same key returns the first coupon.

    409 coupon.out_of_stock / coupon.limit_reached / coupon_template.voided; a loser writes nothing. Inside a
    caller's transaction it is a savepoint of it (recharge settlement, activation, tier gifts). A new coupon
    emits COUPONS_CHANGED in its transaction, unless `announce` is False (the caller emits once for a pack).
    """
    template = await CouponTemplate.get_or_none(id=template_id, merchant_id=merchant_id)
    if template is None:
        raise NotFound("no such coupon template", code="coupon_template.not_found", field="template_id")
    earlier = await _replay(template_id, idempotency_key)
    if earlier is not None:
        if earlier.coupon.member_id != member_id:
            raise Conflict("idempotency_key was used for another member", code="idempotency.key_reused")
        return earlier
    if channel not in template.channels:
        raise Forbidden(f"this template is not claimed through {channel}", code="coupon.channel_closed")
    now = clock.now()
    if template.status != "active":
        raise Conflict("the template is voided", code="coupon_template.voided")
    if template.valid_until is not None and template.valid_until <= now:
        raise Conflict("the template's validity has ended", code="coupon_template.expired")
    valid_from, valid_until = await validity(template=template, now=now)

    async def _insert(slot: int | None) -> Issued:
        try:
            async with in_transaction():  # a savepoint: a taken slot or key rolls back just this insert
                claim = await CouponClaim.create(
                    merchant_id=merchant_id,
                    template_id=template_id,
                    member_id=member_id,
                    slot=slot,
                    idempotency_key=idempotency_key,
                    channel=channel,
                )
        except IntegrityError:
            keyed = CouponClaim.filter(template_id=template_id, idempotency_key=idempotency_key)
            if slot is None or await keyed.select_for_update().exists():
                raise _Replay() from None
            raise _SlotTaken() from None
        coupon = await Coupon.create(
            merchant_id=merchant_id,
            template_id=template_id,
            member_id=member_id,
            claim_id=claim.id,
            channel=channel,
            valid_from=valid_from,
            valid_until=valid_until,
        )
        if announce:
            await coupons_changed([(merchant_id, member_id)])
        return Issued(coupon=coupon, replayed=False)

    async def work() -> Issued:
        try:
            async with in_transaction():
                if not await take_stock(template_id=template_id):
                    status = (await CouponTemplate.filter(id=template_id).values_list("status", flat=True))[0]
                    if status != "active":
                        raise Conflict("the template is voided", code="coupon_template.voided")
                    raise Conflict("no coupons of this template are left", code="coupon.out_of_stock")
                if channel == "gift":  # packages, tier gifts, plan packs, welcome: the key alone makes them once
                    return await _insert(None)
                taken = set(
                    await CouponClaim.filter(template_id=template_id, member_id=member_id).values_list(
                        "slot", flat=True
                    )
                )
                for slot in range(1, template.per_member_limit + 1):
                    if slot in taken:
                        continue
                    try:
                        return await _insert(slot)
                    except _SlotTaken:
                        continue
                raise Conflict(
                    "the member holds as many of these coupons as allowed",
                    code="coupon.limit_reached",
                    limit=template.per_member_limit,
                )
        except _Replay:
            replay = await _replay(template_id, idempotency_key)
            assert replay is not None
            return replay

    return await ledger.retrying(work, what="coupon issue")


async def next_self_slot(*, template_id: int, member_id: int) -> int:
    """The member's lowest free slot: the self-claim key, so two clicks at once collide on one key."""
    taken = set(await CouponClaim.filter(template_id=template_id, member_id=member_id).values_list("slot", flat=True))
    slot = 1
    while slot in taken:
        slot += 1
    return slot


async def coupons_of(*, merchant_id: int, member_id: int, status: str | None = None) -> list[tuple[Coupon, str, str]]:
    """A member's coupons (newest first, at most 200) with their template's name and kind."""
    query = Coupon.filter(merchant_id=merchant_id, member_id=member_id, **({"status": status} if status else {}))
    coupons = await query.order_by("-created_at", "-id").limit(200)
    templates = {t.id: t for t in await CouponTemplate.filter(id__in={c.template_id for c in coupons})}
    return [(c, templates[c.template_id].name, templates[c.template_id].kind) for c in coupons]


async def claimable(*, merchant_id: int, member_id: int) -> list[tuple[CouponTemplate, int]]:
    """Templates the member may claim in the mini-program now, with how many more each allows them."""
    now = clock.now()
    tier = await current_tier(merchant_id=merchant_id, member_id=member_id)
    templates = (
        await CouponTemplate.filter(merchant_id=merchant_id, status="active")
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gt=now))
        .filter(Q(total_stock__isnull=True) | Q(total_stock__gt=F("issued")))
        .order_by("-created_at", "-id")
        .limit(200)
    )
    templates = [t for t in templates if "self" in t.channels and (not t.tier_ids or (tier and tier.id in t.tier_ids))]
    held: dict[int, int] = {}
    rows = await CouponClaim.filter(member_id=member_id, template_id__in=[t.id for t in templates]).values_list(
        "template_id", flat=True
    )
    for template_id in rows:
        held[int(template_id)] = held.get(int(template_id), 0) + 1  # type: ignore[call-overload]
    return [(t, t.per_member_limit - held.get(t.id, 0)) for t in templates if t.per_member_limit > held.get(t.id, 0)]


async def grant_gift_coupons(
    *, merchant_id: int, member_id: int, coupons: list[dict[str, Any]], key_prefix: str
) -> None:
    """Grant a promised pack ([{template_id, quantity}]) through the gift channel, each coupon once by its key.

    Keys are `<key_prefix>:<template_id>:<i>`; a template out of stock, voided or closed to gifts is skipped
    (logged) so the payment, activation or upgrade that promised it still goes through. COUPONS_CHANGED is
    emitted once for the pack, in the pack's transaction (a savepoint of the caller's, where there is one).
    """

    async def work() -> None:
        async with in_transaction():  # the pack and its hook commit together (a savepoint inside a caller's)
            granted = False
            for template_id, key in gift_keys(coupons=coupons, key_prefix=key_prefix):
                try:
                    issued = await issue(
                        merchant_id=merchant_id,
                        member_id=member_id,
                        template_id=template_id,
                        channel="gift",
                        idempotency_key=key,
                        announce=False,
                    )
                except (Conflict, Forbidden, NotFound) as exc:
                    log.warning("gift coupon %s for member %s not granted: %s", template_id, member_id, exc.code)
                    continue
                granted = granted or not issued.replayed
            if granted:
                await coupons_changed([(merchant_id, member_id)])

    await ledger.retrying(work, what="gift coupons")


def gift_keys(*, coupons: list[dict[str, Any]], key_prefix: str) -> list[tuple[int, str]]:
    """The (template id, idempotency key) of every coupon a pack promises: `<key_prefix>:<template_id>:<i>`."""
    keys: list[tuple[int, str]] = []
    for entry in coupons:
        template_id = entry.get("template_id") if isinstance(entry, dict) else None
        if not isinstance(template_id, int):
            continue  # an entry written before coupons existed (a name, not a template id)
        keys.extend((template_id, f"{key_prefix}:{template_id}:{i}") for i in range(int(entry.get("quantity") or 1)))
    return keys


async def check_gift_templates(*, merchant_id: int, template_ids: list[int], field: str) -> None:
    """Every template is the merchant's, active and open to the gift channel; 422 naming the field otherwise."""
    found = {t.id: t for t in await CouponTemplate.filter(merchant_id=merchant_id, id__in=template_ids)}
    for template_id in template_ids:
        template = found.get(template_id)
        if template is None or template.status != "active" or "gift" not in template.channels:
            raise Unprocessable(
                f"coupon template {template_id} is not an active template with the gift channel",
                code="coupon_template.not_giftable",
                field=field,
            )
