"""Configuration read once per process, changes pushed to every process; revocations held in each process."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from tortoise.expressions import F

from models.kernel.config_cache import ConfigVersion
from models.kernel.pushed import Feed, RevokedSet, run_listener
from models.tenancy import staff
from models.tenancy.program import LoyaltyProgram
from server.app import CONFIG_CHANNEL
from server.auth import REVOKED_CHANNEL
from server.seed import DEV_ADMIN_PASSWORD
from tests.points.helpers import buy, new_member, put_rules

CONFIG_TABLES = re.compile(
    r"\b(loyalty_program|merchant|tier|onboarding_settings|wechat_account|config_version|revoked_token)\b"
)


class _Statements(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append(str(record.args[0]) if record.args else record.getMessage())


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement the ORM sends meanwhile (Tortoise logs each one at DEBUG on tortoise.db_client)."""
    logger, handler = logging.getLogger("tortoise.db_client"), _Statements()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield handler.seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _change_rules_elsewhere(merchant_id: int, per_fen: int) -> int:
    """What another process's change leaves in the database: the row and the bumped version, nothing in ours."""
    program = await LoyaltyProgram.get(merchant_id=merchant_id)
    rules = dict(program.points_rules)
    rules["earn"] = {"points": 1, "per_fen": per_fen}
    await LoyaltyProgram.filter(id=program.id).update(points_rules=rules)
    await ConfigVersion.filter(merchant_id=merchant_id).update(version=F("version") + 1)
    return int((await ConfigVersion.get(merchant_id=merchant_id)).version)


async def _points_of_purchase(client, admin, member: int, order_no: str) -> int:
    return int((await buy(client, admin, member, order_no, 10_000))["points"])


async def test_a_rules_change_through_the_api_applies_on_the_next_request(client, admin):
    member = await new_member(client, admin)
    await put_rules(client, admin, earn={"points": 1, "per_fen": 1000})
    assert await _points_of_purchase(client, admin, member, "A-1") == 10
    await put_rules(client, admin, earn={"points": 1, "per_fen": 100})
    assert await _points_of_purchase(client, admin, member, "A-2") == 100


async def test_a_change_by_another_process_applies_at_once_when_published(client, admin, demo, app):
    member = await new_member(client, admin)
    await put_rules(client, admin, earn={"points": 1, "per_fen": 1000})
    assert await _points_of_purchase(client, admin, member, "B-1") == 10  # cached now
    version = await _change_rules_elsewhere(demo.merchant.id, 500)
    assert await _points_of_purchase(client, admin, member, "B-2") == 10  # not yet told: still the cached rules
    await app.ctx.redis.publish(app.ctx.keys(CONFIG_CHANNEL), f"{demo.merchant.id}:{version}")
    for attempt in range(20):
        await asyncio.sleep(0.05)
        if (points := await _points_of_purchase(client, admin, member, f"B-3-{attempt}")) == 20:
            break
    assert points == 20


async def test_a_change_whose_message_was_lost_applies_on_the_poll(client, admin, demo, app):
    member = await new_member(client, admin)
    await put_rules(client, admin, earn={"points": 1, "per_fen": 1000})
    assert await _points_of_purchase(client, admin, member, "C-1") == 10
    await _change_rules_elsewhere(demo.merchant.id, 250)
    for attempt in range(int(app.ctx.settings.cache.poll_seconds * 10) + 20):
        await asyncio.sleep(0.1)
        if (points := await _points_of_purchase(client, admin, member, f"C-2-{attempt}")) == 40:
            break
    assert points == 40


async def test_after_warm_up_a_purchase_and_a_points_read_read_no_configuration(client, admin):
    member = await new_member(client, admin)
    await put_rules(client, admin, earn={"points": 1, "per_fen": 1000})
    await _points_of_purchase(client, admin, member, "D-1")
    await client.get(f"/api/members/{member}/points", headers=admin)
    with statements() as seen:
        assert await _points_of_purchase(client, admin, member, "D-2") == 10
        assert (await client.get(f"/api/members/{member}/points", headers=admin)).status_code == 200
    assert seen, "the statement log caught nothing: the counting is broken"
    assert [s for s in seen if CONFIG_TABLES.search(s)] == []


async def test_a_revocation_reaches_another_process_through_pub_sub(client, demo, app):
    other = RevokedSet(load_all=staff.unexpired_revocations, load_since=staff.revocations_since)
    await other.load()
    feed = Feed(channel=app.ctx.keys(REVOKED_CHANNEL), apply=other.apply_message, poll=other.poll)
    listener = asyncio.create_task(run_listener(redis=app.ctx.redis, feeds=[feed], poll_seconds=3600))
    try:
        await asyncio.sleep(0.1)  # subscribed
        login = await client.post(
            "/api/auth/login", json={"username": demo.admin_username, "password": DEV_ADMIN_PASSWORD}
        )
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        assert (await client.post("/api/auth/logout", json={}, headers=headers)).status_code == 204
        jti = (await staff.RevokedToken.all().values_list("jti", flat=True))[0]
        for _ in range(20):
            if jti in other:
                break
            await asyncio.sleep(0.05)
        assert jti in other
        assert (await client.get("/api/merchant", headers=headers)).status_code == 401
    finally:
        listener.cancel()
