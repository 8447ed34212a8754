"""The member card follows points, balance, tier and usable coupons: a coalesced outbox sync, sent with the state
at delivery."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.cards.template import official_client, wechat_errors
from models.coupons.redemption import count_usable
from models.kernel import clock, sqlpath
from models.kernel.outbox import OutboxMessage, enqueue
from models.kernel.sqlpath import Stmt
from models.ledger import books as ledger
from models.members.member_card import MemberCard
from models.tiers.standing import tier_name
from wechat import card as card_api

if TYPE_CHECKING:
    from wechat.gateway import WeChatGateway

SYNC_TOPIC = "card.sync"
RECORD_REASON_CHARS = 24


async def on_ledger_entry(book: str, entry: ledger._Entry) -> None:
    """Every points or balance change of a member with an activated card queues one card sync (coalesced)."""
    await enqueue_card_sync(merchant_id=entry.merchant_id, member_id=entry.member_id, book=book)


async def entry_statements(book: str, entry: ledger.NewEntry) -> list[Stmt] | None:
    """on_ledger_entry for a batched write: enqueue_card_sync as two conditional statements.

    The pending sync (if any) of a member with an activated card learns this book; else one is queued, through
    the outbox in the same transaction, exactly when enqueue_card_sync would queue it.
    """
    key, now = f"card:{entry.member_id}", sqlpath.db_time(clock.now())
    activated = "EXISTS (SELECT 1 FROM member_card c WHERE c.member_id = %s AND c.status = 'activated')"
    if sqlpath.dialect() == "mysql":
        learn = (
            "UPDATE outbox_message SET payload = JSON_ARRAY_APPEND(payload, '$.books', %s)"
            " WHERE coalesce_key = %s AND status = 'pending' AND NOT JSON_CONTAINS(payload, JSON_QUOTE(%s), '$.books')"
        )
    else:
        learn = (
            "UPDATE outbox_message SET payload = json_insert(payload, '$.books[#]', %s)"
            " WHERE coalesce_key = %s AND status = 'pending'"
            " AND NOT EXISTS (SELECT 1 FROM json_each(payload, '$.books') WHERE value = %s)"
        )
    payload = OutboxMessage._meta.fields_map["payload"].to_db_value(
        {"member_id": entry.member_id, "books": [book]}, OutboxMessage
    )
    return [
        Stmt(f"{learn} AND {activated}", (book, key, book, entry.member_id)),
        Stmt(
            "INSERT INTO outbox_message (merchant_id, topic, payload, coalesce_key, status, attempts, next_attempt_at,"
            " locked_until, last_error, created_at, delivered_at)"
            " SELECT %s, %s, %s, %s, 'pending', 0, %s, NULL, '', %s, NULL FROM member_card c"
            " WHERE c.member_id = %s AND c.status = 'activated' AND NOT EXISTS (SELECT 1 FROM outbox_message o"
            " WHERE o.coalesce_key = %s AND o.status = 'pending') LIMIT 1",
            (entry.merchant_id, SYNC_TOPIC, payload, key, now, now, entry.member_id, key),
        ),
    ]


async def on_tier_changed(*, merchant_id: int, member_id: int) -> None:
    """A tier move of a member with an activated card queues one card sync (coalesced)."""
    await enqueue_card_sync(merchant_id=merchant_id, member_id=member_id, book="tier")


async def on_coupons_changed(*, members: Sequence[tuple[int, int]]) -> None:
    """A change of usable coupons queues one card sync (coalesced) per member with an activated card.

    One query finds which of the members have one, however many the change touched (the expiry job's batch).
    """
    ids = [member_id for _, member_id in members]
    rows = await MemberCard.filter(member_id__in=ids, status="activated").values_list("member_id", flat=True)
    carded = {int(member_id) for member_id in rows}  # type: ignore[call-overload]
    for merchant_id, member_id in members:
        if member_id in carded:
            await _enqueue(merchant_id=merchant_id, member_id=member_id, book="coupons")


async def enqueue_card_sync(*, merchant_id: int, member_id: int, book: str) -> None:
    """Queue one coalesced card sync of a member with an activated card ("points", "balance", "tier" or "coupons")."""
    if not await MemberCard.exists(member_id=member_id, status="activated"):
        return
    await _enqueue(merchant_id=merchant_id, member_id=member_id, book=book)


async def _enqueue(*, merchant_id: int, member_id: int, book: str) -> None:
    key = f"card:{member_id}"
    queued = await enqueue(
        merchant_id=merchant_id,
        topic=SYNC_TOPIC,
        payload={"member_id": member_id, "books": [book]},
        coalesce_key=key,
    )
    if queued is None:  # a pending sync will read the latest state; it must also notify this book
        pending = await OutboxMessage.filter(coalesce_key=key, status="pending").order_by("id").first()
        if pending is not None and book not in pending.payload.get("books", []):
            books = [*pending.payload.get("books", []), book]
            await OutboxMessage.filter(id=pending.id, status="pending").update(
                payload={**pending.payload, "books": books}
            )


def _record_text(entry: ledger.PointsEntry | ledger.BalanceEntry | None, *, fen: bool) -> str:
    if entry is None:
        return ""
    sign = "+" if entry.delta > 0 else "-"
    amount = abs(entry.delta)
    figure = f"{amount // 100}.{amount % 100:02d}元" if fen else str(amount)
    return f"{entry.reason[:RECORD_REASON_CHARS]} {sign}{figure}"


async def sync_card(*, wechat: WeChatGateway, member_id: int, books: list[str]) -> None:
    """card/membercard/updateuser with the points, balance, tier and usable coupons at delivery time (the latest
    state wins); WeChat notifies the member of what the books say changed."""
    card = await MemberCard.filter(member_id=member_id, status="activated").order_by("-id").first()
    if card is None:
        return
    points, balance = await ledger.get_balances(member_id=member_id)
    last_points = await ledger.PointsEntry.filter(member_id=member_id).order_by("-id").first()
    last_balance = await ledger.BalanceEntry.filter(member_id=member_id).order_by("-id").first()
    client = await official_client(wechat=wechat, merchant_id=card.merchant_id)
    with wechat_errors():
        await card_api.update_user(
            client,
            card_id=card.card_id,
            code=card.code,
            bonus=points,
            balance=balance,
            tier=await tier_name(merchant_id=card.merchant_id, member_id=member_id),
            coupons=await count_usable(member_id=member_id),
            record_bonus=_record_text(last_points, fen=False) if "points" in books else "",
            record_balance=_record_text(last_balance, fen=True) if "balance" in books else "",
            notify_bonus="points" in books,
            notify_balance="balance" in books,
            notify_coupons="coupons" in books,
        )
