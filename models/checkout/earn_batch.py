"""What a fresh purchase earns, as batched SQL: the pre-read columns and the write statements.

Shared by the purchases endpoint (models/checkout/purchases.py _record_batched) and the POS settle
(models/checkout/orders.py): the points credit as a new lot (ledger.credit_statements), the growth row with its
bucket and total (growth_statements), and the tier upgrade through upgrade_in_transaction only when the figures
pre-read under the member's account and tier row locks say it is due. The configuration comes from the
per-process cache: no configuration read per order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.kernel import sqlpath
from models.kernel.sqlpath import BatchResult, Ref, Stmt
from models.ledger import books as ledger
from models.points.rules import PointsRules, get_points_rules, local_day, local_midnight
from models.tiers import standing as tier_rules
from models.tiers.growth import basis_sql, counts_in_basis, growth_statements
from models.tiers.policy import LocalCalendar, TierPolicy, get_policy, local_calendar
from models.tiers.tables import Tier


@dataclass(frozen=True)
class EarnConfig:
    rules: PointsRules
    tiers: list[Tier]
    policy: TierPolicy
    calendar: LocalCalendar


async def earn_config(*, merchant_id: int) -> EarnConfig:
    """The merchant's earning configuration, from the per-process cache."""
    return EarnConfig(
        rules=await get_points_rules(merchant_id=merchant_id),
        tiers=await tier_rules.active_tiers(merchant_id=merchant_id),
        policy=await get_policy(merchant_id=merchant_id),
        calendar=await local_calendar(merchant_id=merchant_id),
    )


def lock_statement(*, merchant_id: int, member_id: int) -> Stmt:
    """The member's account and tier row locks: (account id, tier row id, tier id), no row without an account."""
    # the account row lock serialises a member's purchases (the daily cap, the balance); the tier row's serialises
    # their growth rows, so the basis figure read next is exact
    lock = " FOR UPDATE" if sqlpath.dialect() == "mysql" else ""
    return Stmt(
        "SELECT a.id, t.id, t.tier_id FROM points_account a LEFT JOIN member_tier t ON t.member_id = a.member_id"  # noqa: S608
        " WHERE a.member_id = %s AND a.merchant_id = %s" + lock,
        (member_id, merchant_id),
        rows=True,
    )


@dataclass
class EarnReads:
    """The pre-read columns an earning needs: the plans' multiplier, [points earned today], [basis, plan tiers]."""

    columns: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    probe_params: int = 0  # the params of the two trailing probe columns (0: no probe)


def earn_reads(config: EarnConfig, *, merchant_id: int, member_id: int, when: datetime, probe: bool) -> EarnReads:
    """The columns to add to the first round trip's reads; probe: also the tier upgrade's figures (if tiers)."""
    reads = EarnReads()
    multiplier_sql, multiplier_params = tier_rules.plans_sql(member_id=member_id, now=when, column="multiplier")
    reads.columns.append(multiplier_sql)
    reads.params += multiplier_params
    if config.rules.daily_cap is not None:
        zone = config.calendar.zone
        day = local_day(when, zone)
        reads.columns.append(
            "(SELECT COALESCE(SUM(points), 0) FROM purchase WHERE merchant_id = %s AND member_id = %s"
            " AND status = 'settled' AND occurred_at >= %s AND occurred_at < %s)"
        )
        reads.params += [
            merchant_id,
            member_id,
            sqlpath.db_time(local_midnight(day, zone)),
            sqlpath.db_time(local_midnight(day + timedelta(days=1), zone)),
        ]
    if config.tiers and probe:
        for sql, values in (
            basis_sql(policy=config.policy, calendar=config.calendar, member_id=member_id),
            tier_rules.plans_sql(member_id=member_id, now=config.calendar.now, column="tiers"),
        ):
            reads.columns.append(sql)
            reads.params += values
            reads.probe_params += len(values)
    return reads


@dataclass(frozen=True)
class EarnFigures:
    """What the earn_reads columns answered, with the member's locked tier row."""

    multiplier_permille: int  # the tier's, or a running plan's when larger
    earned_today: int  # 0 without a daily cap
    basis: Any
    plan_tiers: str | None
    tier_row_id: int | None
    tier_id: int | None  # as the tier row holds it
    tier: Tier | None


