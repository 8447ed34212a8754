"""Segments: saved boolean combinations of tags and rule conditions, counted, previewed, exported and frozen live.

A definition is the rule language of models/segments/rules.py plus `{"tag": <id or code>}` leaves, compiled by
rules_sql.py into one WHERE over `member m`; the caller's scope (a store-scoped role: its store's members) is part
of that WHERE. Members are never loaded into Python to count or snapshot them: a count is one COUNT, a snapshot an
INSERT ... SELECT per member-id range.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.kernel import clock, sqlpath
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.kernel.sqlpath import Stmt
from models.ledger.books import PointsAccount
from models.members.export import EXPORT_BATCH, members_csv
from models.members.members import Member
from models.onboarding.miniprogram import mask_phone
from models.segments.rules import load_context, validate_rule
from models.segments.rules_sql import compile_rule
from models.segments.tables import Segment, SegmentSnapshot, SegmentSnapshotMember
from models.tenancy.merchants import merchant_zone
from models.tenancy.visibility import Scope
from models.tiers.standing import active_tiers, tier_by_id, tier_for_value
from models.tiers.tables import MemberTier

SNAPSHOT_BATCH = 5000  # member ids per INSERT ... SELECT
MAX_PAGE = 200


async def _checked(merchant_id: int, definition: Any) -> dict[str, Any]:
    context = await load_context(merchant_id=merchant_id, with_tags=True)
    return validate_rule(definition, context=context, root="definition", tags=True)


async def create_segment(*, merchant_id: int, code: str, name: str, definition: Any, staff_id: int | None) -> Segment:
    """A segment whose definition is checked first (422 with its JSON path; nothing written)."""
    checked = await _checked(merchant_id, definition)
    try:
        return await Segment.create(
            merchant_id=merchant_id, code=code, name=name, definition=checked, created_by=staff_id
        )
    except IntegrityError:
        raise Conflict("another segment already has this code", code="segment.code_taken", field="code") from None


async def list_segments(*, merchant_id: int, status: str | None = None) -> list[Segment]:
    query = Segment.filter(merchant_id=merchant_id)
    if status is not None:
        query = query.filter(status=status)
    return await query.order_by("id")


async def get_segment(*, merchant_id: int, segment_id: int) -> Segment:
    segment = await Segment.filter(id=segment_id, merchant_id=merchant_id).first()
    if segment is None:
        raise NotFound("segment not found", code="segment.not_found")
    return segment


async def update_segment(
    *, merchant_id: int, segment_id: int, name: str | None, definition: Any, archived: bool | None
) -> Segment:
    """Rename, redefine (checked like a new one), archive or restore a segment; snapshots taken keep their copy."""
    segment = await get_segment(merchant_id=merchant_id, segment_id=segment_id)
    changes: dict[str, Any] = {}
    if definition is not None:
        changes["definition"] = await _checked(merchant_id, definition)
    if name is not None:
        changes["name"] = name
    if archived is not None:
        changes["status"] = "archived" if archived else "active"
    if changes:
        await Segment.filter(id=segment.id).update(**changes)
    return await Segment.get(id=segment.id)


async def _where(scope: Scope, definition: dict[str, Any]) -> tuple[str, list[Any]]:
    """The definition and the scope as one condition over `member m`, with its parameters."""
    zone = await merchant_zone(merchant_id=scope.merchant_id)
    entry = tier_for_value(await active_tiers(merchant_id=scope.merchant_id), 0)
    condition, params = compile_rule(
        definition,
        now=clock.now(),
        zone=zone,
        dialect=sqlpath.dialect(),
        entry_tier_id=entry.id if entry is not None else None,
    )
    scoped, scope_params = "m.merchant_id = %s", [scope.merchant_id]
    if scope.store_id is not None:
        scoped, scope_params = f"{scoped} AND m.origin_store_id = %s", [*scope_params, scope.store_id]
    return f"{scoped} AND {condition}", [*scope_params, *params]


async def _visible_segment(scope: Scope, segment_id: int) -> Segment:
    return await get_segment(merchant_id=scope.merchant_id, segment_id=segment_id)


async def count_members(*, scope: Scope, segment_id: int) -> int:
    """How many members in the scope match the segment now: one COUNT over the compiled condition."""
    segment = await _visible_segment(scope, segment_id)
    where, params = await _where(scope, segment.definition)
    rows = (await sqlpath.select([Stmt(f"SELECT COUNT(*) FROM member m WHERE {where}", tuple(params))]))[0]  # noqa: S608
    return int(rows[0][0])


async def member_ids(*, scope: Scope, segment_id: int, after: int, limit: int) -> list[int]:
    """The ids of matching members after `after`, in id order (the keyset of every paged read of a segment)."""
    segment = await _visible_segment(scope, segment_id)
    return await _ids(scope, segment.definition, after, limit)


async def _ids(scope: Scope, definition: dict[str, Any], after: int, limit: int) -> list[int]:
    where, params = await _where(scope, definition)
    sql = f"SELECT m.id FROM member m WHERE {where} AND m.id > %s ORDER BY m.id LIMIT %s"  # noqa: S608
    rows = (await sqlpath.select([Stmt(sql, (*params, after, limit))]))[0]
    return [int(row[0]) for row in rows]


@dataclass(frozen=True)
class MemberRow:
    id: int
    name: str | None
    phone_masked: str | None
    tier_code: str | None
    tier_name: str | None
    points: int


async def _rows(merchant_id: int, ids: list[int]) -> list[MemberRow]:
    """Preview rows of these members, in the order given."""
    if not ids:
        return []
    members = {m.id: m for m in await Member.filter(id__in=ids)}
    points = dict(await PointsAccount.filter(member_id__in=ids).values_list("member_id", "balance"))
    held = dict(await MemberTier.filter(member_id__in=ids).values_list("member_id", "tier_id"))
    tiers = await active_tiers(merchant_id=merchant_id)
    rows = []
    for member_id in ids:
        member = members[member_id]
        tier = tier_by_id(tiers, held.get(member_id))
        rows.append(
            MemberRow(
                id=member_id,
                name=member.name,
                phone_masked=mask_phone(member.phone),
                tier_code=tier.code if tier is not None else None,
                tier_name=tier.name if tier is not None else None,
                points=int(points.get(member_id, 0)),
            )
        )
    return rows


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise Unprocessable(f"limit is 1 to {MAX_PAGE}", code="request.invalid", field="limit")
    return limit


async def preview(*, scope: Scope, segment_id: int, limit: int, after: int) -> tuple[int, list[MemberRow]]:
    """The total, and one page of matching members after the member id `after`."""
    total = await count_members(scope=scope, segment_id=segment_id)
    ids = await member_ids(scope=scope, segment_id=segment_id, after=after, limit=_limit(limit))
    return total, await _rows(scope.merchant_id, ids)


async def export_csv(*, scope: Scope, segment_id: int) -> AsyncIterator[str]:
    """The members export's CSV of the segment's members in the scope, a thousand a query."""
    segment = await _visible_segment(scope, segment_id)

    async def batch(after: int) -> list[Member]:
        ids = await _ids(scope, segment.definition, after, EXPORT_BATCH)
        return list(await Member.filter(id__in=ids).order_by("id")) if ids else []

    async for chunk in members_csv(merchant_id=scope.merchant_id, batch=batch):
        yield chunk


async def take_snapshot(*, scope: Scope, segment_id: int, staff_id: int | None) -> SegmentSnapshot:
    """Freeze the segment's current members in the scope: INSERT ... SELECT per member-id range, one transaction."""
    segment = await _visible_segment(scope, segment_id)
    if segment.status != "active":
        raise Conflict("the segment is archived", code="segment.archived")
    where, params = await _where(scope, segment.definition)
    async with in_transaction():
        snapshot = await SegmentSnapshot.create(
            segment_id=segment.id,
            merchant_id=scope.merchant_id,
            store_id=scope.store_id,
            definition=segment.definition,
            created_by=staff_id,
        )
        after, total = 0, 0
        while True:
            bound = (  # the last member id of the next range
                "SELECT MAX(x.id) FROM (SELECT id FROM member WHERE merchant_id = %s AND id > %s"
                " ORDER BY id LIMIT %s) x"
            )
            found = await sqlpath.run([Stmt(bound, (scope.merchant_id, after, SNAPSHOT_BATCH), rows=True)])
            upper = found.rows[0][0][0]
            if upper is None:
                break
            insert = (
                "INSERT INTO segment_snapshot_member (snapshot_id, member_id)"  # noqa: S608
                f" SELECT %s, m.id FROM member m WHERE {where} AND m.id > %s AND m.id <= %s"
            )
            done = await sqlpath.run([Stmt(insert, (snapshot.id, *params, after, int(upper)))])
            total += done.counts[-1]
            after = int(upper)
        await SegmentSnapshot.filter(id=snapshot.id).update(member_count=total)
    return await SegmentSnapshot.get(id=snapshot.id)


