"""Login lockout under concurrency, password hashing off the event loop, revocation that survives Redis."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis

from jobs.scheduler import run_job
from models.tenancy import passwords
from models.tenancy.staff import RevokedToken
from server.seed import DEV_ADMIN_PASSWORD
from tests.helpers import error_of
from tests.tenancy.test_auth import pinned_clock  # noqa: F401 - fixture

LOGIN = "/api/auth/login"


async def _login(client, username, password):
    return await client.post(LOGIN, json={"username": username, "password": password})


class CountingVerifier:
    """Wraps the pool's password check (it runs in worker threads) and counts the checks made."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, password_hash, password):
        with self._lock:
            self.calls += 1
        return self.inner(password_hash, password)


@pytest.fixture
def verifications(monkeypatch) -> Iterator[CountingVerifier]:
    counter = CountingVerifier(passwords._verify_sync)
    monkeypatch.setattr(passwords, "_verify_sync", counter)
    yield counter


# --- item 4: the lockout holds under concurrency, unknown usernames are counted the same way


async def test_concurrent_logins_make_at_most_max_failures_password_checks(client, demo, app, verifications):
    max_failures = app.ctx.settings.security.login_max_failures
    attempts = [f"wrong-{n}" for n in range(39)] + [DEV_ADMIN_PASSWORD]
    responses = await asyncio.gather(*(_login(client, demo.admin_username, p) for p in attempts))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {401, 423, 200}, statuses
    assert verifications.calls <= max_failures, verifications.calls
    assert sum(1 for s in statuses if s != 423) <= max_failures, statuses
    for response in responses:
        if response.status_code == 423:
            error = error_of(response)
            assert error["code"] == "auth.locked"
            assert 0 < error["retry_after"] <= app.ctx.settings.security.login_lock_seconds + 1
            assert response.headers["retry-after"] == str(error["retry_after"])
    if statuses[-1] == 200:  # the right password may only win inside the budget, never after the lock
        assert statuses.count(401) < max_failures, statuses
    else:
        assert statuses[-1] == 423, statuses
        after = await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
        assert after.status_code == 423, after.text


async def test_an_unknown_username_gets_the_same_answers_as_a_known_one(client, demo, app, verifications):
    max_failures = app.ctx.settings.security.login_max_failures
    known = [await _login(client, demo.admin_username, f"wrong-{n}") for n in range(max_failures + 2)]
    unknown = [await _login(client, "nobody-at-all", f"wrong-{n}") for n in range(max_failures + 2)]
    assert [r.status_code for r in known] == [401] * max_failures + [423, 423]
    assert [r.status_code for r in unknown] == [r.status_code for r in known]
    for mine, theirs in zip(unknown, known, strict=True):
        assert error_of(mine)["code"] == error_of(theirs)["code"]
        assert error_of(mine)["message"] == error_of(theirs)["message"]
    assert abs(error_of(unknown[-1])["retry_after"] - error_of(known[-1])["retry_after"]) <= 2
    assert verifications.calls == 2 * max_failures  # unknown names are checked (against a dummy hash) too


async def test_concurrent_logins_for_an_unknown_username_are_limited_too(client, demo, app, verifications):
    max_failures = app.ctx.settings.security.login_max_failures
    responses = await asyncio.gather(*(_login(client, "ghost", f"guess-{n}") for n in range(30)))
    statuses = [r.status_code for r in responses]
    assert sum(1 for s in statuses if s == 401) <= max_failures, statuses
    assert statuses.count(423) >= 30 - max_failures, statuses
    assert verifications.calls <= max_failures


async def test_a_lock_expires_for_an_unknown_username(client, demo, app, pinned_clock):  # noqa: F811
    for n in range(5):
        assert (await _login(client, "ghost", f"guess-{n}")).status_code == 401
    assert (await _login(client, "ghost", "again")).status_code == 423
    pinned_clock.advance(app.ctx.settings.security.login_lock_seconds + 1)
    assert (await _login(client, "ghost", "again")).status_code == 401


# --- item 5: hashing runs in a bounded pool, off the event loop


