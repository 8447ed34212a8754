"""SQL and Redis round trips per request, counted in the drivers, for the hot paths of issue 12.

Run: .venv/bin/python bench/roundtrips.py [--requests 10] [--verbose]
Starts Huiyuan (one process, MariaDB + Redis as in bench/ceiling.py, scheduler off) under
bench/roundtrips_server.py, which logs every aiomysql command and every Redis send. Requests go one at a time;
after each answer the log is read until it is quiet, so what a request sent is what it cost. Printed per path,
for its first request and its last (after warm-up): SQL round trips in all, transaction control
(BEGIN/START TRANSACTION/COMMIT/ROLLBACK/SAVEPOINT/RELEASE), configuration reads (SELECTs naming a table of
CONFIG_TABLES), other commands (SET, PING, INIT_DB), Redis round trips and commands, the issue's target and
PASS/FAIL. Exit 0 whatever the figures: a bench prints, it does not gate.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ceiling  # noqa: E402
from ceiling import ADMIN, DB_PREFIX, HOST, Service, free_port, sql  # noqa: E402
from loyalty import signed_notifies  # noqa: E402

DB = f"{DB_PREFIX}roundtrips"
CONFIG_TABLES = ("merchant", "loyalty_program", "tier", "onboarding_settings", "wechat_account", "config_version")
CONFIG_READ = re.compile(
    r"^\s*SELECT\b.*\b(?:FROM|JOIN)\s+`?(" + "|".join(CONFIG_TABLES) + r")`?(?:\s|$|,|\))", re.I | re.S
)
TX_CONTROL = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION|COMMIT|ROLLBACK|SAVEPOINT|RELEASE\s+SAVEPOINT)\b", re.I)
QUIET_SECONDS = 0.15
BACKGROUND_TASKS = (
    "outbox-worker",
    "pushed-state-listener",
)  # asyncio task names of server/app.py's in-process workers
# (path label, SQL target, statements); notify covers the fresh credit and the replay
TARGETS = {"purchase": 4, "notify": 4, "points read": 2, "settle": 4}


@dataclass
class Cost:
    status: int = 0
    sql: int = 0
    tx: int = 0
    config: int = 0
    other: int = 0
    redis_trips: int = 0
    redis_commands: int = 0
    background: int = 0  # round trips of the in-process outbox worker meanwhile: not the request's
    statements: list[str] = field(default_factory=list)
    config_tables: set[str] = field(default_factory=set)


def classify(lines: list[str], status: int) -> Cost:
    cost = Cost(status=status)
    for line in lines:
        task, kind, detail, text = (line.rstrip("\n").split("\t", 3) + ["", "", ""])[:4]
        if task in BACKGROUND_TASKS:
            cost.background += 1
            continue
        if kind == "redis":
            cost.redis_trips += 1
            cost.redis_commands += int(detail)
            cost.statements.append(f"redis {text}")
            continue
        cost.sql += 1
        cost.statements.append(f"{detail} {text}")
        if detail != "QUERY" or re.match(r"^\s*SET\b", text, re.I):
            cost.other += 1
        elif TX_CONTROL.match(text):
            cost.tx += 1
        elif match := CONFIG_READ.match(text):
            cost.config += 1
            cost.config_tables.add(match.group(1))
    return cost


class Trace:
    """The server's trace file, read from where the last request left it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def drain(self) -> list[str]:
        lines: list[str] = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < QUIET_SECONDS:
            with self.path.open(encoding="utf-8") as trace:
                trace.seek(self.offset)
                chunk = trace.read()
            if chunk.endswith("\n"):
                self.offset += len(chunk.encode("utf-8"))
                if chunk:
                    lines += chunk.splitlines()
                    quiet_since = time.monotonic()
            time.sleep(0.02)
        return lines


def measure(trace: Trace, send) -> Cost:  # type: ignore[no-untyped-def]
    trace.drain()  # anything before this request is not its cost
    response = send()
    return classify(trace.drain(), response.status_code)


def member_token(member_id: int, merchant_id: int) -> str:
    from server.auth import issue_member_token
    from server.config import Settings

    security = Settings().security  # the server runs on the defaults (empty config), so this is its secret
    token, _ = issue_member_token(
        secret=security.jwt_secret, ttl=security.member_token_ttl, member_id=member_id, merchant_id=merchant_id
    )
    return token


