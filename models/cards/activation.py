"""One-tap activation of the member card: the form onto the member, welcome and referral rewards once, WeChat told."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast

from tortoise.transactions import in_transaction

from models.cards.template import CardTemplate, official_client, wechat_errors
from models.coupons.issue import grant_gift_coupons
from models.coupons.redemption import count_usable
from models.kernel import clock
from models.kernel.errors import Conflict, Forbidden, NotFound, Unprocessable
from models.kernel.outbox import OutboxMessage, enqueue
from models.ledger import books as ledger
from models.members.custom_fields import CustomFieldDef, list_fields
from models.members.member_card import MemberCard
from models.members.members import Member, update_member
from models.members.timeline import record
from models.tenancy.onboarding_settings import get_onboarding_settings
from models.tiers.standing import tier_name
from wechat import card as card_api

if TYPE_CHECKING:
    from wechat.gateway import WeChatGateway

log = logging.getLogger("huiyuan.cards")

ACTIVATE_CALL_TOPIC = "card.activate_call"
MOBILE, NAME, BIRTHDAY, SEX = card_api.COMMON_FIELDS
GENDERS = {"男": "male", "male": "male", "1": "male", "女": "female", "female": "female", "2": "female"}
TRUE_WORDS, FALSE_WORDS = ("是", "true", "yes", "1"), ("否", "false", "no", "0")


class ActivationRejected(Unprocessable):
    """The submitted form cannot activate the card (a required field is missing, a value is invalid or taken)."""

    code = "card.activation_rejected"


@dataclass(frozen=True)
class CardState:
    """A member's card with the values shown on it."""

    card: MemberCard
    points: int
    balance: int  # fen
    tier_name: str


class _AlreadyActivated(Exception):
    """Another activation of the same card committed first."""


def _submitted(info: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """Form item (common flag or custom key) → the value the member entered."""
    key_of = {label: key for key, label in labels.items()}
    values: dict[str, str] = {}
    for group in ("common_field_list", "custom_field_list"):
        for entry in info.get(group) or []:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("name") or "")
            value = entry.get("value")
            if value in (None, "") and entry.get("value_list"):
                value = ",".join(str(v) for v in entry["value_list"])
            item = name if group == "common_field_list" else key_of.get(name, name)
            if value not in (None, ""):
                values[item] = str(value).strip()
    return values


def _custom_value(definition: CustomFieldDef, text: str) -> Any:
    if definition.type == "int":
        try:
            return int(text)
        except ValueError:
            return text  # validate_values names the field
    if definition.type == "bool":
        lowered = text.lower()
        return True if lowered in TRUE_WORDS else False if lowered in FALSE_WORDS else text
    return text


def _birthday(text: str) -> date:
    for parse in (date.fromisoformat, lambda t: datetime.strptime(t, "%Y%m%d").date()):
        try:
            return parse(text)
        except ValueError:
            continue
    raise ActivationRejected(f"birthday {text!r} is not a date", code="card.value_invalid", field=BIRTHDAY)


def profile_changes(
    *, info: dict[str, Any], form: dict[str, list[str]], definitions: list[CustomFieldDef]
) -> dict[str, Any]:
    """The member fields the activation form carries; a required item left empty is an ActivationRejected."""
    custom = {d.key: d for d in definitions}
    labels = {key: d.label for key, d in custom.items()}
    values = _submitted(info, labels)
    required, optional = list(form.get("required") or []), list(form.get("optional") or [])
    missing = [item for item in required if not values.get(item)]
    if missing:
        raise ActivationRejected(
            f"the activation form is missing {', '.join(missing)}",
            code="card.field_required",
            field=missing[0],
            missing=missing,
        )
    changes: dict[str, Any] = {}
    custom_values: dict[str, Any] = {}
    for item in required + optional:
        text = values.get(item)
        if not text:
            continue
        if item == MOBILE:
            changes["phone"] = text
        elif item == NAME:
            changes["name"] = text[:64]
        elif item == BIRTHDAY:
            changes["birthday"] = _birthday(text)
        elif item == SEX:
            changes["gender"] = GENDERS.get(text.lower(), "unknown")
        elif item in custom:
            custom_values[item] = _custom_value(custom[item], text)
    if custom_values:
        changes["custom_fields"] = custom_values
    return changes


def _rejection(exc: Unprocessable | Conflict) -> ActivationRejected:
    """A profile rule's refusal (invalid value, phone taken) as a rejected activation, without the member's id."""
    status = 409 if isinstance(exc, Conflict) else 422
    return ActivationRejected(exc.message, code=exc.code, status=status, field=exc.extra.get("field"))


