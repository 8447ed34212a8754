"""The outbox as operators see it: counts and ages per topic, dead messages, retrying one, and the metrics."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import httpx

from models.kernel import clock
from models.kernel.outbox import MAX_ATTEMPTS, OutboxMessage, enqueue
from tests.cards.helpers import EMU, calls, deliver, member_headers, put_template
from tests.conftest import login
from tests.helpers import OTHER_OWNER_PASSWORD, add_staff, error_of, other_merchant

CARD_UPDATE = "card.update"
DEAD_MESSAGES, RETRIES_EACH = 10, 8  # retried all at once


async def rules_changed(client: httpx.AsyncClient, headers: dict[str, str], *, points: int) -> None:
    """New points rules: the card's bonus rule must follow, so one card.update is queued."""
    rules = (await client.get("/api/loyalty/points-rules", headers=headers)).json()
    rules["earn"] = {"points": points, "per_fen": 500}
    saved = await client.put("/api/loyalty/points-rules", json=rules, headers=headers)
    assert saved.status_code == 200, saved.text


async def deliver_until_dead(app: Any) -> None:
    """MAX_ATTEMPTS deliveries, each after the previous one's backoff: what keeps failing ends dead."""
    start = clock.now()
    try:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            moment = start + timedelta(hours=2 * attempt)  # the longest backoff is one hour
            clock.set_clock(lambda moment=moment: moment)
            assert await deliver(app) == 0
    finally:
        clock.set_clock(None)