def run_paths(client: httpx.Client, trace: Trace, staff: dict[str, str], n: int) -> list[tuple[str, str, list[Cost]]]:
    """Each path's requests in turn: (label, target key, costs of requests 1..n)."""
    members = []
    for i in range(n + 2):
        created = client.post("/api/members/", json={"name": f"Trips {i}"}, headers=staff)
        created.raise_for_status()
        members.append(int(created.json()["id"]))
    merchant_id = int(sql(f"SELECT merchant_id FROM member WHERE id = {members[0]}", db=DB)[0][0])
    results = []

    def purchase(member: int, order_no: str):  # type: ignore[no-untyped-def]
        body = {"order_no": order_no, "amount": 12345}
        return lambda: client.post(f"/api/members/{member}/purchases", json=body, headers=staff)

    firsts = [measure(trace, purchase(members[i], f"rt-first-{i}")) for i in range(n)]
    results.append(("purchase, member's first", "purchase", firsts))
    later_member = members[n]
    measure(trace, purchase(later_member, "rt-later-0"))
    later = [measure(trace, purchase(later_member, f"rt-later-{i + 1}")) for i in range(n)]
    results.append(("purchase, a later one", "purchase", later))

    bodies, path = signed_notifies(members, n, f"RT{time.time_ns() % 10**9}", db=DB)
    xml = {"Content-Type": "text/xml"}
    fresh = [measure(trace, lambda b=b: client.post(path, content=b, headers=xml)) for b in bodies]
    results.append(("pay notify v2, fresh order", "notify", fresh))
    replay = [measure(trace, lambda b=b: client.post(path, content=b, headers=xml)) for b in bodies]
    results.append(("pay notify v2, replay", "notify", replay))

    results += settle_paths(client, trace, staff, members[:n], n)

    reads = [measure(trace, lambda m=m: client.get(f"/api/members/{m}/points", headers=staff)) for m in members[:n]]
    results.append(("points read (staff)", "points read", reads))
    own = []
    for m in members[:n]:
        headers = {"Authorization": f"Bearer {member_token(m, merchant_id)}"}
        own.append(measure(trace, lambda h=headers: client.get("/api/mp/me/points", headers=h)))
    results.append(("points read (member's own, /api/mp/me)", "points read", own))
    return results


def settle_paths(  # type: ignore[no-untyped-def]
    client: httpx.Client, trace: Trace, staff: dict[str, str], members: list[int], n: int
) -> list[tuple[str, str, list[Cost]]]:
    """POST /api/pos/orders for members paying with points + stored value, then with a coupon too, then points
    alone, then a replay of the first key (points, stored value and coupons seeded first through the API, outside
    the measured requests)."""
    stores = client.get("/api/stores", headers=staff).json()
    store_id = int((stores["items"] if isinstance(stores, dict) else stores)[0]["id"])
    template = client.post(
        "/api/coupon-templates",
        json={"kind": "full_reduction", "name": "RT 100 off", "threshold": 1000, "reduction": 100, "valid_days": 30,
              "channels": ["staff"]},
        headers=staff,
    )  # fmt: skip
    template.raise_for_status()
    coupons: dict[int, int] = {}
    for m in members:
        seeds = (
            (f"/api/members/{m}/points", {"delta": 10**6, "kind": "adjust", "idempotency_key": f"rp{m}"}),
            (f"/api/members/{m}/balance", {"delta": 10**8, "kind": "recharge", "idempotency_key": f"rb{m}"}),
        )
        for path, body in seeds:
            body["reason"] = "rt"
            client.post(path, json=body, headers=staff).raise_for_status()
        grant = {"template_id": template.json()["id"], "idempotency_key": f"rt-grant-{m}"}
        granted = client.post(f"/api/members/{m}/coupons", json=grant, headers=staff)
        granted.raise_for_status()
        coupons[m] = int(granted.json()["id"])
    price, points, balance = 12345, 100, 2000

    def settle(member: int, key: str, coupon: int | None, stored: int = balance):  # type: ignore[no-untyped-def]
        due = price - points * 10 - stored - (100 if coupon is not None else 0)
        body = {
            "store_id": store_id,
            "member_id": member,
            "items": [{"sku": "S1", "unit_price": price, "quantity": 1}],
            "points": points,
            "balance": stored,
            "coupon_id": coupon,
            "payments": [{"method": "cash", "amount": due}],
            "idempotency_key": key,
        }
        return lambda: client.post("/api/pos/orders", json=body, headers=staff)

    plain = [measure(trace, settle(m, f"rt-settle-{i}", None)) for i, m in enumerate(members)]
    with_coupon = [measure(trace, settle(m, f"rt-settle-c-{i}", coupons[m])) for i, m in enumerate(members)]
    points_only = [measure(trace, settle(m, f"rt-settle-p-{i}", None, 0)) for i, m in enumerate(members)]
    replay = [measure(trace, settle(m, f"rt-settle-{i}", None)) for i, m in enumerate(members)]
    return [
        ("pos settle, points + balance", "settle", plain),
        ("pos settle, points only", "settle", points_only),
        ("pos settle, + a coupon", "settle", with_coupon),
        ("pos settle, replay of its key", "settle", replay),
    ]


