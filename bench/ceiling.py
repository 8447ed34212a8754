"""Throughput ceiling on this machine: bare Sanic and raw aiomysql vs Huiyuan's /healthz and change_points.

Run: .venv/bin/python bench/ceiling.py [--duration 10] [--connections 32] [--threads 1] [--workers 2] [--quick]
Load comes from wrk on 127.0.0.1 only. Figures are relative: read the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pymysql
from ceiling_wrk import Row, lua_script, wrk

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# HY_BENCH_DB_PREFIX=bench_wt_ keeps parallel runs (other worktrees) off each other's databases and Redis keys
DB_PREFIX = os.environ.get("HY_BENCH_DB_PREFIX", "bench_")
RAW_DB = f"{DB_PREFIX}ceiling"
APP_DB = f"{DB_PREFIX}huiyuan"
REDIS_URL = f"redis://{HOST}:6379/0"
REDIS_PREFIX = f"{DB_PREFIX.rstrip('_')}:"
ADMIN = {"username": "admin", "password": "huiyuan-demo"}  # server/seed.py DEV_ADMIN_PASSWORD
SPREAD = 100
READY_SECONDS = 120.0


class Service:
    """A server subprocess in its own process group, so stopping it also stops its workers."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {READY_SECONDS:.0f}s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break
        self._log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def sql(*statements: str, db: str | None = None) -> list[tuple]:
    """Run statements on the local MariaDB; returns the last one's rows."""
    conn = pymysql.connect(host=HOST, port=3306, user="root", password="", database=db, autocommit=True)
    try:
        rows: list[tuple] = []
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
                rows = list(cur.fetchall())
        return rows
    finally:
        conn.close()


