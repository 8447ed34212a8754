"""Card events from WeChat (claim, delete, view, session, form submitted), run in the callback's transaction."""

from __future__ import annotations

import logging
from typing import Any, TypeVar, cast

from tortoise.exceptions import IntegrityError
from tortoise.models import Model
from tortoise.transactions import in_transaction

from models.cards.template import CardTemplate
from models.kernel import clock
from models.kernel.outbox import enqueue
from models.members.member_card import MemberCard
from models.members.members import Member, register_wechat_member
from models.members.timeline import record
from models.tenancy.merchants import Store
from wechat.events import OAEvent, Reply

log = logging.getLogger("huiyuan.cards")

ACTIVATE_TOPIC = "card.activate"
ModelT = TypeVar("ModelT", bound=Model)


async def _known_card(event: OAEvent) -> tuple[str, str] | None:
    """(card_id, code) when the event is about this merchant's card and names a code, else None (logged)."""
    card_id, code = event.message.get("CardId", ""), event.message.get("UserCardCode", "")
    if not card_id or not await CardTemplate.exists(merchant_id=event.merchant_id, card_id=card_id):
        log.info("%s for unknown card %r (merchant %s) ignored", event.kind, card_id, event.merchant_id)
        return None
    if not code or len(code) > 32:
        log.info("%s without a usable code for card %s ignored", event.kind, card_id)
        return None
    return card_id, code


async def _member_for(*, merchant_id: int, openid: str, store_id: int | None) -> Member:
    member, _ = await register_wechat_member(
        merchant_id=merchant_id, openid=openid, origin_store_id=store_id, source="card"
    )
    return member


async def _committed(model: type[ModelT], **filters: Any) -> ModelT | None:
    """The row a concurrent transaction committed first (sessions run READ COMMITTED, see server/db.py)."""
    return await model.filter(**filters).first()


async def claim_card(
    *, merchant_id: int, card_id: str, code: str, openid: str, outer_str: str, restore: bool = False
) -> MemberCard:
    """Link a claimed card code to the member behind openid (registered if new); a known code is returned as it is.

    Call inside a transaction. OuterStr names the store the claim QR code belongs to; a restored card
    (IsRestoreMemberCard) that was removed comes back in its earlier state.
    """
    existing = await MemberCard.get_or_none(card_id=card_id, code=code)
    if existing is not None:
        if restore and existing.status == "removed":
            existing.status = "activated" if existing.activated_at else "claimed"
            existing.removed_at = None
            await existing.save(update_fields=["status", "removed_at"])
            await record(
                merchant_id=merchant_id,
                member_id=existing.member_id,
                kind="card_restored",
                actor="wechat",
                detail={"card_id": card_id, "code": code},
            )
        return existing
    store_id = None
    if outer_str:
        store_id = cast(  # flat values_list of first(): one id or None
            int | None,
            await Store.filter(merchant_id=merchant_id, code=outer_str).first().values_list("id", flat=True),
        )
    member = await _member_for(merchant_id=merchant_id, openid=openid, store_id=store_id)
    try:
        async with in_transaction():  # a savepoint: losing the race leaves the caller's transaction usable
            card = await MemberCard.create(
                merchant_id=merchant_id, member_id=member.id, card_id=card_id, code=code, store_id=store_id
            )
    except IntegrityError:
        found = await _committed(MemberCard, card_id=card_id, code=code)
        if found is None:
            raise
        return found
    await record(
        merchant_id=merchant_id,
        member_id=member.id,
        kind="card_claimed",
        actor="wechat",
        detail={"card_id": card_id, "code": code, "store_id": store_id, "outer_str": outer_str},
    )
    return card


async def on_card_claimed(event: OAEvent) -> Reply | None:
    """A follower put the card into the card wallet: member (new or known) and card code linked once."""
    known = await _known_card(event)
    if known is not None:
        await claim_card(
            merchant_id=event.merchant_id,
            card_id=known[0],
            code=known[1],
            openid=event.openid,
            outer_str=(event.message.get("OuterStr") or "")[:32],
            restore=event.message.get("IsRestoreMemberCard") == "1",
        )
    return None


async def on_card_removed(event: OAEvent) -> Reply | None:
    """The member deleted the card from the wallet: kept, marked removed."""
    known = await _known_card(event)
    card = await MemberCard.get_or_none(card_id=known[0], code=known[1]) if known else None
    if card is None or card.status == "removed":
        return None
    await MemberCard.filter(id=card.id).update(status="removed", removed_at=clock.now())
    await record(
        merchant_id=event.merchant_id,
        member_id=card.member_id,
        kind="card_removed",
        actor="wechat",
        detail={"card_id": card.card_id, "code": card.code},
    )
    return None


async def on_card_visit(event: OAEvent) -> Reply | None:
    """Opening the card, or the chat from it, goes on the member's timeline (analytics) and changes nothing."""
    known = await _known_card(event)
    if known is None:
        return None
    card = await MemberCard.get_or_none(card_id=known[0], code=known[1])
    member_id = card.member_id if card else None
    if member_id is None:
        member_id = cast(  # flat values_list of first(): one id or None
            int | None,
            await Member.filter(merchant_id=event.merchant_id, openid=event.openid)
            .first()
            .values_list("id", flat=True),
        )
    if member_id is None:
        return None
    await record(
        merchant_id=event.merchant_id,
        member_id=member_id,
        kind="card_viewed" if event.kind == "event:user_view_card" else "card_session",
        actor="wechat",
        detail={"card_id": known[0], "code": known[1]},
    )
    return None


async def on_activation_form(event: OAEvent) -> Reply | None:
    """The member submitted the one-tap activation form: activation is queued (it needs WeChat calls)."""
    known = await _known_card(event)
    if known is None:
        return None
    card_id, code = known
    card = await claim_card(
        merchant_id=event.merchant_id, card_id=card_id, code=code, openid=event.openid, outer_str=""
    )  # the claim event may have been lost: WeChat only lets card holders submit
    if card.status == "removed":
        return None
    await enqueue(
        merchant_id=event.merchant_id,
        topic=ACTIVATE_TOPIC,
        payload={
            "merchant_id": event.merchant_id,
            "card_id": card_id,
            "code": code,
            "openid": event.openid,
            "activate_ticket": event.message.get("ActivateTicket") or "",
        },
        coalesce_key=f"activate:{card_id}:{code}",
    )
    return None