def report(results: list[tuple[str, str, list[Cost]]], verbose: bool) -> None:
    width = 42
    print(
        f"\n{'path':<{width}}{'req':>5}{'status':>7}{'sql':>5}{'tx':>4}{'cfg':>5}{'other':>6}"
        f"{'redis rt':>9}{'cmds':>6}{'bg':>4}   target         verdict"
    )
    for label, key, costs in results:
        target = TARGETS[key]
        for index in (0, len(costs) - 1):
            cost = costs[index]
            warm = index > 0
            ok = cost.sql <= target and (cost.config == 0 or not warm)
            goal = f"sql<={target}" + (", cfg=0" if warm else "")
            print(
                f"{label:<{width}}{'#' + str(index + 1):>5}{cost.status:>7}{cost.sql:>5}{cost.tx:>4}{cost.config:>5}"
                f"{cost.other:>6}{cost.redis_trips:>9}{cost.redis_commands:>6}{cost.background:>4}   {goal:<15}"
                f"{'PASS' if ok else 'FAIL'}"
            )
            if cost.config_tables:
                print(f"{'':<{width}}      config tables read: {', '.join(sorted(cost.config_tables))}")
    if verbose:
        for label, _, costs in results:
            print(f"\n{label}, request #{len(costs)}:")
            for statement in costs[-1].statements:
                print(f"  {statement[:160]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10, help="requests per path; the last is the warm one")
    parser.add_argument("--verbose", action="store_true", help="print every statement of each path's last request")
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; the run is short anyway")
    args = parser.parse_args()
    sql(f"DROP DATABASE IF EXISTS {DB}", f"CREATE DATABASE {DB} CHARACTER SET utf8mb4")
    service = None
    with tempfile.TemporaryDirectory(prefix="roundtrips-") as tmp_name:
        tmp = Path(tmp_name)
        trace_path = tmp / "trace.tsv"
        trace_path.touch()
        try:
            env = ceiling.huiyuan_env(tmp, db=DB)
            env["HUIYUAN_JOBS__SCHEDULER"] = "false"  # no background job between two requests
            port = free_port()
            cmd = [sys.executable, str(ROOT / "bench" / "roundtrips_server.py"), str(trace_path)]
            cmd += ["--host", HOST, "--port", str(port), "--workers", "1"]
            service = Service("huiyuan-traced", cmd, env, tmp)
            base = f"http://{HOST}:{port}"
            service.wait_ready(f"{base}/healthz")
            with httpx.Client(base_url=base, timeout=30.0) as client:
                login = client.post("/api/auth/login", json=ADMIN)
                login.raise_for_status()
                staff = {"Authorization": f"Bearer {login.json()['access_token']}"}
                ceiling.define_tiers(base, login.json()["access_token"])
                results = run_paths(client, Trace(trace_path), staff, args.requests)
            report(results, args.verbose)
            print(
                "\nsql: round trips in all; tx: BEGIN/COMMIT/ROLLBACK/SAVEPOINT/RELEASE; cfg: SELECTs on "
                + ", ".join(CONFIG_TABLES)
                + "; other: SET/PING/INIT_DB; redis rt: sends (a pipeline is one), cmds: commands in them;"
                + " bg: the in-process workers' round trips meanwhile (outbox worker, configuration and revocation"
                + " listener), left out of the other columns; tx counts a batch that begins with START TRANSACTION"
            )
            ceiling.check_ledgers(env)
        finally:
            if service is not None:
                service.stop()
            ceiling.cleanup((DB,))
    return 0


if __name__ == "__main__":
    sys.exit(main())
