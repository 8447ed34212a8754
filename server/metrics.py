"""Prometheus metrics: request counts and latencies per route, database pool use."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, raw
from sanic_ext import openapi
from tortoise import Tortoise


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

    def render(self) -> bytes:
        self._sample_pool()
        return generate_latest(self.registry)

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
        metrics.requests.labels(request.method, route, str(response.status)).inc()
        metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)

    @app.get("/metrics", name="metrics")
    @openapi.definition(
        summary="Prometheus metrics",
        tag="ops",
        description="Request counts, latencies and database pool use in the Prometheus text format.\n\n"
        "Public: no token needed.",
        response=openapi.definitions.Response(
            {"text/plain": {"schema": {"type": "string"}}}, status=200, description="Prometheus text format"
        ),
    )
    async def metrics_endpoint(request: Request):
        return raw(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")

    return metrics