async def get_snapshot(*, scope: Scope, segment_id: int, snapshot_id: int) -> SegmentSnapshot:
    """A snapshot of the segment; a store-scoped role sees only those taken for its store."""
    segment = await _visible_segment(scope, segment_id)
    query = SegmentSnapshot.filter(id=snapshot_id, segment_id=segment.id, merchant_id=scope.merchant_id)
    if scope.store_id is not None:
        query = query.filter(store_id=scope.store_id)
    snapshot = await query.first()
    if snapshot is None:
        raise NotFound("snapshot not found", code="segment.snapshot_not_found")
    return snapshot


async def snapshot_members(
    *, scope: Scope, segment_id: int, snapshot_id: int, limit: int, after: int
) -> tuple[SegmentSnapshot, list[MemberRow]]:
    """One page of a snapshot's members after the member id `after` (as they are now: name, tier, points)."""
    snapshot = await get_snapshot(scope=scope, segment_id=segment_id, snapshot_id=snapshot_id)
    ids: list[Any] = list(
        await SegmentSnapshotMember.filter(snapshot_id=snapshot.id, member_id__gt=after)
        .order_by("member_id")
        .limit(_limit(limit))
        .values_list("member_id", flat=True)
    )
    return snapshot, await _rows(scope.merchant_id, [int(i) for i in ids])
