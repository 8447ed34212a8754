"""Property: any sequence of earn / spend / reverse / expiry runs / clock jumps keeps lots, ledger and balance equal."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from models.kernel import clock
from models.kernel.errors import Conflict
from models.ledger.books import PointsAccount, PointsEntry
from models.points.expiry import expire_due_lots, reverse_spend
from models.points.lots import PointsExpiry, PointsLot, PointsLotUse, earn_points, points_summary, spend_points
from models.points.reads import points_page
from tests.points.helpers import assert_lots_agree, new_member, put_rules

START = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)
_keys = itertools.count()


class PointsMachine(RuleBasedStateMachine):
    """One member; the steps run on the test's event loop, the machine in a worker thread."""

    loop: asyncio.AbstractEventLoop
    merchant_id: int
    member_id: int

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.debits: list[int] = []
        self.run(self._reset())

    def run(self, awaitable: Awaitable[Any]) -> Any:
        async def wait() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wait(), self.loop).result(timeout=120)

    async def _reset(self) -> None:
        clock.set_clock(lambda: self.now)
        lot_ids = await PointsLot.filter(member_id=self.member_id).values_list("id", flat=True)
        await PointsLotUse.filter(lot_id__in=list(lot_ids)).delete()
        await PointsLot.filter(member_id=self.member_id).delete()
        await PointsExpiry.filter(member_id=self.member_id).delete()
        await PointsEntry.filter(member_id=self.member_id).delete()
        await PointsAccount.filter(member_id=self.member_id).update(balance=0)

    def _pin(self) -> None:
        now = self.now
        clock.set_clock(lambda: now)

    async def _balance(self) -> int:
        return (await PointsAccount.get(member_id=self.member_id)).balance

    @initialize(
        lots=st.lists(st.tuples(st.integers(1, 300), st.integers(1, 90)), min_size=1, max_size=4),
        spent=st.integers(0, 600),
    )
    def some_lots_partly_spent(self, lots: list[tuple[int, int]], spent: int) -> None:
        for points, days in lots:
            self.earn(points, days)
        if spent:
            self.spend(spent)

    @rule(points=st.integers(1, 300), days=st.one_of(st.none(), st.integers(1, 60), st.integers(1, 60)))
    def earn(self, points: int, days: int | None) -> None:
        expires_at = None if days is None else self.now + timedelta(days=days)
        self.run(
            earn_points(
                merchant_id=self.merchant_id,
                member_id=self.member_id,
                points=points,
                reason="earned",
                idempotency_key=f"prop-earn-{next(_keys)}",
                expires_at=expires_at,
            )
        )

    @rule(points=st.integers(1, 400))
    def spend(self, points: int) -> None:
        before = self.run(self._balance())
        try:
            result = self.run(
                spend_points(
                    merchant_id=self.merchant_id,
                    member_id=self.member_id,
                    points=points,
                    reason="spent",
                    idempotency_key=f"prop-spend-{next(_keys)}",
                )
            )
        except Conflict as exc:
            assert exc.code == "points.insufficient" and points > before
            return
        assert points <= before and result.entry.balance_after == before - points
        self.debits.append(result.entry.id)

    @rule(pick=st.integers(0, 10_000))
    def reverse(self, pick: int) -> None:
        if not self.debits:
            return
        debit = self.debits[pick % len(self.debits)]
        before = self.run(self._balance())
        try:
            result = self.run(
                reverse_spend(
                    merchant_id=self.merchant_id,
                    member_id=self.member_id,
                    debit_entry_id=debit,
                    idempotency_key=f"prop-reverse-{next(_keys)}",
                    reason="refund",
                )
            )
        except Conflict as exc:
            assert exc.code == "points.nothing_to_reverse"
            return
        spent = -self.run(PointsEntry.get(id=debit)).delta
        restored = sum(self.run(PointsLotUse.filter(debit_entry_id=debit).values_list("restored", flat=True)))
        assert 0 < result.entry.delta and restored <= spent
        assert result.entry.balance_after == before + result.entry.delta

    @rule()
    def expire(self) -> None:
        self.run(expire_due_lots(now=self.now, batch=3))
        due = self.run(PointsLot.filter(member_id=self.member_id, status="open", expires_at__lte=self.now).count())
        assert due == 0

    @rule(days=st.integers(1, 120), hours=st.integers(0, 23), run_expiry=st.booleans())
    def jump(self, days: int, hours: int, run_expiry: bool) -> None:
        self.now += timedelta(days=days, hours=hours)
        self._pin()
        if run_expiry:  # as the scheduler would
            self.expire()

    @invariant()
    def lots_ledger_and_balance_agree(self) -> None:
        self.run(assert_lots_agree(self.member_id))  # points_expiry per instant = the open lots' remaining too

    @invariant()
    def expiring_soon_from_the_totals_is_the_lots_answer(self) -> None:
        page = self.run(points_page(merchant_id=self.merchant_id, member_id=self.member_id))
        lots = self.run(points_summary(merchant_id=self.merchant_id, member_id=self.member_id))
        assert (page.balance, page.expiring_points, page.expires_on) == (
            lots.balance,
            lots.expiring_points,
            lots.expires_on,
        )


async def test_lots_ledger_and_balance_always_agree(client, admin, demo):
    await put_rules(client, admin, expiry="rolling_year")
    PointsMachine.loop = asyncio.get_running_loop()
    PointsMachine.merchant_id = demo.merchant.id
    PointsMachine.member_id = await new_member(client, admin)
    config = settings(
        max_examples=25,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    try:
        await asyncio.to_thread(run_state_machine_as_test, PointsMachine, settings=config)
    finally:
        clock.set_clock(None)