def earn_figures(config: EarnConfig, values: list[Any], *, tier_row_id: int | None, tier_id: int | None) -> EarnFigures:
    """The figures from the earn_reads columns' values (in order) and the lock statement's tier row."""
    rest = list(values)
    plan_multiplier = rest.pop(0)
    tier = tier_rules.tier_by_id(config.tiers, tier_id) if config.tiers else None
    used = int(rest.pop(0)) if config.rules.daily_cap is not None else 0
    basis, plan_tiers = (rest[0], rest[1]) if len(rest) >= 2 else (None, None)
    return EarnFigures(
        multiplier_permille=max(
            tier.points_multiplier_permille if tier is not None else 1000,
            int(plan_multiplier) if plan_multiplier is not None else 0,
        ),
        earned_today=used,
        basis=basis,
        plan_tiers=plan_tiers,
        tier_row_id=tier_row_id,
        tier_id=tier_id,
        tier=tier,
    )


def capped(config: EarnConfig, figures: EarnFigures, points: int) -> int:
    """The points after the daily cap (what the member already earned today counts)."""
    if config.rules.daily_cap is None or points <= 0:
        return points
    return max(0, min(points, config.rules.daily_cap - figures.earned_today))


@dataclass
class EarnWrite:
    statements: list[Stmt]
    upgrade: bool  # the figures say the member moves up: upgrade_in_transaction before the COMMIT
    reread: Stmt | None  # no tier row was locked: the batch reads the figures again after its upsert (last rows)


async def earn_statements(
    config: EarnConfig,
    reads: EarnReads,
    figures: EarnFigures,
    *,
    merchant_id: int,
    member_id: int,
    points: int,
    growth: int,
    reason: str,
    when: datetime,
    now: datetime,
    purchase_id: int | None = None,
) -> EarnWrite | None:
    """The purchase's earning writes, keyed "purchase:<id>" (purchase_id, or the batch's captured "purchase" id);
    None when a ledger listener cannot batch the points credit (write it through the ORM instead)."""
    statements: list[Stmt] = []
    key: str | Ref = Ref("purchase", prefix="purchase:")
    ref: str | Ref = Ref("purchase")
    if purchase_id is not None:  # inserted by an earlier batch: a Ref reaches only its own batch
        key, ref = f"purchase:{purchase_id}", str(purchase_id)
    if points > 0:
        credit = await ledger.credit_statements(
            ledger.NewEntry(
                book="points",
                merchant_id=merchant_id,
                member_id=member_id,
                delta=points,
                kind="earn",
                reason=reason,
                idempotency_key=key,
                ref_type="purchase",
                ref_id=ref,
                at=now,
            )
        )
        if credit is None:
            return None
        statements += credit
    write = EarnWrite(statements=statements, upgrade=False, reread=None)
    if growth <= 0:
        return write
    statements += growth_statements(
        merchant_id=merchant_id,
        member_id=member_id,
        delta=growth,
        kind="spend",
        reason=reason,
        idempotency_key=key,
        ref_type="purchase",
        ref_id=ref,
        occurred_at=when,
    )
    if config.tiers and figures.tier_row_id is None:
        # no tier row to lock yet: the batch's upsert makes (or waits for) it, then reads the figures again
        probe_params = tuple(reads.params[-reads.probe_params :])
        write.reread = Stmt("SELECT " + ", ".join(reads.columns[-2:]), probe_params, rows=True)
        statements.append(write.reread)
    elif config.tiers:
        basis = figures.basis
        if basis is not None and counts_in_basis(policy=config.policy, calendar=config.calendar, occurred_at=when):
            basis = int(basis) + growth
        write.upgrade = tier_rules.upgrade_due(
            tiers=config.tiers,
            tier_id=figures.tier_id,
            basis=None if basis is None else int(basis),
            plan_tier_ids=figures.plan_tiers,
        )
    return write


async def finish_earn(
    config: EarnConfig, write: EarnWrite, done: BatchResult, *, merchant_id: int, member_id: int, detail: str
) -> None:
    """After the batch (not yet committed when an upgrade may be due): the tier upgrade, when the figures say so."""
    upgrade = write.upgrade
    if write.reread is not None:
        basis, plan_tiers = done.rows[-1][0]
        upgrade = tier_rules.upgrade_due(
            tiers=config.tiers, tier_id=None, basis=None if basis is None else int(basis), plan_tier_ids=plan_tiers
        )
    if upgrade:
        await tier_rules.upgrade_in_transaction(merchant_id=merchant_id, member_id=member_id, detail=detail[:255])


def must_finish(write: EarnWrite) -> bool:
    """Whether the batch must leave the transaction open for finish_earn (else it commits)."""
    return write.upgrade or write.reread is not None
