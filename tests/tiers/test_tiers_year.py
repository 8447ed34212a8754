"""A member's year replayed with a pinned clock: upgrades on the day, downgrades only at settlement, one gift each."""

from __future__ import annotations

import pytest

from jobs.scheduler import run_job
from models.kernel import clock
from models.ledger.books import BalanceEntry, PointsEntry, change_balance
from models.tiers.standing import reevaluate
from models.tiers.tables import TierChange, TierGiftGrant
from tests.tiers.helpers import (
    lasting,
    new_member,
    pending_tier_syncs,
    pin,
    put_policy,
    settle_syncs,
    standard_tiers,
)


@pytest.fixture(autouse=True)
def _unpin():
    yield
    clock.set_clock(None)


class Year:
    """Drives one member through the calendar and checks the card sync follows every tier change."""

    def __init__(self, app, client, headers, merchant_id: int, member_id: int, codes: dict[int, str]):
        self.app, self.client, self.headers = app, client, headers
        self.merchant_id, self.member_id, self.codes = merchant_id, member_id, codes
        self.orders = 0

    async def tier(self) -> dict:
        response = await self.client.get(f"/api/members/{self.member_id}/tier", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def code(self) -> str:
        return (await self.tier())["tier"]["code"]

    async def step(self, when: str, action, *, changed: bool) -> str:
        """Run one event at a Shanghai time; a tier change must queue exactly one card sync carrying the tier."""
        pin(when)
        await settle_syncs(self.member_id)
        await action()
        assert await pending_tier_syncs(self.member_id) == (1 if changed else 0), when
        return await self.code()

    async def buy(self, when: str, fen: int, *, changed: bool = False) -> str:
        async def purchase() -> None:
            self.orders += 1
            response = await self.client.post(
                f"/api/members/{self.member_id}/purchases",
                json={"order_no": f"Y{self.orders:04d}", "amount": fen},
                headers=self.headers,
            )
            assert response.status_code == 201, response.text
            assert response.json()["growth"] == fen // 100

        return await self.step(when, purchase, changed=changed)

    async def settle(self, day: str, *, changed: bool = False, merchants: int = 1) -> str:
        async def run() -> None:
            summary = await run_job("tiers.settle", self.app.ctx.jobs)
            assert summary is not None and summary.startswith(f"settled {merchants} merchants"), summary

        return await self.step(f"{day} 00:30", run, changed=changed)

    async def history(self) -> list[tuple[str, str | None, str | None]]:
        rows = await TierChange.filter(member_id=self.member_id).order_by("id")
        return [(r.reason, self.codes.get(r.from_tier_id or 0), self.codes.get(r.to_tier_id or 0)) for r in rows]


async def _year(app, client, admin, demo) -> Year:
    headers = lasting(app, admin)
    tiers = await standard_tiers(client, headers)
    member_id = await new_member(client, headers, merchant_id=demo.merchant.id, phone="13900000100", card=True)
    codes = {t["id"]: code for code, t in tiers.items()}
    return Year(app, client, headers, demo.merchant.id, member_id, codes)


def _months(start_year: int, start_month: int, count: int) -> list[str]:
    out = []
    for index in range(count):
        year, month = divmod(start_month - 1 + index, 12)
        out.append(f"{start_year + year:04d}-{month + 1:02d}-01")
    return out


async def test_rolling_year_upgrades_on_the_day_and_falls_only_at_settlement(app, client, admin, demo):
    year = await _year(app, client, admin, demo)
    assert await year.buy("2027-01-10 12:00", 60_000) == "normal"  # 600 growth
    assert await year.buy("2027-02-13 23:00", 30_000) == "normal"  # 900
    assert await year.buy("2027-02-14 10:00", 10_000, changed=True) == "silver"  # 1,000: silver that day
    view = await year.tier()
    assert (view["growth_12m"], view["next_tier"]["code"], view["needed"]) == (1000, "gold", 4000)
    assert view["keep_until"].startswith("2027-02-28T16:00:00")  # 2027-03-01 00:00 Shanghai
    assert view["next_settlement"] == "2027-03-01"
    for day in _months(2027, 3, 2):
        assert await year.settle(day) == "silver"
    assert await year.buy("2027-05-20 18:00", 400_000, changed=True) == "gold"  # 5,000
    for day in _months(2027, 6, 8):  # June 2027 … January 2028: the window still holds all 5,000
        assert await year.settle(day) == "gold"
    # mid-January 2028 the January 2027 purchase has left the rolling window: 4,401 < 5,000, yet no downgrade
    assert await year.buy("2028-01-20 09:00", 100) == "gold"
    view = await year.tier()
    assert (view["growth_12m"], view["growth_lifetime"], view["tier"]["code"]) == (4401, 5001, "gold")
    assert await year.settle("2028-02-01", changed=True) == "silver"  # settled from Feb 2027: 4,401
    assert await year.settle("2028-02-01", merchants=0) == "silver"  # the period is done: a second run changes nothing
    assert await year.buy("2028-02-20 15:00", 100_000, changed=True) == "gold"  # 4,001 + 1,000 in the window
    assert await year.history() == [
        ("upgrade", "normal", "silver"),
        ("upgrade", "silver", "gold"),
        ("settlement", "gold", "silver"),
        ("upgrade", "silver", "gold"),
    ]
    grants = await TierGiftGrant.filter(member_id=year.member_id).order_by("id").values_list("tier_id", "period")
    assert [(year.codes[t], p) for t, p in grants] == [("silver", "once"), ("gold", "once")]
    gifts = (
        await PointsEntry.filter(member_id=year.member_id, kind="gift").order_by("id").values_list("delta", flat=True)
    )
    assert list(gifts) == [100, 300]
    balance_gifts = await BalanceEntry.filter(member_id=year.member_id, kind="gift").values_list("delta", flat=True)
    assert list(balance_gifts) == [500]


async def test_gift_once_per_year_by_recharge_basis(app, client, admin, demo):
    year = await _year(app, client, admin, demo)
    await put_policy(client, year.headers, basis="total_recharge", gift_period="year")
    order = 0

    async def money(when: str, fen: int, *, changed: bool) -> str:
        async def move() -> None:
            nonlocal order
            order += 1
            await change_balance(
                merchant_id=year.merchant_id,
                member_id=year.member_id,
                delta=fen,
                kind="recharge" if fen > 0 else "refund",
                reason="recharge" if fen > 0 else "refund",
                idempotency_key=f"year-money-{order}",
            )
            await reevaluate(merchant_id=year.merchant_id, member_id=year.member_id, reason="recharge credited")

        return await year.step(when, move, changed=changed)

    assert await money("2027-02-03 10:00", 1_000, changed=True) == "silver"
    assert await money("2027-02-10 10:00", -1_000, changed=False) == "silver"  # refunded: no fall before settlement
    assert await year.settle("2027-03-01", changed=True) == "normal"
    assert await money("2027-03-15 10:00", 1_000, changed=True) == "silver"  # climbs again: no second 2027 gift
    assert await money("2027-12-02 10:00", -1_000, changed=False) == "silver"
    assert await year.settle("2028-01-01", changed=True) == "normal"
    assert await money("2028-01-05 10:00", 1_000, changed=True) == "silver"  # a new year: a new gift
    assert await year.history() == [
        ("upgrade", "normal", "silver"),
        ("settlement", "silver", "normal"),
        ("upgrade", "normal", "silver"),
        ("settlement", "silver", "normal"),
        ("upgrade", "normal", "silver"),
    ]
    grants = await TierGiftGrant.filter(member_id=year.member_id).order_by("id").values_list("period", flat=True)
    assert list(grants) == ["2027", "2028"]
    gifts = await PointsEntry.filter(member_id=year.member_id, kind="gift").values_list("delta", flat=True)
    assert list(gifts) == [100, 100]
