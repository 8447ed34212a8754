"""The member-card API of WeChat (card/create, activation, updateuser, code decryption): request shapes only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wechat.errors import WeChatAPIError

if TYPE_CHECKING:
    from wechat.gateway import AppClient

COMMON_FIELDS = (
    "USER_FORM_INFO_FLAG_MOBILE",
    "USER_FORM_INFO_FLAG_NAME",
    "USER_FORM_INFO_FLAG_BIRTHDAY",
    "USER_FORM_INFO_FLAG_SEX",
)
SKU_QUANTITY = 100_000_000  # WeChat's ceiling: a member card never runs out
INVALID_CODE = 40056
# fields card/update refuses or ignores for a member card (they are fixed at card/create)
_CREATE_ONLY_BASE = ("brand_name", "sku", "date_info")
_CREATE_ONLY = ("supply_bonus", "supply_balance")


def bonus_rule(*, spend_fen: int, points_earned: int, points_used: int, fen_reduced: int) -> dict[str, Any]:
    """The card's `bonus_rule`: `points_earned` per `spend_fen` fen spent; `points_used` points pay `fen_reduced`."""
    return {
        "cost_money_unit": spend_fen,
        "increase_bonus": points_earned,
        "init_increase_bonus": 0,
        "cost_bonus_unit": points_used,
        "reduce_money": fen_reduced,
        "least_money_to_use_bonus": 0,
    }


def member_card(*, config: dict[str, Any], bonus_rule: dict[str, Any], activate_url: str | None) -> dict[str, Any]:
    """The `member_card` object of card/create from the merchant's template settings."""
    base_info: dict[str, Any] = {
        "brand_name": config["brand_name"],
        "title": config["title"],
        "logo_url": config["logo_url"],
        "color": config["color"],
        "notice": config["notice"],
        "description": config["description"],
        "code_type": "CODE_TYPE_QRCODE",
        "date_info": {"type": "DATE_TYPE_PERMANENT"},
        "sku": {"quantity": SKU_QUANTITY},
        "get_limit": 1,
        "can_give_friend": False,
    }
    if config.get("service_phone"):
        base_info["service_phone"] = config["service_phone"]
    card: dict[str, Any] = {
        "base_info": base_info,
        "supply_bonus": True,
        "supply_balance": True,
        "prerogative": config["prerogative"],
        "bonus_rule": bonus_rule,
        "custom_field1": {"name_type": "FIELD_NAME_TYPE_LEVEL"},
        "custom_field2": coupons_field(url=config.get("coupons_url")),
        "wx_activate": True,
        "wx_activate_after_submit": True,
    }
    if activate_url:
        card["wx_activate_after_submit_url"] = activate_url
    return card


def coupons_field(*, url: str | None) -> dict[str, Any]:
    """custom_field2: WeChat's 优惠券 cell (the count of usable coupons), linking to the coupons page when set."""
    field: dict[str, Any] = {"name_type": "FIELD_NAME_TYPE_COUPON"}
    if url:
        field["url"] = url
    return field


async def create_card(client: AppClient, *, card: dict[str, Any]) -> str:
    """card/create; returns WeChat's card_id."""
    answer = await client.call("POST", "/card/create", json={"card": {"card_type": "MEMBER_CARD", "member_card": card}})
    return str(answer["card_id"])


async def update_card(client: AppClient, *, card_id: str, card: dict[str, Any]) -> bool:
    """card/update with the fields WeChat lets change; returns whether the card goes back to review."""
    changes = {k: v for k, v in card.items() if k not in _CREATE_ONLY}
    changes["base_info"] = {k: v for k, v in card["base_info"].items() if k not in _CREATE_ONLY_BASE}
    answer = await client.call("POST", "/card/update", json={"card_id": card_id, "member_card": changes})
    return bool(answer.get("send_check"))


def _form(items: list[str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "common_field_id_list": [item for item in items if item in COMMON_FIELDS],
        "custom_field_list": [labels[item] for item in items if item not in COMMON_FIELDS],
    }


async def set_activate_form(
    client: AppClient, *, card_id: str, required: list[str], optional: list[str], labels: dict[str, str]
) -> None:
    """activateuserform/set: WeChat's common fields by flag, the merchant's own fields by their label."""
    await client.call(
        "POST",
        "/card/membercard/activateuserform/set",
        json={"card_id": card_id, "required_form": _form(required, labels), "optional_form": _form(optional, labels)},
    )


async def create_claim_qrcode(client: AppClient, *, card_id: str, outer_str: str) -> tuple[str, str]:
    """card/qrcode/create (QR_CARD); returns (ticket, show_qrcode_url)."""
    card: dict[str, Any] = {"card_id": card_id}
    if outer_str:
        card["outer_str"] = outer_str
    answer = await client.call(
        "POST", "/card/qrcode/create", json={"action_name": "QR_CARD", "action_info": {"card": card}}
    )
    return str(answer["ticket"]), str(answer.get("show_qrcode_url") or answer.get("url") or "")


async def decrypt_code(client: AppClient, *, encrypt_code: str) -> str | None:
    """card/code/decrypt; None when WeChat does not know the encrypted code."""
    try:
        answer = await client.call("POST", "/card/code/decrypt", json={"encrypt_code": encrypt_code})
    except WeChatAPIError as exc:
        if exc.errcode == INVALID_CODE:
            return None
        raise
    return str(answer["code"])


async def activation_form(client: AppClient, *, activate_ticket: str, card_id: str, code: str) -> dict[str, Any]:
    """What the member submitted: activatetempinfo by ticket, else the card's userinfo (events carry no ticket)."""
    if activate_ticket:
        answer = await client.call(
            "POST", "/card/membercard/activatetempinfo/get", json={"activate_ticket": activate_ticket}
        )
        return dict(answer.get("info") or {})
    answer = await client.call("POST", "/card/membercard/userinfo/get", json={"card_id": card_id, "code": code})
    return dict(answer.get("user_info") or {})


async def activate(
    client: AppClient,
    *,
    card_id: str,
    code: str,
    membership_number: str,
    bonus: int,
    balance: int,
    tier: str,
    coupons: int,
) -> None:
    """card/membercard/activate with the opening points, balance (fen), tier name and count of usable coupons."""
    await client.call(
        "POST",
        "/card/membercard/activate",
        json={
            "membership_number": membership_number,
            "code": code,
            "card_id": card_id,
            "init_bonus": bonus,
            "init_balance": balance,
            "init_custom_field_value1": tier,
            "init_custom_field_value2": str(coupons),
        },
    )


async def update_user(
    client: AppClient,
    *,
    card_id: str,
    code: str,
    bonus: int,
    balance: int,
    tier: str,
    coupons: int,
    record_bonus: str,
    record_balance: str,
    notify_bonus: bool,
    notify_balance: bool,
    notify_coupons: bool,
) -> None:
    """card/membercard/updateuser with absolute values (the latest state wins)."""
    body: dict[str, Any] = {
        "code": code,
        "card_id": card_id,
        "bonus": bonus,
        "balance": balance,
        "custom_field_value1": tier,
        "custom_field_value2": str(coupons),
        "notify_optional": {
            "is_notify_bonus": notify_bonus,
            "is_notify_balance": notify_balance,
            "is_notify_custom_field1": False,
            "is_notify_custom_field2": notify_coupons,
        },
    }
    if record_bonus:
        body["record_bonus"] = record_bonus
    if record_balance:
        body["record_balance"] = record_balance
    await client.call("POST", "/card/membercard/updateuser", json=body)
