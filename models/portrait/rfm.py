"""RFM: recency, frequency and monetary value over the last 12 months, scored 1-5 by the merchant's quintiles.

The quintile cut points need every member's aggregate, so a nightly job (`portrait.rfm_cuts`) computes them in
SQL (one aggregate per member over purchase, ranked by window functions; only the 12 rows at the cut positions
leave the database) into `rfm_cuts`, one row per merchant. The portrait computes the member's own R/F/M live
(purchase's (member_id, occurred_at) index) and scores them against the stored cuts.

Cut points are nearest-rank percentiles over the members with at least one settled purchase in the window: the
q-th cut (q = 20, 40, 60, 80 %) is the value of rank ceil(q * n / 100) in ascending order (recency in days since
the last purchase, ascending too). Scores: frequency and monetary 1 + the number of cuts the value is above
(<= the 20 % cut: 1, above the 80 % cut: 5); recency 5 - the number of cuts the days are above (fewer days is
better). A member without a purchase in the window scores R = F = M = 1.

Segments (the classic eight of RFM, "high" = a score of 3 or more, i.e. above the lower two quintiles):
    R F M  high/low      code               name
    H H H                important_value    重要价值客户
    H L H                important_develop  重要发展客户
    L H H                important_keep     重要保持客户
    L L H                important_retain   重要挽留客户
    H H L                general_value      一般价值客户
    H L L                general_develop    一般发展客户
    L H L                general_keep       一般保持客户
    L L L                general_retain     一般挽留客户
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tortoise import fields
from tortoise.models import Model

from models.kernel import clock, sqlpath
from models.kernel.sqlpath import Stmt
from models.tenancy.merchants import Merchant

WINDOW_DAYS = 365  # "the last 12 months"
QUINTILES = (1, 2, 3, 4)  # the 20/40/60/80 % cut points, in fifths
HIGH_SCORE = 3
DAY_SECONDS = 86_400

SEGMENTS: dict[tuple[bool, bool, bool], tuple[str, str]] = {
    (True, True, True): ("important_value", "重要价值客户"),
    (True, False, True): ("important_develop", "重要发展客户"),
    (False, True, True): ("important_keep", "重要保持客户"),
    (False, False, True): ("important_retain", "重要挽留客户"),
    (True, True, False): ("general_value", "一般价值客户"),
    (True, False, False): ("general_develop", "一般发展客户"),
    (False, True, False): ("general_keep", "一般保持客户"),
    (False, False, False): ("general_retain", "一般挽留客户"),
}


class RfmCuts(Model):
    """A merchant's RFM quintile cut points as of the last nightly run (one row per merchant, replaced)."""

    id = fields.IntField(primary_key=True)
    merchant_id = fields.IntField(unique=True)
    computed_at = fields.DatetimeField()
    # {"recency_days": [4 ints], "frequency": [...], "monetary": [...]} ascending; {} when nobody purchased
    cuts: dict[str, list[int]] = fields.JSONField(default=dict)
    member_count = fields.IntField(default=0)  # members with a settled purchase in the window

    class Meta:
        table = "rfm_cuts"


@dataclass(frozen=True)
class Rfm:
    recency_days: int | None  # days since the last settled purchase in the window (None: none)
    frequency: int
    monetary: int  # fen
    recency_score: int | None  # None while the merchant has no cuts
    frequency_score: int | None
    monetary_score: int | None
    segment: str | None
    segment_name: str | None
    computed_at: datetime | None  # when the cuts were computed
    member_count: int | None


def window_start(now: datetime) -> datetime:
    return now - timedelta(days=WINDOW_DAYS)


