"""The one table of what calls what: official-account events, pay notifies, outbox topics, domain hooks, jobs.

Every process (the web server, the scheduler, each CLI command) imports this module and calls `install()`, so
what runs never depends on which modules happen to have been imported. Read a row to find the one domain
function an event reaches; nothing registers itself anywhere else.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from jobs import analytics as analytics_jobs
from jobs import auth as auth_jobs
from jobs import cards as card_jobs
from jobs import coupons as coupon_jobs
from jobs import members as member_jobs
from jobs import outbox as outbox_jobs
from jobs import packages as package_jobs
from jobs import payments as payment_jobs
from jobs import points as points_jobs
from jobs import portrait as portrait_jobs
from jobs import segments as segment_jobs
from jobs import tiers as tier_jobs
from jobs.context import JobSpec
from models.cards import activation as card_activation
from models.cards import events as card_events
from models.cards import sync as card_sync
from models.cards import template as card_template
from models.coupons import changes as coupon_changes
from models.coupons import issue as coupon_issue
from models.ledger import balance_lots
from models.ledger import books as ledger_books
from models.members import members as member_profiles
from models.onboarding import follow
from models.payments import refund_settle, settle
from models.points import expiry as points_expiry
from models.points import lots as points_lots
from models.points import rules as points_rules
from models.segments import evaluate as segments
from models.segments import tags as segment_tags
from models.tiers import growth as tier_growth
from models.tiers import standing as tier_standing
from wechat.events import Handler as OAHandler
from wechat.events import OAEvent, Reply
from wechat.paynotify import Handler as PayHandler
from wechat.paynotify import NotifyNotProcessed, PayNotify

log = logging.getLogger("huiyuan.wiring")

# Official-account pushes (kind = "event:<Event lowercased>" or "msg:<MsgType>"), run in the push's
# exactly-once transaction (models.kernel.inbound.receive_push); the first reply is answered.
OA_EVENTS: dict[str, tuple[OAHandler, ...]] = {
    "event:subscribe": (follow.on_follow_or_scan,),
    "event:scan": (follow.on_follow_or_scan,),
    "event:unsubscribe": (follow.on_unfollow,),
    "event:card_pass_check": (card_template.on_card_review,),
    "event:card_not_pass_check": (card_template.on_card_review,),
    "event:user_get_card": (card_events.on_card_claimed,),
    "event:user_del_card": (card_events.on_card_removed,),
    "event:user_view_card": (card_events.on_card_visit,),
    "event:user_enter_session_from_card": (card_events.on_card_visit,),
    "event:submit_membercard_user_info": (card_events.on_activation_form,),
}

# Verified WeChat Pay notifies by kind; each function is idempotent (a redelivery changes nothing).
PAY_NOTIFIES: dict[str, PayHandler] = {
    "transaction": settle.settle_pay_notify,
    "refund": refund_settle.settle_refund_notify,
}

# Outbox topics and the function that delivers each message (called with the WeChat gateway and the row).
OUTBOX_TOPICS: dict[str, outbox_jobs.Deliver] = {
    card_events.ACTIVATE_TOPIC: card_jobs.activate_card,
    card_activation.ACTIVATE_CALL_TOPIC: card_jobs.call_activate,
    card_sync.SYNC_TOPIC: card_jobs.sync_member_card,
    card_template.CARD_UPDATE_TOPIC: card_jobs.update_card,
    refund_settle.REFUND_TOPIC: payment_jobs.send_refund,
    points_expiry.NOTICE_TOPIC: points_jobs.deliver_member_notice,
    outbox_jobs.TEMPLATE_SEND_TOPIC: outbox_jobs.send_template_message,
    segments.MEMBER_CHANGED_TOPIC: segment_jobs.member_changed,
    segment_tags.EVALUATE_TOPIC: segment_jobs.evaluate_tag,
}

# Domain hooks: listeners run in order inside the transaction of the change.
# (book, entry) after every new points or stored-value ledger row: each listener with its batched form, which
# returns the same work as statements for a row written by a batched write (models.kernel.sqlpath), or None
LEDGER_ENTRY_WRITTEN = (
    # points: a credit opens a lot, a debit consumes lots
    (points_lots.on_ledger_entry, points_lots.entry_statements),
    # stored value: principal and bonus lots
    (balance_lots.on_ledger_entry, balance_lots.entry_statements),
    # the WeChat card shows the new points / balance
    (card_sync.on_ledger_entry, card_sync.entry_statements),
    # stored value: recharges and refunds kept as the total_recharge tier basis
    (tier_growth.on_ledger_entry, tier_growth.entry_statements),
    # rule tags: the member's re-evaluated after the commit (a purchase reaches them through its points entry)
    (segments.on_ledger_entry, segments.entry_statements),
)
# (merchant_id=, member_id=) after every recorded tier move
TIER_CHANGED = (card_sync.on_tier_changed, segments.on_tier_changed)
PROFILE_CHANGED = (segments.on_profile_changed,)  # (merchant_id=, member_id=) after a profile edit
# (members=[(merchant_id, member_id)]) after coupons are issued, redeemed, restored, expired, voided or unvoided
COUPONS_CHANGED = (card_sync.on_coupons_changed,)  # the card shows the count of usable coupons
POINTS_RULES_CHANGED = (card_template.on_points_rules_changed,)  # (merchant_id=): the card shows the bonus rule

# Scheduled jobs by stable dotted id (python -m jobs.scheduler list / run ID).
SCHEDULED_JOBS: Mapping[str, JobSpec] = {
    spec.id: spec
    for spec in (
        JobSpec("points.expire", points_jobs.expire_points, every_seconds=600),
        JobSpec("points.remind", points_jobs.remind_expiring_points, every_seconds=3600),
        JobSpec("coupons.expire", coupon_jobs.expire, every_seconds=600),
        JobSpec("coupons.remind", coupon_jobs.remind, every_seconds=3600),
        JobSpec("coupons.plan_packs", coupon_jobs.plan_packs, every_seconds=3600),
        JobSpec("tiers.settle", tier_jobs.settle, every_seconds=3600),
        JobSpec("tiers.notice", tier_jobs.notice, every_seconds=3600),
        JobSpec("tiers.manual_expire", tier_jobs.manual_expire, every_seconds=3600),
        JobSpec("payments.reconcile", payment_jobs.reconcile, every_seconds=60),
        JobSpec("payments.statement", payment_jobs.statement, every_seconds=86400),
        JobSpec("refunds.reconcile", payment_jobs.reconcile_refunds, every_seconds=300),
        JobSpec("plans.remind", payment_jobs.remind_expiring_plans, every_seconds=3600),
        # a long import outlives the 20 s lock: another process's tick may then run the other waiting imports
        JobSpec("auth.purge", auth_jobs.purge, every_seconds=3600),
        JobSpec("packages.expire", package_jobs.expire_packages, every_seconds=600),
        JobSpec("members.imports", member_jobs.run_imports, every_seconds=5, lock_seconds=20),
        # nightly: one aggregate per member over the merchant's purchases, ranked in SQL (models/portrait/rfm.py)
        JobSpec("portrait.rfm_cuts", portrait_jobs.rfm_cuts, every_seconds=86400, lock_seconds=3600),
        # the days touched since the watermark, recomputed whole from purchase (models/analytics/rollup.py)
        JobSpec("analytics.rollup", analytics_jobs.rollup, every_seconds=60, lock_seconds=300),
        JobSpec("segments.refresh", segment_jobs.refresh, every_seconds=86400, lock_seconds=3600),
    )
}


def install() -> None:
    """Install the domain hooks' listeners (idempotent); every process calls this before any domain work."""
    ledger_books.ENTRY_WRITTEN.install(listener for listener, _ in LEDGER_ENTRY_WRITTEN)
    ledger_books.ENTRY_STATEMENTS.install(batched for _, batched in LEDGER_ENTRY_WRITTEN)
    tier_standing.TIER_CHANGED.install(TIER_CHANGED)
    member_profiles.PROFILE_CHANGED.install(PROFILE_CHANGED)
    tier_standing.GIFT_COUPONS.install((coupon_issue.grant_gift_coupons,))
    coupon_changes.COUPONS_CHANGED.install(COUPONS_CHANGED)
    points_rules.RULES_CHANGED.install(POINTS_RULES_CHANGED)


async def dispatch_oa_event(event: OAEvent) -> Reply | None:
    """Run every function of the event's kind (in the caller's transaction); the first reply wins."""
    handlers = OA_EVENTS.get(event.kind, ())
    if not handlers:
        log.info("no handler for %s from %s", event.kind, event.appid)
    reply: Reply | None = None
    for handler in handlers:
        result = await handler(event)
        if reply is None and result is not None:
            reply = result
    return reply


async def dispatch_pay_notify(notify: PayNotify) -> bool:
    """Hand a verified notify to its kind's function; True only when there is one and it did not raise."""
    handler = PAY_NOTIFIES.get(notify.kind)
    if handler is None:
        log.warning("no handler for %s %s notify of %s", notify.version, notify.kind, notify.mch_id)
        return False
    try:
        await handler(notify)
    except NotifyNotProcessed as exc:
        log.warning("%s notify %s of %s not processed: %s", notify.kind, notify.raw_id, notify.mch_id, exc)
        return False
    except Exception:  # noqa: BLE001 - any failure means "not processed": WeChat delivers again
        log.exception("%s notify %s of %s: %s failed", notify.kind, notify.raw_id, notify.mch_id, handler.__name__)
        return False
    return True
