"""Prometheus metrics: request counts and latencies per route, database pool use, the outbox backlog."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, raw
from sanic_ext import openapi
from tortoise import Tortoise

from models.kernel import clock
from models.kernel.outbox import BACKLOG, backlog_by_topic
from server import wiring

log = logging.getLogger("huiyuan.metrics")
OUTBOX_SAMPLE_SECONDS = 15.0  # scrapes within this long reuse the last outbox query (per worker process)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "huiyuan_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "huiyuan_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.pool_size = Gauge("huiyuan_db_pool_connections", "DB pool connections", ["state"], registry=self.registry)
        self.outbox_messages = Gauge(
            "huiyuan_outbox_messages",
            "Outbox messages not delivered (pending, processing, dead), all merchants",
            ["topic", "status"],
            registry=self.registry,
        )
        self.outbox_oldest_pending = Gauge(
            "huiyuan_outbox_oldest_pending_seconds",
            "Age of the topic's oldest pending or processing outbox message (0 when none)",
            ["topic"],
            registry=self.registry,
        )
        # the labelled children per (method, route, status): prometheus' labels() lookup costs more than the update
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._outbox_sampled_at: datetime | None = None
        self._outbox_lock = asyncio.Lock()

    def observe(self, method: str, route: str, status: str, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = self.requests.labels(method, route, status), self.latency.labels(method, route)
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    async def render(self) -> bytes:
        self._sample_pool()
        await self._sample_outbox()
        return generate_latest(self.registry)

    async def _sample_outbox(self) -> None:
        """One GROUP BY per OUTBOX_SAMPLE_SECONDS however often (and however many at once) scrapes come."""
        async with self._outbox_lock:
            now = clock.now()
            if self._outbox_sampled_at is not None:
                elapsed = (now - self._outbox_sampled_at).total_seconds()
                if 0 <= elapsed < OUTBOX_SAMPLE_SECONDS:
                    return
            self._outbox_sampled_at = now
            try:
                # shielded: a scraper hanging up must not cancel a query on a shared connection
                sampled = await asyncio.shield(backlog_by_topic())
            except Exception:  # noqa: BLE001 - metrics must never fail the scrape
                log.warning("outbox metrics not sampled", exc_info=True)
                return
            states = {state.topic: state for state in sampled}
            self.outbox_messages.clear()  # every known topic is reported, 0 when its backlog is empty
            self.outbox_oldest_pending.clear()
            for topic in sorted(set(wiring.OUTBOX_TOPICS) | set(states)):
                state = states.get(topic)
                for status in BACKLOG:
                    self.outbox_messages.labels(topic, status).set(state.counts[status] if state else 0)
                oldest = state.oldest_pending_seconds if state else None
                self.outbox_oldest_pending.labels(topic).set(oldest or 0)

    def _sample_pool(self) -> None:
        try:
            pool = getattr(Tortoise.get_connection("default"), "_pool", None)
        except Exception:  # noqa: BLE001 - metrics must never fail the scrape
            pool = None
        if pool is not None:
            self.pool_size.labels("total").set(pool.size)
            self.pool_size.labels("free").set(pool.freesize)
            self.pool_size.labels("max").set(pool.maxsize)


def install(app: Sanic) -> Metrics:
    metrics = Metrics()

    @app.on_request(priority=100)  # type: ignore[call-arg]  # sanic's stub omits priority
    async def start_timer(request: Request) -> None:
        request.ctx.started = time.perf_counter()

    @app.on_response(priority=100)
    async def observe(request: Request, response: HTTPResponse) -> None:
        started = getattr(request.ctx, "started", None)
        if started is None:
            return
        route = request.route.path if request.route else "unmatched"
        metrics.observe(request.method, route, str(response.status), time.perf_counter() - started)

    @app.get("/metrics", name="metrics")
    @openapi.definition(
        summary="Prometheus metrics",
        tag="ops",
        description="Request counts, latencies, database pool use and the outbox backlog (messages per topic and "
        "status, oldest pending age; sampled at most every 15 s) in the Prometheus text format.\n\n"
        "Public: no token needed.",
        response=openapi.definitions.Response(
            {"text/plain": {"schema": {"type": "string"}}}, status=200, description="Prometheus text format"
        ),
    )
    async def metrics_endpoint(request: Request):
        return raw(await metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")

    return metrics