async def _record_rejection(*, card: MemberCard, exc: ActivationRejected) -> None:
    detail = {"card_id": card.card_id, "code": card.code, "reason": exc.code, "field": exc.extra.get("field")}
    if "missing" in exc.extra:
        detail["missing"] = exc.extra["missing"]
    await record(
        merchant_id=card.merchant_id,
        member_id=card.member_id,
        kind="activation_rejected",
        actor="wechat",
        detail=detail,
    )


async def _grant_rewards(*, member: Member) -> None:
    """Welcome gift and referral points, each under its own idempotency key (balance before points: lock order)."""
    settings = await get_onboarding_settings(merchant_id=member.merchant_id)
    grants: list[tuple[Any, int, int, str, str]] = [
        (ledger.change_balance, member.id, settings.welcome_balance, f"welcome:{member.id}:balance", "开卡礼"),
        (ledger.change_points, member.id, settings.welcome_points, f"welcome:{member.id}:points", "开卡礼"),
    ]
    referrer = None
    if member.referrer_id is not None and member.referrer_id != member.id:
        referrer = await Member.get_or_none(id=member.referrer_id, merchant_id=member.merchant_id)
    if referrer is not None and referrer.referrer_id != member.id:  # no loops
        grants += [
            (ledger.change_points, referrer.id, settings.referrer_points, f"referral:{member.id}:referrer", "推荐奖励"),
            (ledger.change_points, member.id, settings.referee_points, f"referral:{member.id}:referee", "受邀奖励"),
        ]
    if settings.welcome_coupon_template_ids:
        await grant_gift_coupons(
            merchant_id=member.merchant_id,
            member_id=member.id,
            coupons=[{"template_id": t, "quantity": 1} for t in settings.welcome_coupon_template_ids],
            key_prefix=f"welcome:{member.id}",
        )
    for change, member_id, amount, key, reason in grants:
        book = ledger.PointsEntry if change is ledger.change_points else ledger.BalanceEntry
        # once per member: a later card (or changed amounts) never grants again
        if amount <= 0 or await book.exists(merchant_id=member.merchant_id, idempotency_key=key):
            continue
        await change(
            merchant_id=member.merchant_id,
            member_id=member_id,
            delta=amount,
            kind="gift",
            reason=reason,
            idempotency_key=key,
            ref_type="card_activation",
            ref_id=str(member.id),
        )
        if member_id != member.id:
            await record(
                merchant_id=member.merchant_id,
                member_id=member_id,
                kind="referral_rewarded",
                actor="system",
                detail={"referee_id": member.id, "points": amount},
            )


async def activate_member(
    *, card: MemberCard, info: dict[str, Any], enqueue_call: bool = False, actor: str = "wechat"
) -> tuple[MemberCard, bool]:
    """Store the activation form on the member and activate the card with its rewards, once, in one transaction.

    A rejected form (required field missing, invalid value, phone of another member) activates nothing and
    goes on the timeline. enqueue_call puts the card/membercard/activate call into the outbox with the change.
    Returns the card and whether this call activated it (False: it was activated before or concurrently).
    """
    if card.status != "claimed":
        if card.status == "removed":
            raise ActivationRejected("the card was removed from the wallet", code="card.removed", status=409)
        return card, False
    template = await CardTemplate.get(card_id=card.card_id)
    member = await Member.get(id=card.member_id)
    try:
        changes = profile_changes(
            info=info, form=template.activate_form, definitions=await list_fields(merchant_id=card.merchant_id)
        )
        phone = changes.get("phone")
        if phone and await Member.filter(merchant_id=card.merchant_id, phone=phone).exclude(id=member.id).exists():
            raise ActivationRejected("another member has this phone number", code="card.phone_taken", status=409)
        now = clock.now()
        async with in_transaction():
            locked = await MemberCard.filter(id=card.id).select_for_update().first()
            if locked is None or locked.status != "claimed":
                raise _AlreadyActivated
            try:
                member = await update_member(member=member, changes=changes, actor=actor)
            except (Unprocessable, Conflict) as exc:
                raise _rejection(exc) from None
            await _grant_rewards(member=member)
            # after the rewards, so the ledger hook does not queue a sync the activate call already covers
            if await MemberCard.filter(id=card.id, status="claimed").update(status="activated", activated_at=now) != 1:
                raise _AlreadyActivated
            identity: dict[str, Any] = {} if member.activated_at else {"activated_at": now}
            if not member.member_no:
                identity["member_no"] = card.code
            if identity:
                await Member.filter(id=member.id).update(**identity)
            await record(
                merchant_id=card.merchant_id,
                member_id=member.id,
                kind="activated",
                actor=actor,
                detail={"card_id": card.card_id, "code": card.code, "fields": sorted(changes)},
            )
            if enqueue_call:
                await enqueue(
                    merchant_id=card.merchant_id,
                    topic=ACTIVATE_CALL_TOPIC,
                    payload={"merchant_id": card.merchant_id, "card_id": card.card_id, "code": card.code},
                    coalesce_key=_activate_call_key(card.card_id, card.code),
                )
    except _AlreadyActivated:
        return await MemberCard.get(id=card.id), False
    except ActivationRejected as exc:
        await _record_rejection(card=card, exc=exc)
        raise
    return await MemberCard.get(id=card.id), True


