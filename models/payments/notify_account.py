"""The pay account a WeChat Pay notify names, with the appids its payments may carry, in one statement."""

from __future__ import annotations

from dataclasses import dataclass, field

from tortoise.expressions import Q, Subquery

from models.kernel.config_cache import CONFIG
from models.tenancy.merchants import ACCOUNT_KEY, WechatAccount

PAYING_KINDS = ("official", "miniprogram")  # the accounts whose appids a merchant's payments may name


@dataclass(frozen=True)
class NotifyAccount:
    account: WechatAccount
    appids: frozenset[str] = field(default_factory=frozenset)


async def find_notify_account(*, mch_id: str) -> NotifyAccount | None:
    """The pay account of mch_id and its merchant's appids: from the configuration cache, else one round trip."""
    if not ACCOUNT_KEY.match(mch_id):
        return None
    return await CONFIG.get_keyed(
        "notify_account", mch_id, lambda: _load(mch_id), merchant_of=lambda found: found.account.merchant_id
    )


async def _load(mch_id: str) -> NotifyAccount | None:
    lookup = f"pay:{mch_id}"
    merchant_of_account = Subquery(WechatAccount.filter(lookup=lookup).values("merchant_id"))
    rows = await WechatAccount.filter(Q(lookup=lookup) | Q(kind__in=PAYING_KINDS, merchant_id__in=merchant_of_account))
    pay = next((row for row in rows if row.lookup == lookup), None)
    if pay is None:
        return None
    appids = frozenset(str(row.appid) for row in rows if row.kind in PAYING_KINDS and row.appid)
    return NotifyAccount(account=pay, appids=appids)
