"""Rule tags kept current: whole-merchant evaluation in member-id batches, one member's after a change, nightly.

A change that can move a rule's answer (a points or balance entry, a purchase through its points entry, a tier
move, a profile edit) only queues `segments.member_changed` for the member (coalesced), in the change's
transaction; the outbox worker re-evaluates that member's rule tags after the commit, off the hot path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from models.kernel import clock, sqlpath
from models.kernel.outbox import OutboxMessage, enqueue
from models.kernel.sqlpath import Stmt
from models.ledger import books as ledger
from models.members.members import Member
from models.members.timeline import MemberActivity
from models.segments.rules import is_timely
from models.segments.rules_sql import compile_rule
from models.segments.tables import MemberTag, Tag
from models.segments.tags import insert_ignore, lock_tag
from models.tenancy.merchants import merchant_zone
from models.tiers.standing import active_tiers, tier_for_value

log = logging.getLogger("huiyuan.segments")

MEMBER_CHANGED_TOPIC = "segments.member_changed"
BATCH_MEMBERS = 2000


@dataclass
class Evaluation:
    added: int = 0
    removed: int = 0
    members: int = 0  # members looked at


async def _has_rule_tags(merchant_id: int) -> bool:
    return await Tag.exists(merchant_id=merchant_id, kind="rule", status="active")


async def _apply(tag: Tag, member_ids: list[int], condition: str, params: list[Any], result: Evaluation) -> None:
    """Make the tag's members among `member_ids` exactly those the condition matches; the timeline says so."""
    if not member_ids:
        return
    marks = ", ".join(["%s"] * len(member_ids))
    async with in_transaction():
        await lock_tag(tag_id=tag.id)
        matched_rows, having_rows = (
            await sqlpath.run(
                [
                    Stmt(
                        f"SELECT m.id FROM member m WHERE m.merchant_id = %s AND m.id IN ({marks}) AND {condition}",  # noqa: S608
                        (tag.merchant_id, *member_ids, *params),
                        rows=True,
                    ),
                    Stmt(
                        f"SELECT member_id FROM member_tag WHERE tag_id = %s AND member_id IN ({marks})",  # noqa: S608
                        (tag.id, *member_ids),
                        rows=True,
                    ),
                ]
            )
        ).rows
        matched = {int(row[0]) for row in matched_rows}
        having = {int(row[0]) for row in having_rows}
        fresh, gone = sorted(matched - having), sorted(having - matched)
        now = sqlpath.db_time(clock.now())
        if fresh:
            values: list[Any] = []
            for member_id in fresh:
                values += [tag.merchant_id, member_id, tag.id, "rule", None, now]
            await sqlpath.run([Stmt(insert_ignore(len(fresh)), tuple(values))])
        if gone:
            await MemberTag.filter(tag_id=tag.id, member_id__in=gone).delete()
        detail = {"tag_id": tag.id, "code": tag.code, "name": tag.name, "source": "rule"}
        await MemberActivity.bulk_create(
            [
                MemberActivity(merchant_id=tag.merchant_id, member_id=member_id, kind=kind, detail=detail)
                for kind, ids in (("tag_added", fresh), ("tag_removed", gone))
                for member_id in ids
            ]
        )
    result.added += len(fresh)
    result.removed += len(gone)
    result.members += len(member_ids)


async def evaluate_tag(*, tag: Tag, member_ids: list[int] | None = None) -> Evaluation:
    """Apply a rule tag to the whole merchant (in member-id batches) or only to the given members."""
    result = Evaluation()
    if tag.kind != "rule" or tag.status != "active" or tag.rule is None:
        return result
    zone = await merchant_zone(merchant_id=tag.merchant_id)
    entry = tier_for_value(await active_tiers(merchant_id=tag.merchant_id), 0)
    condition, params = compile_rule(
        tag.rule,
        now=clock.now(),
        zone=zone,
        dialect=sqlpath.dialect(),
        entry_tier_id=entry.id if entry is not None else None,
    )
    if member_ids is not None:
        await _apply(tag, sorted(set(member_ids)), condition, params, result)
        return result
    after = 0
    while True:
        batch: list[Any] = list(
            await Member.filter(merchant_id=tag.merchant_id, id__gt=after)
            .order_by("id")
            .limit(BATCH_MEMBERS)
            .values_list("id", flat=True)
        )
        if not batch:
            break
        await _apply(tag, [int(i) for i in batch], condition, params, result)
        after = int(batch[-1])
        log.info("tag %s: %s members evaluated (+%s -%s)", tag.id, result.members, result.added, result.removed)
    await Tag.filter(id=tag.id).update(evaluated_at=clock.now())
    return result


