"""The verified-token cache of server.auth: a repeat skips PyJWT, never a check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.kernel import clock
from models.kernel.errors import Unauthorized
from server import auth

SECRET = "a-secret-of-sufficient-length-for-hs256"


@pytest.fixture(autouse=True)
def empty_cache():
    auth._verified.clear()
    yield
    auth._verified.clear()
    clock.set_clock(None)


def _token(ttl: int = 600) -> str:
    return auth.issue_member_token(secret=SECRET, ttl=ttl, member_id=7, merchant_id=3)[0]


def test_a_cached_token_still_expires_and_still_needs_the_right_secret():
    start = datetime(2030, 1, 1, tzinfo=UTC)
    clock.set_clock(lambda: start)
    token = _token(ttl=60)
    first = auth.decode_access_token(token, secret=SECRET)
    assert auth.decode_access_token(token, secret=SECRET) is first  # served from the cache
    assert (first.kind, first.subject_id, first.merchant_id, first.role) == ("member", 7, 3, "member")
    with pytest.raises(Unauthorized) as other_secret:
        auth.decode_access_token(token, secret=SECRET + "x")
    assert other_secret.value.code == "auth.token_invalid"
    clock.set_clock(lambda: start + timedelta(seconds=60))
    with pytest.raises(Unauthorized) as expired:
        auth.decode_access_token(token, secret=SECRET)
    assert expired.value.code == "auth.token_expired"


def test_invalid_and_expired_tokens_are_never_cached():
    token = _token()
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    for _ in range(2):
        with pytest.raises(Unauthorized) as invalid:
            auth.decode_access_token(tampered, secret=SECRET)
        assert invalid.value.code == "auth.token_invalid"
    old = _token(ttl=1)
    clock.set_clock(lambda: datetime.now(UTC) + timedelta(seconds=5))
    with pytest.raises(Unauthorized):
        auth.decode_access_token(old, secret=SECRET)
    assert auth._verified == {}


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(auth, "VERIFIED_CACHE_SIZE", 3)
    tokens = [_token() for _ in range(5)]
    for token in tokens:
        auth.decode_access_token(token, secret=SECRET)
    assert [key[1] for key in auth._verified] == tokens[2:]  # the oldest left first