async def dead_card_update(app: Any, client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    """A card.update that failed every attempt; returns its id."""
    await put_template(client, headers)
    await rules_changed(client, headers, points=3)
    fault = {"path": "/card/update", "errcode": 40013, "errmsg": "invalid appid", "times": MAX_ATTEMPTS}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    await deliver_until_dead(app)
    [message] = await OutboxMessage.filter(topic=CARD_UPDATE)
    assert (message.status, message.attempts) == ("dead", MAX_ATTEMPTS)
    return message.id


async def summary_of(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/api/outbox", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def topic_of(summary: dict[str, Any], topic: str) -> dict[str, Any]:
    [state] = [t for t in summary["topics"] if t["topic"] == topic]
    return state


async def test_summary_counts_per_topic_and_status_and_ages_the_oldest_by_its_creation(app, client, admin, demo):
    await put_template(client, admin)
    await rules_changed(client, admin, points=3)
    notices = [
        await enqueue(merchant_id=demo.merchant.id, topic="member.notice", payload={"member_id": n, "kind": "x"})
        for n in (1, 2)
    ]
    assert notices[0] is not None and notices[1] is not None
    # ids are not time on every engine: the later id was created first and is the oldest
    await OutboxMessage.filter(id=notices[1].id).update(created_at=clock.now() - timedelta(hours=1))
    other = await other_merchant()
    await enqueue(merchant_id=other.merchant.id, topic=CARD_UPDATE, payload={"merchant_id": other.merchant.id})

    summary = await summary_of(client, admin)
    card = topic_of(summary, CARD_UPDATE)
    assert (card["pending"], card["processing"], card["delivered"], card["dead"]) == (1, 0, 0, 0)
    assert 0 <= card["oldest_pending_seconds"] < 60 and 0 <= card["overdue_seconds"] < 60
    notice = topic_of(summary, "member.notice")
    assert notice["pending"] == 2 and 3600 <= notice["oldest_pending_seconds"] < 3660
    assert 3600 <= summary["oldest_pending_seconds"] < 3660 and summary["dead"] == 0

    assert await deliver(app) == 4  # the other merchant's card has no template: delivered as nothing to do
    summary = await summary_of(client, admin)
    card = topic_of(summary, CARD_UPDATE)
    assert (card["pending"], card["delivered"], card["oldest_pending_seconds"], card["overdue_seconds"]) == (
        0,
        1,
        None,
        None,
    )
    assert topic_of(summary, "member.notice")["delivered"] == 2 and summary["oldest_pending_seconds"] is None


async def test_a_message_that_failed_every_attempt_is_dead_with_its_last_error(app, client, admin, demo):
    message_id = await dead_card_update(app, client, admin)
    assert len(await calls(client, "/card/update")) == MAX_ATTEMPTS
    assert topic_of(await summary_of(client, admin), CARD_UPDATE)["dead"] == 1

    response = await client.get("/api/outbox/dead", headers=admin)
    assert response.status_code == 200, response.text
    [dead] = response.json()["items"]
    assert (dead["id"], dead["topic"], dead["attempts"]) == (message_id, CARD_UPDATE, MAX_ATTEMPTS)
    assert "40013" in dead["last_error"] and "card/update" in dead["last_error"]
    assert dead["payload"] == {"merchant_id": demo.merchant.id}
    assert dead["died_at"] > dead["created_at"] and response.json()["next_cursor"] is None
    assert (await client.get("/api/outbox/dead", params={"topic": "member.notice"}, headers=admin)).json() == {
        "items": [],
        "next_cursor": None,
    }


async def test_a_retried_dead_message_is_due_at_once_and_delivered(app, client, admin, demo):
    message_id = await dead_card_update(app, client, admin)
    retried = await client.post(f"/api/outbox/{message_id}/retry", headers=admin)
    assert retried.status_code == 200, retried.text
    body = retried.json()
    assert (body["id"], body["status"], body["attempts"]) == (message_id, "pending", 0)
    assert "40013" in body["last_error"]  # why it died stays visible until the next attempt
    assert (await client.get("/api/outbox/dead", headers=admin)).json()["items"] == []
    assert topic_of(await summary_of(client, admin), CARD_UPDATE)["pending"] == 1

    assert await deliver(app) == 1  # due now: no clock moved
    message = await OutboxMessage.get(id=message_id)
    assert (message.status, message.attempts, message.last_error) == ("delivered", 1, "")
    assert len(await calls(client, "/card/update")) == MAX_ATTEMPTS + 1

    again = await client.post(f"/api/outbox/{message_id}/retry", headers=admin)
    assert again.status_code == 409
    assert error_of(again)["code"] == "outbox.not_dead" and error_of(again)["current_status"] == "delivered"


async def test_retry_is_for_dead_messages_of_the_caller_s_merchant_and_for_admins(app, client, admin, demo):
    message_id = await dead_card_update(app, client, admin)
    pending = await enqueue(merchant_id=demo.merchant.id, topic="member.notice", payload={"member_id": 1})
    assert pending is not None
    not_dead = await client.post(f"/api/outbox/{pending.id}/retry", headers=admin)
    assert not_dead.status_code == 409 and error_of(not_dead)["current_status"] == "pending"

    other = await other_merchant()
    other_owner = await login(client, "other-owner", OTHER_OWNER_PASSWORD)
    for path, headers in ((f"/api/outbox/{message_id}/retry", other_owner), ("/api/outbox/99999/retry", admin)):
        missing = await client.post(path, headers=headers)
        assert missing.status_code == 404 and error_of(missing)["code"] == "outbox.not_found"
    assert (await client.get("/api/outbox/dead", headers=other_owner)).json()["items"] == []
    assert all(t["dead"] == 0 for t in (await summary_of(client, other_owner))["topics"])
    assert other.merchant.id != demo.merchant.id

    manager = await add_staff(client, admin, username="manager1", role="store_manager", store_id=demo.store.id)
    member = member_headers(app, member_id=1, merchant_id=demo.merchant.id)
    for method, path in (
        ("GET", "/api/outbox"),
        ("GET", "/api/outbox/dead"),
        ("POST", f"/api/outbox/{message_id}/retry"),
    ):
        for headers in (manager, member):
            denied = await client.request(method, path, headers=headers)
            assert denied.status_code == 403 and error_of(denied)["code"] == "auth.role_forbidden"
        assert (await client.request(method, path)).status_code == 401
    assert (await OutboxMessage.get(id=message_id)).status == "dead"


async def test_concurrent_retries_of_a_dead_message_let_exactly_one_win(app, client, admin, demo):
    card_update = await dead_card_update(app, client, admin)
    for n in range(DEAD_MESSAGES - 1):  # no function delivers this topic: every attempt fails
        await enqueue(merchant_id=demo.merchant.id, topic="test.unrouted", payload={"n": n})
    await deliver_until_dead(app)
    dead = [m.id for m in await OutboxMessage.filter(status="dead").order_by("id")]
    assert card_update in dead and len(dead) == DEAD_MESSAGES

    async def retry(message_id: int) -> tuple[int, int, str]:
        answer = await client.post(f"/api/outbox/{message_id}/retry", headers=admin)
        return message_id, answer.status_code, error_of(answer)["code"] if answer.status_code != 200 else ""

    answers = await asyncio.gather(*[retry(m) for m in dead for _ in range(RETRIES_EACH)])
    for message_id in dead:
        statuses = sorted((status, code) for m, status, code in answers if m == message_id)
        assert statuses == [(200, "")] + [(409, "outbox.not_dead")] * (RETRIES_EACH - 1), (message_id, statuses)
    assert await OutboxMessage.filter(status="pending", attempts=0).count() == DEAD_MESSAGES


async def test_dead_messages_page_by_the_time_they_died_with_personal_values_masked(app, client, admin, demo):
    now = clock.now().replace(microsecond=0)
    died_minutes_ago = [30, 10, 20, 10]  # ids ascending; two died at the same moment
    ids = []
    for n, minutes in enumerate(died_minutes_ago):
        payload = {"touser": f"openid-{n}", "template_id": "TPL", "data": {"name": {"value": "韩梅梅"}}, "n": n}
        message = await enqueue(merchant_id=demo.merchant.id, topic="wechat.template_send", payload=payload)
        assert message is not None
        died = now - timedelta(minutes=minutes)
        await OutboxMessage.filter(id=message.id).update(status="dead", attempts=MAX_ATTEMPTS, next_attempt_at=died)
        ids.append(message.id)

    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = await client.get("/api/outbox/dead", params=params, headers=admin)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert [m["id"] for m in seen] == [ids[3], ids[1], ids[2], ids[0]]  # latest death first, then the higher id
    assert seen[0]["payload"] == {"touser": "***", "template_id": "TPL", "data": "***", "n": "***"}

    for bad in ("nonsense", "12-x", "9" * 25 + "-1", "9" * 19 + "-1", "1-" + "9" * 19):
        answer = await client.get("/api/outbox/dead", params={"cursor": bad}, headers=admin)
        assert answer.status_code == 422 and error_of(answer)["field"] == "cursor", answer.text


def gauge(text: str, name: str, **labels: str) -> float:
    """The sample of `name` with exactly these labels (in any order) in a Prometheus text page."""
    for line in text.splitlines():
        sample = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if sample and sample[1] == name and dict(re.findall(r'(\w+)="([^"]*)"', sample[2])) == labels:
            return float(sample[3])
    raise AssertionError(f"{name}{labels} not in /metrics")


async def test_metrics_show_the_backlog_per_topic_sampled_at_most_every_15_seconds(app, client, admin, demo):
    await dead_card_update(app, client, admin)
    other = await other_merchant()
    await enqueue(merchant_id=other.merchant.id, topic="member.notice", payload={"member_id": 1})
    await OutboxMessage.filter(topic="member.notice").update(created_at=clock.now() - timedelta(minutes=10))
    start = clock.now() + timedelta(minutes=1)  # past any sample an earlier test left
    clock.set_clock(lambda: start)
    try:
        scraped = await client.get("/metrics")  # public, as before
        assert scraped.status_code == 200
        text = scraped.text
        assert gauge(text, "huiyuan_outbox_messages", topic=CARD_UPDATE, status="dead") == 1
        assert gauge(text, "huiyuan_outbox_messages", topic=CARD_UPDATE, status="pending") == 0
        assert gauge(text, "huiyuan_outbox_messages", topic="member.notice", status="pending") == 1  # all merchants
        assert gauge(text, "huiyuan_outbox_messages", topic="card.sync", status="pending") == 0  # known, empty
        assert 660 <= gauge(text, "huiyuan_outbox_oldest_pending_seconds", topic="member.notice") < 720
        assert gauge(text, "huiyuan_outbox_oldest_pending_seconds", topic=CARD_UPDATE) == 0
        assert 'status="delivered"' not in text

        await enqueue(merchant_id=demo.merchant.id, topic="member.notice", payload={"member_id": 2})
        cached = (await client.get("/metrics")).text
        assert gauge(cached, "huiyuan_outbox_messages", topic="member.notice", status="pending") == 1

        later = start + timedelta(seconds=15)
        clock.set_clock(lambda: later)
        fresh = (await client.get("/metrics")).text
        assert gauge(fresh, "huiyuan_outbox_messages", topic="member.notice", status="pending") == 2
    finally:
        clock.set_clock(None)
