"""The member CSV export: every matching member in id order, a thousand rows per query, never the ID card."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from zoneinfo import ZoneInfo

from models.ledger.books import BalanceAccount, PointsAccount
from models.members.custom_fields import list_fields
from models.members.members import Member, filter_members
from models.tenancy.merchants import Merchant, Store

EXPORT_BATCH = 1000
COLUMNS = (
    "id",
    "member_no",
    "phone",
    "name",
    "gender",
    "birthday",
    "store_code",
    "source",
    "points",
    "balance_fen",
    "created_at",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value: Any) -> Any:
    """Free text that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


async def export_members_csv(*, merchant_id: int, **filters: Any) -> AsyncIterator[str]:
    """CSV text (BOM first, for Excel) of the members matching the filters of filter_members, in id order."""
    query = await filter_members(merchant_id=merchant_id, **filters)

    async def batch(after: int) -> list[Member]:
        return list(await query.filter(id__gt=after).order_by("id").limit(EXPORT_BATCH))

    async for chunk in members_csv(merchant_id=merchant_id, batch=batch):
        yield chunk


async def members_csv(*, merchant_id: int, batch: Callable[[int], Awaitable[list[Member]]]) -> AsyncIterator[str]:
    """The export's CSV text for any member set: `batch(after)` gives the next members after that id, in id order
    (at most EXPORT_BATCH), until it gives none."""
    keys = [d.key for d in await list_fields(merchant_id=merchant_id)]
    timezone = await Merchant.filter(id=merchant_id).first().values_list("timezone", flat=True)
    zone = ZoneInfo(str(timezone or "Asia/Shanghai"))
    stores = dict(await Store.filter(merchant_id=merchant_id).values_list("id", "code"))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*COLUMNS, *keys])
    yield "\ufeff" + buffer.getvalue()
    last_id = 0
    while True:
        members = await batch(last_id)
        if not members:
            return
        last_id = members[-1].id
        ids = [m.id for m in members]
        points = dict(await PointsAccount.filter(member_id__in=ids).values_list("member_id", "balance"))
        balances = dict(await BalanceAccount.filter(member_id__in=ids).values_list("member_id", "balance"))
        buffer.seek(0)
        buffer.truncate()
        for m in members:
            custom = m.custom_fields or {}
            writer.writerow(
                [
                    m.id,
                    m.member_no or "",
                    m.phone or "",
                    _text(m.name),
                    m.gender,
                    m.birthday.isoformat() if m.birthday else "",
                    stores.get(m.origin_store_id, "") if m.origin_store_id else "",
                    m.source,
                    points.get(m.id, 0),
                    balances.get(m.id, 0),
                    m.created_at.astimezone(zone).isoformat(timespec="seconds"),
                    *(_text(custom.get(key, "")) for key in keys),
                ]
            )
        yield buffer.getvalue()
