"""Staff login, lockout, refresh-token rotation, logout and bearer-token checks over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from models.kernel import clock
from server.seed import DEV_ADMIN_PASSWORD
from tests.helpers import error_of


class PinnedClock:
    """The app's clock, frozen at a start time and moved only by the test."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC)

    def advance(self, seconds: int) -> None:
        self.current += timedelta(seconds=seconds)


@pytest.fixture
def pinned_clock() -> Iterator[PinnedClock]:
    pinned = PinnedClock()
    clock.set_clock(lambda: pinned.current)
    try:
        yield pinned
    finally:
        clock.set_clock(None)


async def _login(client, username, password):
    return await client.post("/api/auth/login", json={"username": username, "password": password})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_login_returns_token_pair_for_the_owner(client, demo, app):
    response = await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "staff_id",
        "merchant_id",
        "role",
        "store_id",
    }
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == app.ctx.settings.security.access_token_ttl
    assert body["merchant_id"] == demo.merchant.id
    assert body["role"] == "owner"
    assert body["store_id"] is None
    assert len(body["refresh_token"]) >= 40
    claims = jwt.decode(body["access_token"], app.ctx.settings.security.jwt_secret, algorithms=["HS256"])
    assert claims["sub"] == str(body["staff_id"])
    assert claims["mid"] == demo.merchant.id
    assert claims["exp"] - claims["iat"] == app.ctx.settings.security.access_token_ttl
    me = await client.get("/api/merchant", headers=_bearer(body["access_token"]))
    assert me.status_code == 200
    assert me.json()["id"] == demo.merchant.id


async def test_wrong_password_is_401_invalid_credentials(client, demo):
    response = await _login(client, demo.admin_username, "not-the-password")
    assert response.status_code == 401
    assert error_of(response)["code"] == "auth.invalid_credentials"


async def test_unknown_user_is_401_with_the_same_code_and_message(client, demo):
    unknown = await _login(client, "nobody-here", DEV_ADMIN_PASSWORD)
    wrong = await _login(client, demo.admin_username, "not-the-password")
    assert unknown.status_code == 401
    assert error_of(unknown) == error_of(wrong)
    assert error_of(unknown)["code"] == "auth.invalid_credentials"


async def test_five_failures_lock_the_account_until_the_lock_time_passes(client, demo, app, pinned_clock):
    security = app.ctx.settings.security
    assert security.login_max_failures == 5
    for attempt in range(5):
        response = await _login(client, demo.admin_username, f"wrong-{attempt}")
        assert response.status_code == 401, (attempt, response.text)
        assert error_of(response)["code"] == "auth.invalid_credentials"
    locked = await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    assert locked.status_code == 423
    error = error_of(locked)
    assert error["code"] == "auth.locked"
    assert 0 < error["retry_after"] <= security.login_lock_seconds + 1

    pinned_clock.advance(security.login_lock_seconds - 5)
    still_locked = await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    assert still_locked.status_code == 423
    assert error_of(still_locked)["code"] == "auth.locked"

    pinned_clock.advance(6)
    unlocked = await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    assert unlocked.status_code == 200, unlocked.text


async def test_lock_applies_while_it_lasts_even_to_a_wrong_password(client, demo, pinned_clock):
    for attempt in range(5):
        await _login(client, demo.admin_username, f"wrong-{attempt}")
    response = await _login(client, demo.admin_username, "wrong-again")
    assert response.status_code == 423
    assert error_of(response)["code"] == "auth.locked"


async def test_a_success_resets_the_failure_count(client, demo, pinned_clock):
    for attempt in range(4):
        assert (await _login(client, demo.admin_username, f"wrong-{attempt}")).status_code == 401
    assert (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).status_code == 200
    for attempt in range(4):
        assert (await _login(client, demo.admin_username, f"wrong-{attempt}")).status_code == 401
    response = await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)
    assert response.status_code == 200, response.text


async def test_failures_count_again_from_zero_after_a_lock_expires(client, demo, app, pinned_clock):
    for attempt in range(5):
        await _login(client, demo.admin_username, f"wrong-{attempt}")
    pinned_clock.advance(app.ctx.settings.security.login_lock_seconds + 1)
    for attempt in range(4):
        assert (await _login(client, demo.admin_username, f"wrong-{attempt}")).status_code == 401
    assert (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).status_code == 200


