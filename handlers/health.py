"""Liveness of the parts a request needs: the database and Redis."""

from __future__ import annotations

import asyncio

from sanic import Blueprint, json
from sanic.request import Request

from models.kernel.health import ping_database
from server.api import Out, endpoint

bp = Blueprint("health")
PROBE_SECONDS = 2.0


class HealthOut(Out):
    status: str
    database: str
    redis: str


async def _probe(coro) -> str:
    """Wait PROBE_SECONDS at most, without cancelling the probe: a cancelled query can leave a shared lock held."""
    try:
        await asyncio.wait_for(asyncio.shield(coro), PROBE_SECONDS)
        return "ok"
    except Exception as exc:  # noqa: BLE001 - any failure is "down" with its reason
        return f"down: {type(exc).__name__}"


@bp.get("/healthz")
@endpoint(
    summary="Health check",
    tag="ops",
    response=HealthOut,
    errors=(503,),
    description="200 when the database and Redis answer; 503 naming the failing part otherwise.",
)
async def healthz(request: Request):
    database = await _probe(ping_database())
    redis = await _probe(request.app.ctx.redis.ping())
    healthy = database == "ok" and redis == "ok"
    body: dict[str, object] = {"status": "ok" if healthy else "unavailable", "database": database, "redis": redis}
    if not healthy:
        failing = [name for name, state in (("database", database), ("redis", redis)) if state != "ok"]
        body["error"] = {"code": "health.unavailable", "message": f"not answering: {', '.join(failing)}"}
    return json(body, status=200 if healthy else 503)