def prepare_raw_db() -> None:
    from ceiling_apps import PURCHASE_SCHEMA, SCHEMA, purchase_seed

    sql(f"DROP DATABASE IF EXISTS {RAW_DB}", f"CREATE DATABASE {RAW_DB} CHARACTER SET utf8mb4")
    values = ",".join(f"({i}, 0)" for i in range(1, SPREAD + 1))
    sql(*SCHEMA, f"INSERT INTO account (id, balance) VALUES {values}", db=RAW_DB)
    sql(*PURCHASE_SCHEMA, *purchase_seed(SPREAD), db=RAW_DB)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes in a process group (a server and its Sanic workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ... utime(12) stime(13)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def measure(
    name: str,
    url: str,
    args: argparse.Namespace,
    tmp: Path,
    *,
    paths: list[str] | None = None,
    token: str | None = None,
    pgid: int | None = None,
) -> Row:
    """Warm up for a second, then measure; scripted rows (POST paths) get a fresh key tag per wrk run.
    With pgid, the row also gets the CPU seconds that process group used during the measured run."""
    stamp = time.time_ns()
    warm = lua_script(tmp, paths=paths, token=token, tag=f"warm{stamp}") if paths else None
    wrk(name, url, args, warm, seconds=1)
    before = ledger_rows() if token else None
    script = lua_script(tmp, paths=paths, token=token, tag=f"run{stamp}") if paths else None
    cpu = group_cpu_seconds(pgid) if pgid else 0.0
    row = wrk(name, url, args, script)
    row.cpu_s = group_cpu_seconds(pgid) - cpu if pgid else 0.0
    if before is not None:
        row.note = (
            f"ledger rows +{ledger_rows() - before} for {row.requests - row.non2xx} 2xx (in-flight at stop add a few)"
        )
    print(f"  {name:<34} {row.rps:>9.0f} req/s", flush=True)
    return row


def ledger_rows() -> int:
    return int(sql("SELECT COUNT(*) FROM points_ledger", db=APP_DB)[0][0])


def huiyuan_env(tmp: Path, db: str = APP_DB) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIYUAN_")}
    (tmp / "empty.yaml").write_text("{}\n")
    env.update(
        HUIYUAN_CONFIG=str(tmp / "empty.yaml"),  # ignore any local config.yaml: only these settings count
        HUIYUAN_ENVIRONMENT="development",
        HUIYUAN_DATABASE__URL=f"mysql://root:@{HOST}:3306/{db}",
        HUIYUAN_REDIS__URL=REDIS_URL,
        HUIYUAN_REDIS__KEY_PREFIX=REDIS_PREFIX,
        HUIYUAN_SERVER__ACCESS_LOG="false",
        HUIYUAN_WECHAT__EMULATOR__ENABLED="false",  # production-like: no emulator routes mounted
    )
    return env


def start_huiyuan(workers: int, env: dict[str, str], tmp: Path, services: list[Service]) -> tuple[Service, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "server", "--host", HOST, "--port", str(port), "--workers", str(workers)]
    service = Service(f"huiyuan-w{workers}", cmd, env, tmp)
    services.append(service)
    base = f"http://{HOST}:{port}"
    service.wait_ready(f"{base}/healthz")
    return service, base


def create_members(base: str) -> tuple[str, list[int]]:
    with httpx.Client(base_url=base, timeout=10.0) as client:
        login = client.post("/api/auth/login", json=ADMIN)
        login.raise_for_status()
        token = login.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        ids = []
        for i in range(SPREAD):
            created = client.post("/api/members/", json={"name": f"Bench {i}"}, headers=headers)
            if created.status_code != 201:
                raise RuntimeError(f"create member: {created.status_code} {created.text[:300]}")
            ids.append(int(created.json()["id"]))
    return token, ids


# the tiers the loyalty benches run with: every purchase pays its tier multiplier and its rolling growth check;
# gold is out of reach, so a bench never measures a stream of upgrades
BENCH_TIERS = (
    {"code": "normal", "name": "Normal", "rank": 0, "threshold": 0},
    {"code": "silver", "name": "Silver", "rank": 1, "threshold": 1000, "points_multiplier_permille": 1200},
    {"code": "gold", "name": "Gold", "rank": 2, "threshold": 10**12, "points_multiplier_permille": 1500},
)


def define_tiers(base: str, token: str) -> None:
    """Give the demo merchant BENCH_TIERS through the API."""
    with httpx.Client(base_url=base, timeout=10.0) as client:
        for tier in BENCH_TIERS:
            created = client.post("/api/tiers", json=tier, headers={"Authorization": f"Bearer {token}"})
            if created.status_code != 201:
                raise RuntimeError(f"create tier: {created.status_code} {created.text[:300]}")


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    import sanic

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
    return (
        f"machine: nproc={len(os.sched_getaffinity(0))}, cpu={cpu}, {loadavg()}\n"
        f"versions: python {platform.python_version()}, sanic {sanic.__version__}, "
        f"mariadb {sql('SELECT VERSION()')[0][0]}, {wrk_version.split(' [')[0].strip()}"
    )


def loadavg() -> str:
    """Other work on the box skews every row; shown so a noisy run is recognisable."""
    return "loadavg " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(
    rows: list[Row],
    args: argparse.Namespace,
    pairs: list[tuple[str, str, str]] | list[tuple[str, str, str, float]] | None = None,
    width: int = 36,
) -> None:
    """The table of rows, their notes, then each (label, top, bottom[, target]) ratio measured in this run;
    a target prints PASS when the ratio reaches it. Rows measured with a pgid show the server's CPU per request
    and requests per server CPU-second (per core: comparable across worker counts on a box short of cores)."""
    print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, 127.0.0.1; at end {loadavg()}")
    print(
        f"{'row':<{width}}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'requests':>10}{'non-2xx':>9}{'sockerr':>9}"
        f"{'cpu ms/req':>11}{'req/cpu-s':>10}"
    )
    for row in rows:
        cpu = (
            f"{row.cpu_s * 1000 / row.requests:>11.2f}{row.requests / row.cpu_s:>10.0f}"
            if row.cpu_s and row.requests
            else f"{'-':>11}{'-':>10}"
        )
        print(
            f"{row.name:<{width}}{row.rps:>9.0f}{row.p50_ms:>9.2f}{row.p99_ms:>9.2f}"
            f"{row.requests:>10}{row.non2xx:>9}{row.socket_errors:>9}{cpu}"
        )
    for row in rows:
        for line in [row.note, *row.statuses]:
            if line:
                print(f"  {row.name}: {line}")
    by_name = {row.name: row for row in rows}
    print("\nratios (same run):")
    if pairs is None:
        pairs = [
            ("healthz / ping", "huiyuan /healthz", "sanic ping"),
            ("change_points / raw tx, 100 rows", "change_points, 100 members", "raw aiomysql tx, 100 rows"),
            ("change_points / raw tx, 1 hot row", "change_points, 1 hot member", "raw aiomysql tx, 1 hot row"),
            (f"healthz w{args.workers} / w1", f"huiyuan /healthz w{args.workers}", "huiyuan /healthz"),
            (
                f"change_points w{args.workers} / w1",
                f"change_points, 100 members w{args.workers}",
                "change_points, 100 members",
            ),
        ]
    for label, top, bottom, *target in pairs:
        if top in by_name and bottom in by_name and by_name[bottom].rps:
            ratio = by_name[top].rps / by_name[bottom].rps
            verdict = f"   target >= {target[0]:.2f}  {'PASS' if ratio >= target[0] else 'FAIL'}" if target else ""
            print(f"  {label:<48} {ratio:6.3f}{verdict}")


def check_ledgers(env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-m", "server", "check-ledgers"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    summary = [line for line in done.stdout.splitlines() if line.strip()]
    print(f"\ncheck-ledgers: exit {done.returncode}; " + " | ".join(summary[-3:]))
    return done.returncode


def cleanup(dbs: tuple[str, ...] = (RAW_DB, APP_DB)) -> None:
    for db in dbs:
        try:
            sql(f"DROP DATABASE IF EXISTS {db}")
        except pymysql.MySQLError as exc:
            print(f"could not drop {db}: {exc}", file=sys.stderr)
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{REDIS_PREFIX}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except Exception as exc:
        print(f"could not clear redis keys {REDIS_PREFIX}*: {exc}", file=sys.stderr)


def run(args: argparse.Namespace, tmp: Path, services: list[Service]) -> int:
    from server.config import Settings

    pool = Settings().database  # Huiyuan runs on these defaults here, so the raw app gets the same pool
    print(machine())
    prepare_raw_db()
    sql(f"DROP DATABASE IF EXISTS {APP_DB}", f"CREATE DATABASE {APP_DB} CHARACTER SET utf8mb4")
    port = free_port()
    apps = [sys.executable, str(ROOT / "bench" / "ceiling_apps.py"), "--port", str(port), "--db", RAW_DB]
    baseline = Service(
        "ceiling-apps",
        [*apps, "--pool-min", str(pool.pool_min), "--pool-max", str(pool.pool_max)],
        dict(os.environ),
        tmp,
    )
    services.append(baseline)
    base = f"http://{HOST}:{port}"
    baseline.wait_ready(f"{base}/ping")
    print(f"raw pool: minsize={pool.pool_min} maxsize={pool.pool_max} (Huiyuan's database.pool_min/pool_max)\n")
    rows = [
        measure("sanic ping", f"{base}/ping", args, tmp, pgid=baseline.proc.pid),
        measure(
            "raw aiomysql tx, 100 rows",
            base,
            args,
            tmp,
            token=None,
            paths=[f"/tx/{i}" for i in range(1, SPREAD + 1)],
            pgid=baseline.proc.pid,
        ),
        measure("raw aiomysql tx, 1 hot row", base, args, tmp, token=None, paths=["/tx/1"], pgid=baseline.proc.pid),
    ]
    baseline.stop()
    env = huiyuan_env(tmp)
    for workers in sorted({1, args.workers}):
        service, base = start_huiyuan(workers, env, tmp, services)
        if workers == 1:
            print("huiyuan start (development: migrate + seed):")
            for line in service.log_path.read_text(errors="replace").splitlines():
                if re.search(r"applied|Demo merchant|Admin login|Huiyuan on|emulator", line):
                    print(f"  | {line.strip()}")
            token, member_ids = create_members(base)
            print(f"logged in as {ADMIN['username']}, created {len(member_ids)} members via the API\n")
        suffix = "" if workers == 1 else f" w{workers}"
        pgid = service.proc.pid
        rows.append(measure(f"huiyuan /healthz{suffix}", f"{base}/healthz", args, tmp, pgid=pgid))
        points = [f"/api/members/{m}/points" for m in member_ids]
        rows.append(
            measure(f"change_points, 100 members{suffix}", base, args, tmp, token=token, paths=points, pgid=pgid)
        )
        if workers == 1:
            rows.append(
                measure("change_points, 1 hot member", base, args, tmp, token=token, paths=points[:1], pgid=pgid)
            )
        service.stop()
    report(rows, args)
    return check_ledgers(env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured row (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="also run Huiyuan with this many workers")
    parser.add_argument("--quick", action="store_true", help="3 s per row: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.duration = 3
    if shutil.which("wrk") is None:
        print("wrk not found: install it with `apt-get install -y wrk` (Debian package)", file=sys.stderr)
        return 2
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        try:
            return run(args, Path(tmp), services)
        finally:
            for service in reversed(services):
                service.stop()
            cleanup()


if __name__ == "__main__":
    sys.exit(main())


def run_bench(
    doc: str | None,
    run: Callable[[argparse.Namespace, Path, list[Service]], int],
    *,
    name: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """The common command line of the wrk benches (--duration, --connections, --threads, --quick and the bench's
    own options), wrk checked, then `run` with a scratch folder; every service it started stopped at the end."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured row (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="3 s per row: a smoke run")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.quick:
        args.duration = 3
    if shutil.which("wrk") is None:
        print("wrk not found: install it with `apt-get install -y wrk` (Debian package)", file=sys.stderr)
        return 2
    return run_in_scratch(args, run, name=name)


def run_in_scratch(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Path, list[Service]], int],
    *,
    name: str,
    dbs: tuple[str, ...] = (RAW_DB, APP_DB),
) -> int:
    """`run` with a scratch folder and a list of the services it starts; all stopped, `dbs` dropped at the end."""
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix=f"{name}-bench-") as tmp:
        try:
            return run(args, Path(tmp), services)
        finally:
            for service in reversed(services):
                service.stop()
            cleanup(dbs)
