"""Tag definitions and manual tagging: one member, or in bulk by member ids or phones; each change on the timeline.

Writers of one tag's members serialise on the tag row (FOR UPDATE on MySQL; SQLite has one writer), and the
(tag_id, member_id) key with INSERT IGNORE is the backstop: adding a tag twice changes nothing and is never a
count-then-insert.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from models.kernel import clock, sqlpath
from models.kernel.errors import Conflict, NotFound, Unprocessable
from models.kernel.outbox import enqueue
from models.kernel.sqlpath import Stmt
from models.members.members import Member, ensure_visible, member_rows
from models.members.timeline import MemberActivity, record
from models.segments.rules import load_context, validate_rule
from models.segments.segments import get_segment
from models.segments.segments import member_ids as segment_member_ids
from models.segments.tables import MemberTag, Tag
from models.tenancy.visibility import Scope

CODE_PATTERN = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
EVALUATE_TOPIC = "segments.evaluate_tag"  # a new rule tag: its members computed once, off the request
MAX_BULK = 10_000


async def create_tag(*, merchant_id: int, code: str, name: str, kind: str, rule: Any, staff_id: int | None) -> Tag:
    """A manual tag, or a rule tag whose rule is checked (422 with its path) and evaluated for all members soon."""
    if kind == "rule":
        if rule is None:
            raise Unprocessable("a rule tag needs a rule", code="rule.invalid", field="rule")
        rule = validate_rule(rule, context=await load_context(merchant_id=merchant_id))
    elif rule is not None:
        raise Unprocessable("a manual tag has no rule", code="tag.rule_unexpected", field="rule")
    try:
        async with in_transaction():
            tag = await Tag.create(
                merchant_id=merchant_id, code=code, name=name, kind=kind, rule=rule, created_by=staff_id
            )
            if kind == "rule":
                await enqueue(
                    merchant_id=merchant_id,
                    topic=EVALUATE_TOPIC,
                    payload={"tag_id": tag.id},
                    coalesce_key=f"tag:{tag.id}",
                )
    except IntegrityError:
        raise Conflict("another tag already has this code", code="tag.code_taken", field="code") from None
    return tag


async def list_tags(*, merchant_id: int, status: str | None = None) -> list[Tag]:
    query = Tag.filter(merchant_id=merchant_id)
    if status is not None:
        query = query.filter(status=status)
    return await query.order_by("id")


async def get_tag(*, merchant_id: int, tag_id: int) -> Tag:
    tag = await Tag.filter(id=tag_id, merchant_id=merchant_id).first()
    if tag is None:
        raise NotFound("tag not found", code="tag.not_found")
    return tag


async def update_tag(*, merchant_id: int, tag_id: int, name: str | None, archived: bool | None) -> Tag:
    """Rename, archive or restore a tag; an archived tag keeps its rows but takes no new ones (a rule tag restored is
    evaluated again for every member)."""
    tag = await get_tag(merchant_id=merchant_id, tag_id=tag_id)
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = name
    if archived is not None:
        changes["status"] = "archived" if archived else "active"
    if changes:
        async with in_transaction():
            await Tag.filter(id=tag.id).update(**changes)
            if tag.kind == "rule" and tag.status == "archived" and archived is False:  # restored: catch up
                await enqueue(
                    merchant_id=merchant_id,
                    topic=EVALUATE_TOPIC,
                    payload={"tag_id": tag.id},
                    coalesce_key=f"tag:{tag.id}",
                )
    return await Tag.get(id=tag.id)


async def lock_tag(*, tag_id: int) -> None:
    """Inside a transaction: wait for other writers of this tag's members (no-op on SQLite's single writer)."""
    if sqlpath.dialect() == "mysql":
        await sqlpath.run([Stmt("SELECT id FROM tag WHERE id = %s FOR UPDATE", (tag_id,), rows=True)])


def insert_ignore(rows: int) -> str:
    """INSERT of `rows` member_tag rows, skipping those the (tag_id, member_id) key already has."""
    verb = "INSERT IGNORE" if sqlpath.dialect() == "mysql" else "INSERT OR IGNORE"
    values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * rows)
    return f"{verb} INTO member_tag (merchant_id, member_id, tag_id, source, added_by, added_at) VALUES {values}"


def _manual(tag: Tag) -> None:
    if tag.kind == "rule":
        raise Conflict("a rule tag's members follow its rule", code="tag.rule_managed")
    if tag.status != "active":
        raise Conflict("the tag is archived", code="tag.archived")


def _detail(tag: Tag) -> dict[str, Any]:
    return {"tag_id": tag.id, "code": tag.code, "name": tag.name, "source": tag.kind}


async def add_member_tag(*, scope: Scope, member_id: int, tag_id: int, staff_id: int) -> bool:
    """Tag one visible member with a manual tag; False when the member had it already (nothing changed)."""
    await ensure_visible(scope=scope, member_id=member_id)
    tag = await get_tag(merchant_id=scope.merchant_id, tag_id=tag_id)
    _manual(tag)
    now = clock.now()
    async with in_transaction():
        await lock_tag(tag_id=tag.id)
        done = await sqlpath.run(
            [Stmt(insert_ignore(1), (scope.merchant_id, member_id, tag.id, "manual", staff_id, sqlpath.db_time(now)))]
        )
        if done.counts[-1] != 1:
            return False
        await record(
            merchant_id=scope.merchant_id,
            member_id=member_id,
            kind="tag_added",
            actor=f"staff:{staff_id}",
            detail=_detail(tag),
        )
    return True


async def remove_member_tag(*, scope: Scope, member_id: int, tag_id: int, staff_id: int) -> bool:
    """Take a manual tag off one visible member; False when the member did not have it."""
    await ensure_visible(scope=scope, member_id=member_id)
    tag = await get_tag(merchant_id=scope.merchant_id, tag_id=tag_id)
    if tag.kind == "rule":
        raise Conflict("a rule tag's members follow its rule", code="tag.rule_managed")
    async with in_transaction():
        await lock_tag(tag_id=tag.id)
        removed = await MemberTag.filter(tag_id=tag.id, member_id=member_id).delete()
        if not removed:
            return False
        await record(
            merchant_id=scope.merchant_id,
            member_id=member_id,
            kind="tag_removed",
            actor=f"staff:{staff_id}",
            detail=_detail(tag),
        )
    return True


@dataclass(frozen=True)
class MemberTagView:
    tag: Tag
    source: str
    added_by: int | None
    added_at: Any


async def member_tags(*, scope: Scope, member_id: int) -> list[MemberTagView]:
    """A visible member's active tags, each with where it came from (a rule tag carries its rule)."""
    await ensure_visible(scope=scope, member_id=member_id)
    rows = await MemberTag.filter(member_id=member_id, **member_rows(scope)).order_by("added_at", "id")
    tags = {t.id: t for t in await Tag.filter(id__in=[r.tag_id for r in rows], status="active")}
    return [MemberTagView(tags[r.tag_id], r.source, r.added_by, r.added_at) for r in rows if r.tag_id in tags]