async def evaluate_tag_by_id(*, tag_id: int) -> Evaluation:
    """The whole-merchant evaluation of one rule tag (a new rule tag's first)."""
    tag = await Tag.filter(id=tag_id).first()
    return Evaluation() if tag is None else await evaluate_tag(tag=tag)


async def evaluate_member(*, merchant_id: int, member_id: int) -> int:
    """Re-evaluate every active rule tag of the merchant for one member; how many tags changed for it."""
    changed = 0
    for tag in await Tag.filter(merchant_id=merchant_id, kind="rule", status="active").order_by("id"):
        result = await evaluate_tag(tag=tag, member_ids=[member_id])
        changed += result.added + result.removed
    return changed


async def refresh_timely_tags(*, merchant_id: int | None = None) -> tuple[int, Evaluation]:
    """Re-evaluate, for all members, every rule tag whose answer moves with the clock (age, days ago, windows)."""
    query = Tag.filter(kind="rule", status="active")
    if merchant_id is not None:
        query = query.filter(merchant_id=merchant_id)
    total, tags = Evaluation(), 0
    for tag in await query.order_by("id"):
        if tag.rule is None or not is_timely(tag.rule):
            continue
        result = await evaluate_tag(tag=tag)
        tags += 1
        total.added, total.removed, total.members = (
            total.added + result.added,
            total.removed + result.removed,
            total.members + result.members,
        )
        log.info("segments.refresh: tag %s done (+%s -%s)", tag.id, result.added, result.removed)
    return tags, total


async def enqueue_member_changed(*, merchant_id: int, member_id: int) -> None:
    """Queue one re-evaluation of the member's rule tags (coalesced), when the merchant has any rule tag."""
    if not await _has_rule_tags(merchant_id):
        return
    await enqueue(
        merchant_id=merchant_id,
        topic=MEMBER_CHANGED_TOPIC,
        payload={"member_id": member_id},
        coalesce_key=f"segments:{member_id}",
    )


async def on_ledger_entry(book: str, entry: ledger._Entry) -> None:
    """A points or balance entry (a purchase's points among them) queues the member's rule tags."""
    await enqueue_member_changed(merchant_id=entry.merchant_id, member_id=entry.member_id)


async def entry_statements(book: str, entry: ledger.NewEntry) -> list[Stmt] | None:
    """on_ledger_entry for a batched write: one conditional INSERT riding in the same round trip.

    Queued exactly when enqueue_member_changed would: the merchant has an active rule tag and no re-evaluation of
    this member is pending.
    """
    key, now = f"segments:{entry.member_id}", sqlpath.db_time(clock.now())
    payload = OutboxMessage._meta.fields_map["payload"].to_db_value({"member_id": entry.member_id}, OutboxMessage)
    return [
        Stmt(
            "INSERT INTO outbox_message (merchant_id, topic, payload, coalesce_key, status, attempts, next_attempt_at,"
            " locked_until, last_error, created_at, delivered_at)"
            " SELECT %s, %s, %s, %s, 'pending', 0, %s, NULL, '', %s, NULL FROM tag t"
            " WHERE t.merchant_id = %s AND t.kind = 'rule' AND t.status = 'active' AND NOT EXISTS (SELECT 1 FROM"
            " outbox_message o WHERE o.coalesce_key = %s AND o.status = 'pending') LIMIT 1",
            (entry.merchant_id, MEMBER_CHANGED_TOPIC, payload, key, now, now, entry.merchant_id, key),
        )
    ]


async def on_tier_changed(*, merchant_id: int, member_id: int) -> None:
    """A tier move queues the member's rule tags."""
    await enqueue_member_changed(merchant_id=merchant_id, member_id=member_id)


async def on_profile_changed(*, merchant_id: int, member_id: int) -> None:
    """A profile edit (gender, birthday, custom fields…) queues the member's rule tags."""
    await enqueue_member_changed(merchant_id=merchant_id, member_id=member_id)
