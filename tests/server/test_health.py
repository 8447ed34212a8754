"""Health and metrics endpoints."""

from __future__ import annotations

import redis.asyncio as aioredis


async def test_healthz_names_the_failing_part(client, app):
    healthy = await client.get("/healthz")
    assert healthy.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    real = app.ctx.redis
    app.ctx.redis = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    try:
        broken = await client.get("/healthz")
    finally:
        await app.ctx.redis.aclose()
        app.ctx.redis = real
    assert broken.status_code == 503
    body = broken.json()
    assert body["database"] == "ok"
    assert body["redis"].startswith("down")
    assert body["error"]["code"] == "health.unavailable"
    assert "redis" in body["error"]["message"]


async def test_metrics_count_requests_per_route(client):
    await client.get("/healthz")
    text = (await client.get("/metrics")).text
    assert 'huiyuan_http_requests_total{method="GET",route="healthz",status="200"}' in text
    assert "huiyuan_http_request_seconds_bucket" in text