@dataclass
class BulkResult:
    added: int = 0
    already: int = 0
    unknown: list[tuple[int, str]] = field(default_factory=list)  # (line, the id or phone as given)


async def _resolve(scope: Scope, *, ids: list[tuple[int, int]], phones: list[tuple[int, str]]) -> dict[int, int]:
    """Member id of each line whose member exists and is visible in the scope.

    A value no member can have (an id outside 1..2**31-1, a phone longer than the column) is simply unknown.
    """
    phone_max = Member._meta.fields_map["phone"].max_length  # type: ignore[attr-defined]
    ids = [(line, i) for line, i in ids if 1 <= i < 2**31]
    phones = [(line, p) for line, p in phones if 0 < len(p) <= phone_max]
    found: dict[int, int] = {}
    for start in range(0, max(len(ids), len(phones)), 1000):
        if ids:
            chunk = ids[start : start + 1000]
            known = set(
                await Member.filter(id__in=[i for _, i in chunk], **scope.members()).values_list("id", flat=True)
            )
            found.update({line: member_id for line, member_id in chunk if member_id in known})
        if phones:
            part = phones[start : start + 1000]
            pairs = await Member.filter(phone__in=[p for _, p in part], **scope.members()).values_list("phone", "id")
            by_phone = {str(phone): int(member_id) for phone, member_id in pairs}
            found.update({line: by_phone[phone] for line, phone in part if phone in by_phone})
    return found


