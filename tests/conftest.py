"""Test harness: one app per session on the backend named by HUIYUAN_DATABASE__URL / HUIYUAN_REDIS__URL.

Each test starts from the migrated schema with every table emptied, a fresh Redis namespace and the
default merchant seeded; requests go through the real app over ASGI (no sockets), and the app's
WeChat client reaches the emulator mounted in the same app.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sanic import Sanic
from tortoise import Tortoise
from tortoise.transactions import in_transaction

from models.kernel import clock
from models.kernel.config_cache import CONFIG
from server import db
from server.config import Settings, load_settings
from server.seed import DEV_ADMIN_PASSWORD, SeedResult, seed_default_merchant

BASE_URL = "http://huiyuan.test"
RUN_ID = uuid.uuid4().hex[:8]


def _test_settings(tmp_dir: Path) -> Settings:
    env = dict(os.environ)
    env.setdefault("HUIYUAN_DATABASE__URL", f"sqlite://{tmp_dir / 'test.sqlite3'}")
    env.setdefault("HUIYUAN_REDIS__URL", "memory://")
    env["HUIYUAN_ENVIRONMENT"] = "development"
    env["HUIYUAN_SERVER__PUBLIC_URL"] = BASE_URL
    env["HUIYUAN_REDIS__KEY_PREFIX"] = f"hytest:{RUN_ID}:"
    env["HUIYUAN_WECHAT__EMULATOR__ENABLED"] = "true"
    return load_settings(Path(__file__).parent / "config.test.yaml", environ=env)


async def _fresh_mysql_database(url: str) -> None:
    """Drop and recreate the test database named in the URL (only names starting with 'test')."""
    import aiomysql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("test"):
        raise RuntimeError(f"refusing to recreate database {name!r}: test databases must start with 'test'")
    conn = await aiomysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            await cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()


def _tables_children_first() -> list[str]:
    models = [m for app in Tortoise.apps.values() for m in app.values()]
    order: list[str] = []
    seen: set[type] = set()

    def visit(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for other in models:
            deps = {
                f.related_model
                for f in other._meta.fields_map.values()
                if getattr(f, "related_model", None)
                and f.__class__.__name__ in ("ForeignKeyFieldInstance", "OneToOneFieldInstance")
            }
            if model in deps and other is not model:
                visit(other)
        order.append(model._meta.db_table)

    for model in models:
        visit(model)
    return order


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return _test_settings(tmp_path_factory.mktemp("huiyuan"))


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[Sanic]:
    from server.app import create_app

    if settings.database.url.startswith("mysql://"):
        await _fresh_mysql_database(settings.database.url)
    await db.init_db(settings)
    await db.migrate(settings)
    await db.close_db()
    Sanic.test_mode = True
    transport = httpx.ASGITransport(app=None)  # the app's WeChat client calls the emulator in this app
    application = create_app(settings, name=f"huiyuan_test_{RUN_ID}", wechat_transport=transport)
    transport.app = application
    async with LifespanManager(application, startup_timeout=60, shutdown_timeout=30):
        application.ctx.test_tables = _tables_children_first()
        yield application


async def reset_state(app: Sanic) -> SeedResult:
    """Empty every table and this run's Redis keys, then seed the default merchant."""
    async with in_transaction() as conn:
        for table in app.ctx.test_tables:
            await conn.execute_query(f"DELETE FROM {table}")
    CONFIG.clear()  # ids are reused and versions restart on the emptied tables: forget what this process cached
    await app.ctx.revoked.load()
    app.ctx.pos_keys.clear()
    redis = app.ctx.redis
    async for key in redis.scan_iter(match=app.ctx.settings.redis.key_prefix + "*", count=500):
        await redis.delete(key)
    await app.ctx.wechat.http.post(BASE_URL + app.ctx.settings.wechat.emulator.mount + "/control/reset")
    return await seed_default_merchant(app.ctx.settings)


@pytest.fixture
def pinned() -> Iterator[list[datetime]]:
    """The domain clock pinned at the real now; a test moves it by assigning pinned[0]."""
    now = [datetime.now(UTC)]
    clock.set_clock(lambda: now[0])
    try:
        yield now
    finally:
        clock.set_clock(None)


@pytest.fixture
async def demo(app: Sanic) -> SeedResult:
    return await reset_state(app)


@pytest.fixture
async def client(app: Sanic, demo: SeedResult) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
        yield http


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, str]:
    response = await client.post("/api/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
async def admin(client: httpx.AsyncClient, demo: SeedResult) -> dict[str, str]:
    return await login(client, demo.admin_username, DEV_ADMIN_PASSWORD)


def pytest_sessionstart(session: pytest.Session) -> None:
    """CI names MariaDB explicitly: then running on anything else is a failure, not a silent fallback."""
    if os.environ.get("HY_TEST_REQUIRE_MYSQL") and not os.environ.get("HUIYUAN_DATABASE__URL", "").startswith(
        "mysql://"
    ):
        raise pytest.UsageError("HY_TEST_REQUIRE_MYSQL is set but HUIYUAN_DATABASE__URL is not mysql://")