async def test_healthz_answers_while_twenty_logins_are_hashing(client, demo):
    logins = [asyncio.create_task(_login(client, f"flood-{n}", "some-password")) for n in range(20)]
    for _ in range(200):  # until the logins have reached their password checks
        if passwords.pool().in_flight:
            break
        await asyncio.sleep(0.005)
    health = await client.get("/healthz")
    finished_first = sum(1 for task in logins if task.done())
    assert health.status_code == 200, health.text
    results = await asyncio.gather(*logins)
    assert [r.status_code for r in results] == [401] * 20
    # each check takes its thread for a while: most logins are still waiting when the health check has answered
    assert finished_first < 10, finished_first


async def test_too_many_waiting_checks_answer_503_busy_with_retry_after(client, demo, app):
    security = app.ctx.settings.security
    passwords.configure(workers=1, max_waiting=1)
    try:
        responses = await asyncio.gather(*(_login(client, f"busy-{n}", "some-password") for n in range(8)))
    finally:
        passwords.configure(workers=security.hash_workers, max_waiting=security.hash_queue)
    statuses = sorted(r.status_code for r in responses)
    assert 401 in statuses and 503 in statuses, statuses
    assert set(statuses) == {401, 503}
    busy = next(r for r in responses if r.status_code == 503)
    assert error_of(busy)["code"] == "auth.busy"
    assert busy.headers["retry-after"] == str(passwords.BUSY_RETRY_AFTER)


# --- item 6: revocation is kept in the database, Redis is only its cache


async def _token_pair(client, demo) -> dict:
    response = await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    assert response.status_code == 200, response.text
    return response.json()


def _bearer(pair: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def _flush_namespace(app) -> None:
    redis = app.ctx.redis
    async for key in redis.scan_iter(match=app.ctx.settings.redis.key_prefix + "*", count=500):
        await redis.delete(key)


async def test_a_logged_out_token_stays_refused_after_redis_loses_its_keys(client, demo, app):
    pair = await _token_pair(client, demo)
    assert (await client.post("/api/auth/logout", json={}, headers=_bearer(pair))).status_code == 204
    await _flush_namespace(app)  # what a Redis restart without persistence leaves
    response = await client.get("/api/merchant", headers=_bearer(pair))
    assert response.status_code == 401, response.text
    assert error_of(response)["code"] == "auth.token_revoked"
    # a process starting now (its set loaded from the database) refuses it too
    app.ctx.revoked.clear()
    await app.ctx.revoked.load()
    jti = (await RevokedToken.all().values_list("jti", flat=True))[0]
    assert jti in app.ctx.revoked
    assert (await client.get("/api/merchant", headers=_bearer(pair))).status_code == 401


async def test_with_redis_unreachable_requests_work_and_revoked_tokens_stay_refused(client, demo, app):
    kept = await _token_pair(client, demo)
    dropped = await _token_pair(client, demo)
    assert (await client.post("/api/auth/logout", json={}, headers=_bearer(dropped))).status_code == 204
    real = app.ctx.redis
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, decode_responses=True)
    app.ctx.redis = dead
    try:
        ok = await client.get("/api/merchant", headers=_bearer(kept))
        assert ok.status_code == 200, ok.text
        refused = await client.get("/api/merchant", headers=_bearer(dropped))
        assert refused.status_code == 401, refused.text
        assert error_of(refused)["code"] == "auth.token_revoked"
        # logging out while Redis is down still revokes (in the database)
        assert (await client.post("/api/auth/logout", json={}, headers=_bearer(kept))).status_code == 204
        after = await client.get("/api/merchant", headers=_bearer(kept))
        assert after.status_code == 401, after.text
    finally:
        app.ctx.redis = real
        await dead.aclose()
    assert (await client.get("/api/merchant", headers=_bearer(kept))).status_code == 401


async def test_the_purge_job_forgets_revocations_of_expired_tokens(client, demo, app, pinned_clock):  # noqa: F811
    pair = await _token_pair(client, demo)
    assert (await client.post("/api/auth/logout", json={}, headers=_bearer(pair))).status_code == 204
    assert await run_job("auth.purge", app.ctx.jobs) == "purged 0 expired token revocations, 0 idle login counts"
    assert await RevokedToken.all().count() == 1
    pinned_clock.advance(86400 + 1)
    assert await run_job("auth.purge", app.ctx.jobs) == "purged 1 expired token revocations, 1 idle login counts"
    assert await RevokedToken.all().count() == 0
