"""The app factory: create_app(settings) wires config, database, Redis, WeChat and blueprints."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sanic import HTTPResponse, Sanic
from sanic.exceptions import PayloadTooLarge
from sanic.request import Request
from sanic_ext import Extend
from sanic_ext.extensions.http.extension import HTTPExtension
from sanic_ext.extensions.openapi.extension import OpenAPIExtension
from swagger_ui_bundle import swagger_ui_path

from handlers import register_blueprints
from jobs.outbox import run_forever
from jobs.scheduler import JobContext, build_scheduler
from models.kernel.cipher import DataCipher, set_cipher
from models.kernel.config_cache import CONFIG
from models.kernel.pushed import Feed, RevokedSet, run_listener
from models.tenancy import passwords, staff
from models.tenancy.api_keys import ApiKeyCache
from models.tenancy.merchants import find_wechat_account
from server import db, metrics, wiring
from server.api import publish_openapi
from server.auth import API_KEY_REVOKED_CHANNEL, REVOKED_CHANNEL
from server.config import Settings
from server.errors import register_error_handlers
from server.redis import Keys, create_redis
from wechat.gateway import WeChatGateway

log = logging.getLogger("huiyuan")
DOCS_PAGE = Path(__file__).parent / "docs_ui" / "swagger.html"
CONFIG_CHANNEL = "config"  # pub/sub channel (under the key prefix): "merchant_id:version"


class BoundedRequest(Request):
    """Enforces REQUEST_MAX_SIZE while reading the body: Sanic's own server does, ASGI servers do not."""

    async def receive_body(self) -> None:
        if self.body:
            return
        limit, size, chunks = self.app.config.REQUEST_MAX_SIZE, 0, []
        async for chunk in self.stream:  # type: ignore[union-attr,attr-defined]  # set while a body is received
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge("Request body exceeds the size limit")
            chunks.append(chunk)
        self.body = b"".join(chunks)


