"""The merchant's WeChat member card template and each member's card in the WeChat card wallet."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tortoise import fields
from tortoise.exceptions import IntegrityError
from tortoise.models import Model

from models.kernel import clock
from models.kernel.errors import Conflict, NotFound, Unprocessable, wechat_errors
from models.kernel.outbox import enqueue
from models.members.custom_fields import list_fields
from models.members.member_card import MemberCard
from models.members.members import ensure_visible
from models.onboarding.qrcodes import QrCode
from models.points.rules import get_points_rules
from models.tenancy.merchants import get_store, merchant_client
from models.tenancy.visibility import Scope
from wechat import card as card_api
from wechat.card import COMMON_FIELDS
from wechat.events import OAEvent, Reply

if TYPE_CHECKING:
    from wechat.gateway import AppClient, WeChatGateway


class CardTemplate(Model):
    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField()
    card_id = fields.CharField(max_length=64, null=True, unique=True)  # WeChat's id, after card/create
    status = fields.CharField(max_length=16, default="draft")  # draft | checking | approved | rejected
    # logo, brand, colour, title, notice, description, custom fields
    config: dict[str, Any] = fields.JSONField(default=dict)
    activate_form: dict[str, Any] = fields.JSONField(default=dict)  # fields the one-tap activation asks for
    reject_reason = fields.CharField(max_length=255, default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "card_template"


log = logging.getLogger("huiyuan.cards")

CARD_UPDATE_TOPIC = "card.update"


async def official_client(*, wechat: WeChatGateway, merchant_id: int) -> AppClient:
    """The client of the official account the merchant's member card belongs to."""
    return await merchant_client(wechat, merchant_id=merchant_id, kind="official")


async def bonus_rule(*, merchant_id: int) -> dict[str, Any]:
    """The card's points rule, from the merchant's points rules: what earns a point, and what points pay."""
    rules = await get_points_rules(merchant_id=merchant_id)
    return card_api.bonus_rule(
        spend_fen=rules.earn.per_fen,
        points_earned=rules.earn.points,
        points_used=rules.cash.points,
        fen_reduced=rules.cash.fen,
    )


async def on_points_rules_changed(*, merchant_id: int) -> None:
    """New points rules re-send the member card (its bonus rule shows them), through the outbox, once."""
    if await CardTemplate.exists(merchant_id=merchant_id, card_id__isnull=False):
        await enqueue(
            merchant_id=merchant_id,
            topic=CARD_UPDATE_TOPIC,
            payload={"merchant_id": merchant_id},
            coalesce_key=f"card-update:{merchant_id}",
        )


async def push_card_update(*, wechat: WeChatGateway, merchant_id: int) -> None:
    """card/update with the template as saved and the bonus rule as the points rules say now."""
    template = await CardTemplate.filter(merchant_id=merchant_id).order_by("id").first()
    if template is None or template.card_id is None:
        return
    card = card_api.member_card(
        config=template.config,
        bonus_rule=await bonus_rule(merchant_id=merchant_id),
        activate_url=template.config.get("activate_url"),
    )
    client = await official_client(wechat=wechat, merchant_id=merchant_id)
    with wechat_errors("card/update"):
        send_check = await card_api.update_card(client, card_id=template.card_id, card=card)
    if send_check:
        await CardTemplate.filter(id=template.id).update(status="checking", reject_reason="")


async def get_template(*, merchant_id: int) -> CardTemplate:
    """The merchant's member-card template (one per merchant)."""
    template = await CardTemplate.filter(merchant_id=merchant_id).order_by("id").first()
    if template is None:
        raise NotFound("the member card has not been created yet", code="card.template_missing")
    return template


async def _form_labels(*, merchant_id: int, required: list[str], optional: list[str]) -> dict[str, str]:
    """Check the activation form's items; returns the label WeChat shows for each custom field used."""
    definitions = {d.key: d for d in await list_fields(merchant_id=merchant_id)}
    seen: set[str] = set()
    for group, items in (("required", required), ("optional", optional)):
        for index, item in enumerate(items):
            if item not in COMMON_FIELDS and item not in definitions:
                raise Unprocessable(
                    f"{item!r} is neither a WeChat common field nor one of the merchant's custom fields",
                    code="card.form_field_unknown",
                    field=f"form.{group}.{index}",
                )
            if item in seen:
                raise Unprocessable(
                    f"{item!r} is listed twice", code="card.form_field_duplicate", field=f"form.{group}"
                )
            seen.add(item)
    labels = {key: definitions[key].label for key in seen if key in definitions}
    if len(set(labels.values())) != len(labels):
        raise Unprocessable(
            "custom fields on the form must have distinct labels", code="card.form_label_duplicate", field="form"
        )
    return labels