async def test_refresh_rotates_and_reuse_revokes_the_family(client, demo):
    first = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    rotated = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["staff_id"] == first["staff_id"]
    assert (await client.get("/api/merchant", headers=_bearer(second["access_token"]))).status_code == 200

    reused = await client.post("/api/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401
    assert error_of(reused)["code"] == "auth.refresh_reused"

    newest = await client.post("/api/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert newest.status_code == 401
    assert error_of(newest)["code"] == "auth.refresh_reused"


async def test_reuse_leaves_other_login_sessions_alone(client, demo):
    session_a = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    session_b = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    await client.post("/api/auth/refresh", json={"refresh_token": session_a["refresh_token"]})
    await client.post("/api/auth/refresh", json={"refresh_token": session_a["refresh_token"]})
    response = await client.post("/api/auth/refresh", json={"refresh_token": session_b["refresh_token"]})
    assert response.status_code == 200, response.text


async def test_unknown_refresh_token_is_401_refresh_invalid(client, demo):
    response = await client.post("/api/auth/refresh", json={"refresh_token": "x" * 43})
    assert response.status_code == 401
    assert error_of(response)["code"] == "auth.refresh_invalid"


async def test_expired_refresh_token_is_401_refresh_invalid(client, demo, app, pinned_clock):
    tokens = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    pinned_clock.advance(app.ctx.settings.security.refresh_token_ttl + 1)
    response = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert response.status_code == 401
    assert error_of(response)["code"] == "auth.refresh_invalid"


async def test_logout_revokes_the_access_token_and_the_refresh_chain(client, demo):
    tokens = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    other = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    response = await client.post(
        "/api/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=_bearer(tokens["access_token"])
    )
    assert response.status_code == 204, response.text
    assert response.content == b""

    after = await client.get("/api/merchant", headers=_bearer(tokens["access_token"]))
    assert after.status_code == 401
    assert error_of(after)["code"] == "auth.token_revoked"
    refreshed = await client.post("/api/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 401
    assert error_of(refreshed)["code"] == "auth.refresh_reused"

    assert (await client.get("/api/merchant", headers=_bearer(other["access_token"]))).status_code == 200
    other_refresh = await client.post("/api/auth/refresh", json={"refresh_token": other["refresh_token"]})
    assert other_refresh.status_code == 200, other_refresh.text


async def test_logout_without_refresh_token_revokes_every_chain(client, demo):
    session_a = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    session_b = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    response = await client.post("/api/auth/logout", json={}, headers=_bearer(session_a["access_token"]))
    assert response.status_code == 204, response.text
    for session in (session_a, session_b):
        refreshed = await client.post("/api/auth/refresh", json={"refresh_token": session["refresh_token"]})
        assert refreshed.status_code == 401


async def test_missing_token_is_401_token_missing(client, demo):
    for headers in ({}, {"Authorization": "Basic YWRtaW46eA=="}, {"Authorization": "Bearer "}):
        response = await client.get("/api/merchant", headers=headers)
        assert response.status_code == 401, headers
        assert error_of(response)["code"] == "auth.token_missing", headers


async def test_garbage_or_foreign_token_is_401_token_invalid(client, demo):
    forged = jwt.encode(
        {"sub": "1", "knd": "staff", "mid": demo.merchant.id, "rol": "owner", "sid": None, "jti": "x", "exp": 2**40},
        "some-other-secret-of-sufficient-length",
        algorithm="HS256",
    )
    for token in ("not-a-jwt", "a.b.c", forged):
        response = await client.get("/api/merchant", headers=_bearer(token))
        assert response.status_code == 401, token
        assert error_of(response)["code"] == "auth.token_invalid", token


async def test_expired_access_token_is_401_token_expired(client, demo, app, pinned_clock):
    tokens = (await _login(client, demo.admin_username, DEV_ADMIN_PASSWORD)).json()
    ttl = app.ctx.settings.security.access_token_ttl
    pinned_clock.advance(ttl - 5)
    assert (await client.get("/api/merchant", headers=_bearer(tokens["access_token"]))).status_code == 200
    pinned_clock.advance(6)
    response = await client.get("/api/merchant", headers=_bearer(tokens["access_token"]))
    assert response.status_code == 401
    assert error_of(response)["code"] == "auth.token_expired"
