"""Command line: python -m server [--config PATH] COMMAND (serve, migrate, seed, create-merchant, set-wechat-account,
check-ledgers, import-members, analytics-rebuild)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from datetime import date
from functools import partial
from pathlib import Path

from sanic import Sanic
from sanic.worker.loader import AppLoader

from models.analytics.rollup import rebuild as rebuild_rollups
from models.kernel.cipher import DataCipher, set_cipher
from models.kernel.errors import DomainError
from models.ledger.books import Mismatch, find_mismatches
from models.members import import_worker, imports
from models.members.import_upload import file_chunks
from models.points.lots import find_expiry_mismatches
from models.tenancy import wechat_setup
from models.tenancy.merchants import find_wechat_account, get_merchant_by_code
from models.tiers.growth import find_total_mismatches
from server import db, wiring
from server.app import create_app
from server.config import ConfigError, Settings, load_settings
from server.redis import Keys, create_redis
from server.seed import DEV_ADMIN_PASSWORD, ensure_merchant, seed_default_merchant
from wechat.gateway import WeChatGateway

# set-wechat-account: options naming a credential field, and those naming a file whose text is the field
ACCOUNT_OPTIONS = (
    "appid",
    "secret",
    "token",
    "encoding_aes_key",
    "message_mode",
    "mch_id",
    "api_version",
    "api_key",
    "api_v3_key",
    "cert_serial_no",
    "platform_public_key_id",
    "api_base",
)
ACCOUNT_FILE_OPTIONS = ("private_key", "platform_public_key", "platform_certificate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description="Huiyuan member-loyalty server")
    parser.add_argument("--config", help="YAML config file (default: ./config.yaml if present)")
    parser.add_argument("--host", help="listen address (server.host)")
    parser.add_argument("--port", type=int, help="listen port (server.port)")
    parser.add_argument("--workers", type=int, help="worker processes (server.workers)")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the HTTP server (default); development also migrates and seeds")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("seed", help="create/refresh the default merchant from the config")
    merchant = sub.add_parser("create-merchant", help="add a merchant with its first store and owner login")
    merchant.add_argument("--code", required=True)
    merchant.add_argument("--name", required=True)
    merchant.add_argument("--timezone", default="Asia/Shanghai")
    merchant.add_argument("--store-code", required=True)
    merchant.add_argument("--store-name", required=True)
    merchant.add_argument("--admin-username", required=True)
    merchant.add_argument("--admin-password", help="default: generated and printed once")
    account = sub.add_parser(
        "set-wechat-account",
        help="set a merchant's official account, mini-program or WeChat Pay merchant (checked by a test call)",
    )
    account.add_argument("--merchant", required=True, help="merchant code")
    account.add_argument("--kind", required=True, choices=("official", "miniprogram", "pay"))
    account.add_argument("--from-file", help="JSON object with the credential fields (keeps secrets out of argv)")
    for name in ACCOUNT_OPTIONS:
        account.add_argument("--" + name.replace("_", "-"), dest=name)
    for name in ACCOUNT_FILE_OPTIONS:
        account.add_argument("--" + name.replace("_", "-") + "-file", dest=name + "_file", help="PEM file")
    sub.add_parser("check-ledgers", help="recompute every balance from its ledger; exit 1 on a mismatch")
    members_import = sub.add_parser("import-members", help="import members from a CSV file, with progress")
    members_import.add_argument("file", help="UTF-8 CSV with a header row (phone required)")
    members_import.add_argument("--merchant", required=True, help="merchant code")
    members_import.add_argument("--show-rejects", type=int, default=20, help="rejected rows to print (default 20)")
    rebuild = sub.add_parser("analytics-rebuild", help="recompute the analytics daily roll-ups of a date range")
    rebuild.add_argument("--merchant", required=True, help="merchant code")
    rebuild.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="merchant-local date")
    rebuild.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="merchant-local date")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    overrides = {f"server.{k}": getattr(args, k) for k in ("host", "port", "workers") if getattr(args, k)}
    return settings.replace(**overrides) if overrides else settings


async def _with_db(settings: Settings, work) -> int:
    wiring.install()
    set_cipher(DataCipher(settings.security.data_key))
    await db.init_db(settings)
    try:
        return await work()
    finally:
        await db.close_db()


async def _prepare_development(settings: Settings) -> None:
    await db.migrate(settings, progress=True)
    result = await seed_default_merchant(settings)
    password = result.admin_password or (
        DEV_ADMIN_PASSWORD if not settings.merchant.admin_password else "(as configured)"
    )
    print(f"Demo merchant '{result.merchant.code}' ({result.merchant.name}), store {result.store.code}", flush=True)
    print(f"Admin login: username '{result.admin_username}', password '{password}'", flush=True)


def serve(settings: Settings) -> None:
    if not settings.is_production:
        asyncio.run(_with_db(settings, partial(_async_ok, _prepare_development(settings))))
    base = f"http://{settings.server.host}:{settings.server.port}"
    print(f"Huiyuan on {base} (docs {base}/docs, health {base}/healthz)", flush=True)
    if settings.wechat.emulator.enabled:
        print(
            f"WeChat emulator at {base}{settings.wechat.emulator.mount} "
            f"(try: .venv/bin/python -m wechat.emulator --server {base} scan --store {settings.merchant.store_code} "
            "--openid o_demo_1)",
            flush=True,
        )
    loader = AppLoader(factory=partial(create_app, settings))
    app = loader.load()
    app.prepare(
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers,
        single_process=settings.server.workers == 1,
        motd=False,
        access_log=settings.server.access_log,
    )
    if settings.server.workers == 1:
        Sanic.serve_single(primary=app)
    else:
        Sanic.serve(primary=app, app_loader=loader)


async def _async_ok(coro) -> int:
    await coro
    return 0


async def _count_mismatches(found: AsyncIterator[Mismatch | int], *, progress: str, kept: str) -> tuple[int, int]:
    """Print a checker's mismatches and its progress; (rows checked, mismatches)."""
    checked = mismatches = 0
    async for item in found:
        if isinstance(item, int):
            checked += item
            print(f"\r{progress.format(checked)}", end="", file=sys.stderr, flush=True)
            continue
        mismatches += 1
        print(f"\nMISMATCH {item.book} member={item.member_id} {kept}={item.balance} ledger_sum={item.ledger_sum}")
    return checked, mismatches