def create_app(settings: Settings, *, name: str = "huiyuan", wechat_transport: Any = None) -> Sanic:
    """Build the Sanic app; connections open in listeners, never here."""
    wiring.install()
    app = Sanic(name, configure_logging=True, request_class=BoundedRequest)
    app.config.REQUEST_MAX_SIZE = settings.server.request_max_size
    app.config.ACCESS_LOG = settings.server.access_log
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.OAS_UI_DEFAULT = "swagger"
    app.config.OAS_URL_PREFIX = "/docs"
    app.config.OAS_UI_REDOC = False
    app.config.OAS_PATH_TO_SWAGGER_HTML = str(DOCS_PAGE)  # its assets come from this server, not a CDN
    app.config.OAS_AUTODOC = False
    app.config.HEALTH = False
    app.ctx.settings = settings
    app.ctx.keys = Keys(settings.redis.key_prefix)
    # only the extensions used: the built-in dependency injection would run a signal on every request for nothing
    Extend(
        app,
        built_in_extensions=False,
        extensions=[OpenAPIExtension, HTTPExtension],
        config={"oas_autodoc": False, "cors": False, "health": False},
    )
    app.ext.openapi.describe(
        "Huiyuan",
        version="0.1.0",
        description="WeChat member-loyalty backend. Every endpoint lists the roles allowed to call it in its "
        'description. Errors are `{"error": {"code": "dotted.code", "message": "..."}}`.',
    )
    app.ext.openapi.add_security_scheme("bearerAuth", "http", scheme="bearer", bearer_format="JWT")
    app.ext.openapi.add_security_scheme(
        "apiKeyAuth",
        "apiKey",
        location="header",
        name="Authorization",
        description="A store's POS API key: `Authorization: ApiKey hy_pos_<prefix>_<secret>` (role pos).",
    )
    register_error_handlers(app)
    metrics.install(app)
    register_blueprints(app, settings)
    app.static("/docs/assets", swagger_ui_path, name="docs_assets")  # pinned swagger-ui, installed with the deps

    @app.before_server_start
    async def open_connections(app: Sanic) -> None:
        set_cipher(DataCipher(settings.security.data_key))
        passwords.configure(workers=settings.security.hash_workers, max_waiting=settings.security.hash_queue)
        await db.init_db(settings)
        app.ctx.redis = create_redis(settings.redis.url)
        self_url = _self_url(app, settings)
        app.ctx.wechat = WeChatGateway(
            redis=app.ctx.redis,
            keys=app.ctx.keys,
            find_account=find_wechat_account,
            self_url=self_url,
            emulator_base=self_url + settings.wechat.emulator.mount,
            http_timeout=settings.wechat.http_timeout,
            transport=wechat_transport,
        )
        app.ctx.revoked = RevokedSet(load_all=staff.unexpired_revocations, load_since=staff.revocations_since)
        await app.ctx.revoked.load()
        app.ctx.pos_keys = ApiKeyCache()

    @app.after_server_start
    async def start_pushed_state(app: Sanic) -> None:
        redis, config_channel = app.ctx.redis, app.ctx.keys(CONFIG_CHANNEL)
        feeds = [
            Feed(channel=config_channel, apply=CONFIG.apply_message, poll=CONFIG.poll),
            Feed(channel=app.ctx.keys(REVOKED_CHANNEL), apply=app.ctx.revoked.apply_message, poll=app.ctx.revoked.poll),
            Feed(
                channel=app.ctx.keys(API_KEY_REVOKED_CHANNEL),
                apply=app.ctx.pos_keys.apply_message,
                poll=app.ctx.pos_keys.poll,
            ),
        ]
        await CONFIG.poll()

        async def publish(message: str) -> None:
            await redis.publish(config_channel, message)

        CONFIG.publisher, CONFIG.enabled = publish, True  # served from the cache only while the listener runs
        app.add_task(
            run_listener(
                redis=redis,
                feeds=feeds,
                poll_seconds=settings.cache.poll_seconds,
                fallback_seconds=settings.cache.fallback_poll_seconds,
            ),
            name="pushed-state-listener",
        )

    @app.after_server_start
    async def start_workers(app: Sanic) -> None:
        app.ctx.jobs = JobContext(settings=settings, redis=app.ctx.redis, keys=app.ctx.keys, gateway=app.ctx.wechat)
        app.ctx.scheduler = None
        if settings.jobs.scheduler:
            app.ctx.scheduler = build_scheduler(app.ctx.jobs)
            app.ctx.scheduler.start()
        if settings.jobs.outbox_worker:
            app.add_task(
                run_forever(
                    gateway=app.ctx.wechat,
                    topics=wiring.OUTBOX_TOPICS,
                    idle_seconds=settings.jobs.outbox_idle_seconds,
                ),
                name="outbox-worker",
            )

    @app.before_server_stop
    async def stop_workers(app: Sanic) -> None:
        if getattr(app.ctx, "scheduler", None) is not None:
            app.ctx.scheduler.shutdown(wait=False)
        await app.cancel_task("outbox-worker", raise_exception=False)
        CONFIG.enabled, CONFIG.publisher = False, None
        CONFIG.clear()
        await app.cancel_task("pushed-state-listener", raise_exception=False)

    @app.after_server_stop
    async def close_connections(app: Sanic) -> None:
        await app.ctx.wechat.aclose()
        await app.ctx.redis.aclose()
        await db.close_db()
        passwords.shutdown()

    @app.on_response(priority=200)  # type: ignore[call-arg]  # sanic's stub omits priority
    async def true_openapi(request: Request, response: HTTPResponse) -> None:
        if request.route is not None and request.route.name.endswith(".openapi.spec") and response.status == 200:
            response.body = json.dumps(publish_openapi(json.loads(response.body or b"{}"))).encode()
            response.headers["content-length"] = str(len(response.body))

    return app


def _self_url(app: Sanic, settings: Settings) -> str:
    if settings.server.public_url:
        return settings.server.public_url.rstrip("/")
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    return f"http://{host}:{settings.server.port}"