def days_since(moment: datetime, *, now: datetime) -> int:
    """Whole days (24 h) from a purchase to now."""
    return max(0, int((now - moment).total_seconds()) // DAY_SECONDS)


def _rank(q: int, n: int) -> int:
    return math.ceil(q * n / 5)


def _cuts_sql(*, merchant_id: int, now: datetime) -> Stmt:
    conditions = " OR ".join(
        f"({rn} * 5 >= n * {q} AND ({rn} - 1) * 5 < n * {q})" for rn in ("r_rn", "f_rn", "m_rn") for q in QUINTILES
    )
    return Stmt(
        "WITH agg AS (SELECT member_id, MAX(occurred_at) AS last_at, COUNT(*) AS f, SUM(amount) AS m FROM purchase"  # noqa: S608 - conditions are code
        " WHERE merchant_id = %s AND status = 'settled' AND occurred_at >= %s AND occurred_at <= %s"
        " GROUP BY member_id),"
        " ranked AS (SELECT last_at, f, m,"
        " ROW_NUMBER() OVER (ORDER BY last_at DESC, member_id) AS r_rn,"
        " ROW_NUMBER() OVER (ORDER BY f, member_id) AS f_rn,"
        " ROW_NUMBER() OVER (ORDER BY m, member_id) AS m_rn,"
        " COUNT(*) OVER () AS n FROM agg)"
        f" SELECT r_rn, f_rn, m_rn, n, last_at, f, m FROM ranked WHERE {conditions}",
        (merchant_id, sqlpath.db_time(window_start(now)), sqlpath.db_time(now)),
    )


def cuts_from_rows(rows: list[tuple[Any, ...]], *, now: datetime) -> tuple[dict[str, list[int]], int]:
    """The cut points from the rows at the cut ranks (r_rn, f_rn, m_rn, n, last_at, f, m), and n."""
    if not rows:
        return {}, 0
    n = int(rows[0][3])
    by_rank: dict[str, dict[int, int]] = {"recency_days": {}, "frequency": {}, "monetary": {}}
    for r_rn, f_rn, m_rn, _, last_at, frequency, monetary in rows:
        moment = clock.as_utc(last_at)
        assert moment is not None  # MAX over at least one row
        by_rank["recency_days"][int(r_rn)] = days_since(moment, now=now)
        by_rank["frequency"][int(f_rn)] = int(frequency)
        by_rank["monetary"][int(m_rn)] = int(monetary)
    return {name: [ranks[_rank(q, n)] for q in QUINTILES] for name, ranks in by_rank.items()}, n


async def compute_cuts(*, merchant_id: int, now: datetime) -> RfmCuts:
    """Replace the merchant's cut points with those of the 12 months up to now (computed in the database)."""
    (rows,) = await sqlpath.select([_cuts_sql(merchant_id=merchant_id, now=now)])
    cuts, count = cuts_from_rows(rows, now=now)
    row, _ = await RfmCuts.update_or_create(
        defaults={"computed_at": now, "cuts": cuts, "member_count": count}, merchant_id=merchant_id
    )
    return row


async def compute_all_cuts(*, now: datetime) -> int:
    """Recompute every merchant's cut points; returns how many merchants."""
    merchant_ids = await Merchant.all().order_by("id").values_list("id", flat=True)
    for merchant_id in merchant_ids:
        await compute_cuts(merchant_id=int(merchant_id), now=now)  # type: ignore[call-overload]
    return len(merchant_ids)


def score_higher_better(value: int, cuts: list[int]) -> int:
    return 1 + sum(value > cut for cut in cuts)


def score_recency(days: int | None, cuts: list[int]) -> int:
    if days is None:
        return 1
    return 5 - sum(days > cut for cut in cuts)


def segment_of(recency: int, frequency: int, monetary: int) -> tuple[str, str]:
    """The named RFM segment of three scores (see the table in the module docstring)."""
    return SEGMENTS[(recency >= HIGH_SCORE, frequency >= HIGH_SCORE, monetary >= HIGH_SCORE)]


def member_rfm_sql(*, merchant_id: int, member_id: int, now: datetime) -> Stmt:
    """The member's own last purchase, count and sum in the window (purchase's (member_id, occurred_at) index)."""
    return Stmt(
        "SELECT MAX(occurred_at), COUNT(*), COALESCE(SUM(amount), 0) FROM purchase"
        " WHERE member_id = %s AND occurred_at >= %s AND occurred_at <= %s AND merchant_id = %s"
        " AND status = 'settled'",
        (member_id, sqlpath.db_time(window_start(now)), sqlpath.db_time(now), merchant_id),
    )


def score_member(row: tuple[Any, ...], cuts: RfmCuts | None, *, now: datetime) -> Rfm:
    """The member's R/F/M (a member_rfm_sql row) scored against the merchant's cuts (no cuts: null scores)."""
    last_at, frequency, monetary = row
    moment = clock.as_utc(last_at)
    days = days_since(moment, now=now) if moment is not None else None
    frequency, monetary = int(frequency or 0), int(monetary or 0)
    if cuts is None or not cuts.cuts:
        return Rfm(
            days, frequency, monetary, None, None, None, None, None,
            cuts.computed_at if cuts else None, cuts.member_count if cuts else None,
        )  # fmt: skip
    r = score_recency(days, cuts.cuts["recency_days"])
    f = score_higher_better(frequency, cuts.cuts["frequency"])
    m = score_higher_better(monetary, cuts.cuts["monetary"])
    code, name = segment_of(r, f, m)
    return Rfm(days, frequency, monetary, r, f, m, code, name, cuts.computed_at, cuts.member_count)