async def bulk_add(
    *, scope: Scope, tag_id: int, staff_id: int, member_ids: list[tuple[int, int]], phones: list[tuple[int, str]]
) -> BulkResult:
    """Tag many members with a manual tag (lines of ids or phones): how many were added, had it, are unknown."""
    if len(member_ids) + len(phones) > MAX_BULK:
        raise Unprocessable(f"at most {MAX_BULK} members at once", code="tag.bulk_too_large")
    tag = await get_tag(merchant_id=scope.merchant_id, tag_id=tag_id)
    _manual(tag)
    resolved = await _resolve(scope, ids=member_ids, phones=phones)
    result = BulkResult()
    result.unknown = [(line, str(given)) for line, given in [*member_ids, *phones] if line not in resolved]
    result.unknown.sort()
    wanted = list(dict.fromkeys(resolved[line] for line in sorted(resolved)))
    result.already = len(resolved) - len(wanted)  # a member named twice in the list has it from its first line
    async with in_transaction():
        await lock_tag(tag_id=tag.id)
        for start in range(0, len(wanted), 1000):
            await _add_batch(scope, tag, staff_id, wanted[start : start + 1000], result)
    return result


async def _add_batch(scope: Scope, tag: Tag, staff_id: int, chunk: list[int], result: BulkResult) -> None:
    """Inside the tag's lock: tag these members (each added one on its timeline), counting who had it already."""
    having = set(await MemberTag.filter(tag_id=tag.id, member_id__in=chunk).values_list("member_id", flat=True))
    fresh = [member_id for member_id in chunk if member_id not in having]
    result.already += len(chunk) - len(fresh)
    if not fresh:
        return
    now = clock.now()
    params: list[Any] = []
    for member_id in fresh:
        params += [scope.merchant_id, member_id, tag.id, "manual", staff_id, sqlpath.db_time(now)]
    await sqlpath.run([Stmt(insert_ignore(len(fresh)), tuple(params))])
    await MemberActivity.bulk_create(
        [
            MemberActivity(
                merchant_id=scope.merchant_id,
                member_id=member_id,
                kind="tag_added",
                actor=f"staff:{staff_id}",
                detail=_detail(tag),
            )
            for member_id in fresh
        ]
    )
    result.added += len(fresh)


async def bulk_add_segment(*, scope: Scope, tag_id: int, segment_id: int, staff_id: int) -> BulkResult:
    """Tag every member of a segment (in the caller's scope, as it matches now) with a manual tag, a thousand
    members a transaction; sending it again adds nothing."""
    tag = await get_tag(merchant_id=scope.merchant_id, tag_id=tag_id)
    _manual(tag)
    await get_segment(merchant_id=scope.merchant_id, segment_id=segment_id)
    result, after = BulkResult(), 0
    while True:
        chunk = await segment_member_ids(scope=scope, segment_id=segment_id, after=after, limit=1000)
        if not chunk:
            return result
        async with in_transaction():
            await lock_tag(tag_id=tag.id)
            await _add_batch(scope, tag, staff_id, chunk, result)
        after = chunk[-1]