async def _check_ledgers() -> int:
    checked, wrong = await _count_mismatches(find_mismatches(), progress="checked {} accounts", kept="balance")
    # the running totals the tier checks read instead of the ledgers
    totals, wrong_totals = await _count_mismatches(
        find_total_mismatches(), progress="checked the growth and recharge totals of {} members", kept="kept"
    )
    # the points per expiry instant the points page reads
    expiring, wrong_expiry = await _count_mismatches(
        find_expiry_mismatches(), progress="checked the points expiry totals of {} members", kept="kept"
    )
    mismatches = wrong + wrong_totals + wrong_expiry
    print(
        f"\n{checked} accounts checked, {totals} members' running totals checked, {expiring} members' points expiry"
        f" totals checked, {mismatches} mismatches",
        flush=True,
    )
    return 1 if mismatches else 0


async def _import_members(args: argparse.Namespace) -> int:
    merchant = await get_merchant_by_code(code=args.merchant)
    if merchant is None:
        print(f"huiyuan: no merchant with code {args.merchant!r}", file=sys.stderr)
        return 2
    path = Path(args.file)
    try:
        with path.open("rb") as upload:  # noqa: ASYNC230 - the CLI's own file, read a chunk at a time
            body = file_chunks(upload)
            job = await imports.create_import_job(merchant_id=merchant.id, staff_id=None, body=body, filename=path.name)
    except DomainError as exc:
        print(f"huiyuan: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"huiyuan: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(job: imports.ImportJob) -> None:
        rate = job.processed_rows / max(time.monotonic() - started, 1e-6)
        print(
            f"\r{job.processed_rows}/{job.total_rows} rows ({job.percent:.1f} %), created {job.created_rows}, "
            f"unchanged {job.unchanged_rows}, rejected {job.rejected_rows}, {rate:,.0f} rows/s",
            end="",
            file=sys.stderr,
            flush=True,
        )

    while True:  # run it here; if a server's worker claimed it first, follow its progress until it ends
        ran = await import_worker.run_import_job(job_id=job.id, on_batch=progress)
        job = ran or await imports.get_import_job(merchant_id=merchant.id, job_id=job.id)
        if job.status in ("done", "failed"):
            break
        if ran is None:
            progress(job)
        await asyncio.sleep(1)
    elapsed = time.monotonic() - started
    print(file=sys.stderr)
    print(
        f"import {job.id} {job.status} in {elapsed:.1f} s: {job.processed_rows} rows, created {job.created_rows}, "
        f"unchanged {job.unchanged_rows}, rejected {job.rejected_rows}"
    )
    if job.status == "failed":
        print(f"error: {job.error}")
        return 1
    rejects = await imports.list_rejects(merchant_id=merchant.id, job_id=job.id, offset=0, limit=args.show_rejects)
    for reject in rejects:
        print(f"line {reject.line}: {reject.reason}")
    if job.rejected_rows > len(rejects):
        print(f"... {job.rejected_rows - len(rejects)} more (GET /api/members/imports/{job.id}/rejects)")
    return 0


async def _rebuild_analytics(args: argparse.Namespace) -> int:
    merchant = await get_merchant_by_code(code=args.merchant)
    if merchant is None:
        print(f"huiyuan: no merchant with code {args.merchant!r}", file=sys.stderr)
        return 2
    if args.last < args.first:
        print("huiyuan: --from must not be after --to", file=sys.stderr)
        return 2
    started, total = time.monotonic(), (args.last - args.first).days + 1

    def progress(day: date) -> None:
        done = (day - args.first).days + 1
        print(f"\r{day} {done}/{total} days, {time.monotonic() - started:.1f} s", end="", file=sys.stderr, flush=True)

    days = await rebuild_rollups(merchant_id=merchant.id, first=args.first, last=args.last, progress=progress)
    print(file=sys.stderr)
    print(f"rebuilt {days} days of {merchant.code} in {time.monotonic() - started:.1f} s")
    return 0


async def _create_merchant(args: argparse.Namespace) -> int:
    result = await ensure_merchant(
        code=args.code,
        name=args.name,
        timezone=args.timezone,
        store_code=args.store_code,
        store_name=args.store_name,
        admin_username=args.admin_username,
        admin_password=args.admin_password,
    )
    state = "created" if result.created else "already existed"
    print(f"merchant {result.merchant.code} (id {result.merchant.id}) {state}; store {result.store.code}")
    if result.admin_password:
        print(f"owner login: {result.admin_username} / {result.admin_password}  (shown once)")
    return 0


def _account_fields(args: argparse.Namespace) -> dict[str, str]:
    """The credential fields: --from-file's JSON, overridden by the options given (PEM options read their file)."""
    fields: dict[str, str] = {}
    if args.from_file:
        data = json.loads(Path(args.from_file).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{args.from_file} must hold a JSON object")
        fields.update(data)
    fields.update({name: getattr(args, name) for name in ACCOUNT_OPTIONS if getattr(args, name) is not None})
    for name in ACCOUNT_FILE_OPTIONS:
        path = getattr(args, name + "_file")
        if path:
            fields[name] = Path(path).read_text(encoding="ascii")
    return fields


def _cli_gateway(settings: Settings) -> WeChatGateway:
    """A gateway for one command (the emulator is the running dev server's, when enabled)."""
    self_url = f"http://{settings.server.host}:{settings.server.port}".replace("0.0.0.0", "127.0.0.1")  # noqa: S104
    emulator = settings.wechat.emulator
    return WeChatGateway(
        redis=create_redis(settings.redis.url),
        keys=Keys(settings.redis.key_prefix),
        find_account=find_wechat_account,
        self_url=self_url,
        emulator_base=self_url + emulator.mount if emulator.enabled else "",
        http_timeout=settings.wechat.http_timeout,
    )


async def set_wechat_account(args: argparse.Namespace, settings: Settings, gateway: WeChatGateway | None = None) -> int:
    """set-wechat-account: the same checks and test call as PUT /api/wechat-accounts/<kind>; prints no secret."""
    merchant = await get_merchant_by_code(code=args.merchant)
    if merchant is None:
        print(f"huiyuan: no merchant with code {args.merchant!r}", file=sys.stderr)
        return 2
    try:
        fields = _account_fields(args)
    except (OSError, ValueError) as exc:
        print(f"huiyuan: cannot read the credentials: {exc}", file=sys.stderr)
        return 2
    own_gateway = gateway is None
    gateway = gateway or _cli_gateway(settings)
    try:
        creds = wechat_setup.check_credentials(
            args.kind,
            fields,
            allow_emulator=not settings.is_production,
            default_to_emulator=settings.wechat.emulator.enabled,
        )
        account = await wechat_setup.set_wechat_account(gateway, merchant=merchant, creds=creds)
    except DomainError as exc:
        extra = " ".join(f"{k}={v}" for k, v in exc.extra.items())
        print(f"huiyuan: {exc.message} [{exc.code}{' ' + extra if extra else ''}]", file=sys.stderr)
        return 1
    finally:
        if own_gateway:
            await gateway.aclose()
            await gateway.redis.aclose()
    shown = wechat_setup.view(account)
    stored = ", ".join(name for name, present in shown.secrets_set.items() if present)
    print(
        f"merchant {merchant.code}: {shown.kind} {shown.mch_id or shown.appid} saved (api_base {shown.api_base}; "
        f"secrets stored encrypted: {stored})"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"huiyuan: {exc}", file=sys.stderr)
        return 2
    command = args.command or "serve"
    if command == "serve":
        serve(settings)
        return 0
    if command == "migrate":
        return asyncio.run(_with_db(settings, partial(_async_ok, db.migrate(settings, progress=True))))
    if command == "seed":
        return asyncio.run(_with_db(settings, partial(_async_ok, _prepare_development(settings))))
    if command == "create-merchant":
        return asyncio.run(_with_db(settings, partial(_create_merchant, args)))
    if command == "set-wechat-account":
        return asyncio.run(_with_db(settings, partial(set_wechat_account, args, settings)))
    if command == "check-ledgers":
        return asyncio.run(_with_db(settings, _check_ledgers))
    if command == "import-members":
        return asyncio.run(_with_db(settings, partial(_import_members, args)))
    if command == "analytics-rebuild":
        return asyncio.run(_with_db(settings, partial(_rebuild_analytics, args)))
    raise AssertionError(command)


if __name__ == "__main__":
    sys.exit(main())