async def save_template(
    *, wechat: WeChatGateway, merchant_id: int, config: dict[str, Any], required: list[str], optional: list[str]
) -> CardTemplate:
    """Create the member card at WeChat the first time, update it afterwards, then set its activation form.

    One edit at a time per merchant (a Redis lock), so two first saves cannot create two cards.
    """
    labels = await _form_labels(merchant_id=merchant_id, required=required, optional=optional)
    card = card_api.member_card(
        config=config, bonus_rule=await bonus_rule(merchant_id=merchant_id), activate_url=config.get("activate_url")
    )
    form = {"required": required, "optional": optional}
    client = await official_client(wechat=wechat, merchant_id=merchant_id)
    lock = wechat.redis.lock(wechat.keys("card-template", merchant_id), timeout=60, blocking_timeout=30)
    async with lock:
        template = await CardTemplate.filter(merchant_id=merchant_id).order_by("id").first()
        if template is None or template.card_id is None:
            with wechat_errors():
                card_id = await card_api.create_card(client, card=card)
            # saved as soon as WeChat has the card, so a failure below never loses its card_id
            template = template or CardTemplate(merchant_id=merchant_id)
            template.card_id, template.status = card_id, "checking"
        else:
            if config["brand_name"] != template.config.get("brand_name"):
                raise Unprocessable(
                    "the brand name cannot change once the card exists", code="card.brand_fixed", field="brand_name"
                )
            with wechat_errors():
                send_check = await card_api.update_card(client, card_id=template.card_id, card=card)
            if send_check or template.status in ("draft", "rejected"):
                template.status, template.reject_reason = "checking", ""
        template.config, template.activate_form = config, form
        await template.save()
        with wechat_errors():
            await card_api.set_activate_form(
                client, card_id=card_id_of(template), required=required, optional=optional, labels=labels
            )
    return template


def card_id_of(template: CardTemplate) -> str:
    """WeChat's card_id of a template that has been created at WeChat."""
    if template.card_id is None:
        raise Conflict("the member card has not been created at WeChat yet", code="card.template_missing")
    return template.card_id


async def on_card_review(event: OAEvent) -> Reply | None:
    """WeChat's review of the card: approved, or rejected with its reason; unknown cards change nothing."""
    passed = event.kind == "event:card_pass_check"
    updated = await CardTemplate.filter(merchant_id=event.merchant_id, card_id=event.message.get("CardId", "")).update(
        status="approved" if passed else "rejected",
        reject_reason="" if passed else (event.message.get("RefuseReason") or "")[:255],
        updated_at=clock.now(),
    )
    if not updated:
        log.info("review of unknown card %r for merchant %s ignored", event.message.get("CardId"), event.merchant_id)
    return None


async def create_claim_qrcode(
    *, wechat: WeChatGateway, merchant_id: int, store_id: int | None, store_scope: int | None
) -> tuple[QrCode, bool]:
    """The card-claim QR code of a store (outer_str = store code) or of the merchant; one per store."""
    if store_scope is not None:
        if store_id not in (None, store_scope):
            raise NotFound("store not found", code="store.not_found")
        store_id = store_scope
    store = await get_store(merchant_id=merchant_id, store_id=store_id) if store_id is not None else None
    card_id = card_id_of(await get_template(merchant_id=merchant_id))
    scene = store.code if store is not None else ""
    existing = await QrCode.get_or_none(merchant_id=merchant_id, kind="card", scene=scene)
    if existing is not None:
        return existing, False
    client = await official_client(wechat=wechat, merchant_id=merchant_id)
    with wechat_errors():
        ticket, url = await card_api.create_claim_qrcode(client, card_id=card_id, outer_str=scene)
    try:
        code = await QrCode.create(
            merchant_id=merchant_id,
            kind="card",
            scene=scene,
            store_id=store_id,
            card_id=card_id,
            ticket=ticket,
            url=url,
            label=f"card {scene}".strip(),
        )
    except IntegrityError:
        return await QrCode.get(merchant_id=merchant_id, kind="card", scene=scene), False
    return code, True


async def list_claim_qrcodes(*, scope: Scope) -> list[QrCode]:
    """Card-claim codes, oldest first; a store-scoped role sees its store's code only."""
    return await QrCode.filter(kind="card", **scope.store_rows()).order_by("id")


async def card_by_encrypted_code(*, wechat: WeChatGateway, scope: Scope, encrypt_code: str) -> MemberCard:
    """The member card behind the encrypt_code of a card page or the cashier's scanner."""
    client = await official_client(wechat=wechat, merchant_id=scope.merchant_id)
    with wechat_errors():
        code = await card_api.decrypt_code(client, encrypt_code=encrypt_code)
    card = (
        None
        if code is None
        else await MemberCard.filter(merchant_id=scope.merchant_id, code=code).order_by("-id").first()
    )
    if card is None:
        raise NotFound("no member card has this code", code="card.code_not_found")
    await ensure_visible(scope=scope, member_id=card.member_id)
    return card
