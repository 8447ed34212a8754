"""The hook every change of a member's usable coupons emits, inside the change's transaction (the card listens)."""

from __future__ import annotations

from collections.abc import Iterable

from models.kernel.hooks import Hook

# (members=[(merchant_id, member_id), ...]): coupons issued, redeemed, restored, expired, voided or unvoided
COUPONS_CHANGED = Hook("coupons.changed")


async def coupons_changed(members: Iterable[tuple[int, int]]) -> None:
    """Tell the listeners whose usable coupons changed: each (merchant_id, member_id) once, nothing for none."""
    distinct = sorted(set(members))
    if distinct:
        await COUPONS_CHANGED.emit(members=distinct)