def _activate_call_key(card_id: str, code: str) -> str:
    return f"activate_call:{card_id}:{code}"


async def push_activation(*, wechat: WeChatGateway, merchant_id: int, card_id: str, code: str) -> None:
    """card/membercard/activate with the member number and the points, balance, tier and coupons as they are now."""
    card = await MemberCard.get_or_none(merchant_id=merchant_id, card_id=card_id, code=code)
    if card is None or card.status != "activated":
        log.info("activate call for card %s/%s skipped: not activated here", card_id, code)
        return
    member = await Member.get(id=card.member_id)
    points, balance = await ledger.get_balances(member_id=member.id)
    client = await official_client(wechat=wechat, merchant_id=merchant_id)
    with wechat_errors():
        await card_api.activate(
            client,
            card_id=card_id,
            code=code,
            membership_number=member.member_no or code,
            bonus=points,
            balance=balance,
            tier=await tier_name(merchant_id=merchant_id, member_id=member.id),
            coupons=await count_usable(member_id=member.id),
        )


async def activate_from_event(
    *, wechat: WeChatGateway, merchant_id: int, card_id: str, code: str, activate_ticket: str, retry: bool
) -> None:
    """The submit_membercard_user_info path: fetch the form, activate once, tell WeChat.

    A retry (the first attempt activated here but WeChat's activate failed) only repeats the call; a new
    submission for a card activated earlier changes nothing.
    """
    card = await MemberCard.get_or_none(merchant_id=merchant_id, card_id=card_id, code=code)
    if card is None or card.status == "removed":
        return
    if card.status == "claimed":
        client = await official_client(wechat=wechat, merchant_id=merchant_id)
        with wechat_errors():
            info = await card_api.activation_form(client, activate_ticket=activate_ticket, card_id=card_id, code=code)
        try:
            _, activated_here = await activate_member(card=card, info=info)
        except ActivationRejected as exc:
            log.info("activation of card %s/%s rejected: %s", card_id, code, exc.message)
            return  # on the timeline; retrying cannot fix the form
        if not activated_here:
            return  # a concurrent activation tells WeChat itself
    elif not retry:
        return
    if await OutboxMessage.exists(coalesce_key=_activate_call_key(card_id, code)):
        return  # activated from the mini-program, whose own outbox message tells WeChat
    await push_activation(wechat=wechat, merchant_id=merchant_id, card_id=card_id, code=code)


async def activate_from_miniprogram(
    *, wechat: WeChatGateway, merchant_id: int, member_id: int, card_id: str, encrypt_code: str, activate_ticket: str
) -> CardState:
    """The activation page of the mini-program: the card must be the caller's; WeChat is told through the outbox."""
    client = await official_client(wechat=wechat, merchant_id=merchant_id)
    with wechat_errors():
        code = await card_api.decrypt_code(client, encrypt_code=encrypt_code)
    card = None if code is None else await MemberCard.get_or_none(merchant_id=merchant_id, card_id=card_id, code=code)
    if card is None:
        raise NotFound("no member card has this code", code="card.code_not_found")
    if card.member_id != member_id:
        raise Forbidden("this card belongs to another member", code="card.not_yours")
    if card.status == "claimed":
        with wechat_errors():
            info = await card_api.activation_form(
                client,
                activate_ticket=activate_ticket,
                card_id=card_id,
                code=cast(str, code),  # card found by code
            )
        card, _ = await activate_member(card=card, info=info, enqueue_call=True, actor="member")
    elif card.status == "removed":
        raise Conflict("the card was removed from the wallet", code="card.removed")
    points, balance = await ledger.get_balances(member_id=member_id)
    return CardState(
        card=card,
        points=points,
        balance=balance,
        tier_name=await tier_name(merchant_id=merchant_id, member_id=member_id),
    )
