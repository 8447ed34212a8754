"""Store scoping cannot be forgotten: every staff route a store role may call is walked with a store-1 token.

The routes come from the app's router, not from a list kept by hand: a GET or by-id route open to
store_manager or cashier that this file does not know fails the test until it is added to a table below
with the way its rows are checked (and, usually, scoped through server.auth.scope_of).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest

from models.kernel import clock
from models.members.members import Member
from models.payments.orders import PayAnomaly, PayOrder, PayRefund, record_anomaly
from models.plans.terms import MemberPlan
from tests.cards.helpers import put_template
from tests.helpers import add_member, add_staff, add_store
from tests.payments.helpers import add_package, pay, paying_member, recharge
from tests.payments.wallet_helpers import refund

STORE_ROLES = {"store_manager", "cashier"}

# Merchant-wide settings and catalogue: no row belongs to a store, every staff role reads the same.
MERCHANT_WIDE = {
    "/api/card-template",
    "/api/coupon-templates",
    "/api/coupon-templates/<template_id:int>",
    "/api/loyalty/points-rules",
    "/api/loyalty/signin-rules",
    "/api/loyalty/tier-policy",
    "/api/member-fields",
    "/api/merchant",
    "/api/onboarding-settings",
    "/api/package-templates",
    "/api/paid-plans",
    "/api/recharge-packages",
    "/api/segments",
    "/api/segments/<segment_id:int>",
    "/api/tags",
    "/api/tiers",
}
# List routes: path -> (key of the rows, how a row's store is found: see _store_of_row).
LISTS = {
    "/api/members": ("items", "member"),
    "/api/stores": ("items", "store"),
    "/api/staff": ("items", "store_id"),
    "/api/qrcodes": ("items", "store_id"),
    "/api/card-template/claim-qrcodes": ("items", "store_id"),
    "/api/pay-orders": ("items", "order"),
    "/api/pay-refunds": ("items", "refund"),
    "/api/pay-anomalies": ("items", "anomaly"),
}
# Rows of one member, reached by the member's id: a store-1 member's answer, a store-2 member's 404.
MEMBER_ROWS = {
    "/api/members/<member_id:int>",
    "/api/members/<member_id:int>/balance",
    "/api/members/<member_id:int>/balance/ledger",
    "/api/members/<member_id:int>/packages",
    "/api/members/<member_id:int>/coupons",
    "/api/members/<member_id:int>/points",
    "/api/members/<member_id:int>/points/ledger",
    "/api/members/<member_id:int>/points/quote",
    "/api/members/<member_id:int>/tags",
    "/api/members/<member_id:int>/tier",
    "/api/members/<member_id:int>/portrait",
    "/api/members/<member_id:int>/tier/history",
    "/api/members/<member_id:int>/timeline",
}
# Gets of one row by its id (the id filled from the seeded rows): a store-2 row is 404.
ROW_GETS = {
    "/api/pay-orders/<order_id:int>": "order",
    "/api/pos/orders/<pos_order_id:int>": "pos_order",
    "/api/qrcodes/<qr_code_id:int>/image": "qr",
    "/api/stores/<store_id:int>/api-keys": "store",
}
# The till's member lookup: a member of the store found by phone, another store's member 404.
LOOKUPS = {"/api/pos/member": "phone"}
# Aggregates over rows: checked against what was seeded in each store.
AGGREGATES = {"/api/paid-plans/stats"}
# A merchant-wide segment's members (a segment of every member here): only the caller's store's (tests/segments).
SEGMENT_READS = {
    "/api/segments/<segment_id:int>/count",
    "/api/segments/<segment_id:int>/members",
    "/api/segments/<segment_id:int>/export.csv",
    "/api/segments/<segment_id:int>/snapshots/<snapshot_id:int>/members",
}
# Reports over a store's roll-ups (tests/analytics): a store role gets its own store's figures, and asking
# for another store is 403; the member report has no store parameter (it counts the caller's store's members).
STORE_REPORTS = {
    "/api/analytics/frequency",
    "/api/analytics/funnel",
    "/api/analytics/members",
    "/api/analytics/sales",
    "/api/analytics/top-items",
}
# Writes on a row by id (store roles allowed): (method, route) -> body; another store's row is 404.
WRITES: dict[tuple[str, str], dict[str, Any]] = {
    ("PATCH", "/api/members/<member_id:int>"): {"name": "X"},
    ("POST", "/api/members/<member_id:int>/activities"): {"rule_code": "x", "idempotency_key": "k"},
    ("POST", "/api/members/<member_id:int>/balance"): {"delta": 1, "reason": "r", "idempotency_key": "k"},
    ("POST", "/api/members/<member_id:int>/packages"): {"template_id": 1, "idempotency_key": "k", "payments": []},
    ("POST", "/api/members/<member_id:int>/packages/<package_id:int>/refund"): {"idempotency_key": "k"},
    ("POST", "/api/members/<member_id:int>/packages/<package_id:int>/uses"): {"idempotency_key": "k"},
    ("POST", "/api/members/<member_id:int>/packages/<package_id:int>/uses/<use_id:int>/reverse"): {},
    ("POST", "/api/members/<member_id:int>/coupons"): {"template_id": 1, "idempotency_key": "k"},
    ("POST", "/api/members/<member_id:int>/points"): {"delta": 1, "reason": "r", "idempotency_key": "k"},
    ("POST", "/api/members/<member_id:int>/points/reverse"): {
        "debit_entry_id": 1,
        "reason": "r",
        "idempotency_key": "k",
    },
    ("POST", "/api/members/<member_id:int>/points/spend"): {"points": 1, "reason": "r", "idempotency_key": "k"},
    ("POST", "/api/members/<member_id:int>/purchases"): {"order_no": "W-1", "amount": 100},
    ("POST", "/api/members/<member_id:int>/purchases/<order_no:str>/reverse"): {},
    ("POST", "/api/members/<member_id:int>/tier"): {"tier_code": "gold", "reason": "r", "until": "2099-01-01"},
    ("POST", "/api/members/<member_id:int>/tags"): {"tag_id": 1},
    ("DELETE", "/api/members/<member_id:int>/tags/<tag_id:int>"): {},
    ("POST", "/api/pay-anomalies/<anomaly_id:int>/resolve"): {"note": "x"},
    ("POST", "/api/pay-orders/<order_id:int>/refund"): {"reason": "r", "idempotency_key": "scope-k"},
    ("POST", "/api/pay-refunds/<refund_id:int>/retry"): {},
    ("POST", "/api/pos/orders/<pos_order_id:int>/returns"): {
        "items": [{"sku": "S", "quantity": 1}],
        "idempotency_key": "k",
    },
    ("POST", "/api/qrcodes/<qr_code_id:int>/disable"): {},
    ("POST", "/api/stores/<store_id:int>/api-keys"): {"name": "scope"},
    ("POST", "/api/stores/<store_id:int>/api-keys/<key_id:int>/revoke"): {},
}
# By-id writes on merchant-wide catalogue rows (no store owns them).
MERCHANT_WIDE_WRITES = {
    ("PUT", "/api/paid-plans/<plan_id:int>"),
    ("PUT", "/api/recharge-packages/<package_id:int>"),
    ("PATCH", "/api/tags/<tag_id:int>"),
    # the tag is merchant-wide; the members it names are looked up in the caller's scope (tests/segments)
    ("POST", "/api/tags/<tag_id:int>/members"),
    ("PATCH", "/api/segments/<segment_id:int>"),
    # the segment is merchant-wide; the snapshot holds only the caller's store's members (tests/segments)
    ("POST", "/api/segments/<segment_id:int>/snapshots"),
}


def _roles(handler: Any) -> set[str]:
    while handler is not None:
        roles = getattr(handler, "__huiyuan_roles__", None)
        if roles is not None:
            return set(roles)
        handler = getattr(handler, "__wrapped__", None)
    return set()


def store_routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route a store-scoped role may call: GETs, and writes naming a row by id."""
    for route in app.router.routes:
        if not _roles(route.handler) & STORE_ROLES:
            continue
        path = "/" + route.path.strip("/")
        for method in route.methods:
            if method == "GET" or "<" in path:
                yield method, path


@dataclass
class Store:
    id: int
    members: list[int] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    refunds: list[int] = field(default_factory=list)
    anomalies: list[int] = field(default_factory=list)
    qrcodes: list[int] = field(default_factory=list)
    purchases: list[str] = field(default_factory=list)
    member_packages: list[int] = field(default_factory=list)
    package_uses: list[int] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    api_keys: list[int] = field(default_factory=list)
    pos_orders: list[int] = field(default_factory=list)
    templates: list[int] = field(default_factory=list)
    segment: int = 0  # a segment of every member, and a snapshot of it taken by this store's manager
    snapshot: int = 0


_keys = itertools.count(1)


async def _seed_store(app: Any, client: httpx.AsyncClient, admin: dict, demo: Any, store_id: int, tag: str) -> Store:
    store = Store(id=store_id)
    coupon = {"kind": "cash", "name": f"c-{tag}", "reduction": 100, "valid_days": 7}
    template = await client.post("/api/coupon-templates", json=coupon, headers=admin)
    assert template.status_code == 201, template.text
    store.templates.append(template.json()["id"])
    member = await add_member(client, admin, name=f"m-{tag}", phone=f"1380000{tag}0", store_id=store_id)
    store.members.append(member["id"])
    store.phones.append(f"1380000{tag}0")
    key = await client.post(f"/api/stores/{store_id}/api-keys", json={"name": f"till-{tag}"}, headers=admin)
    assert key.status_code == 201, key.text
    store.api_keys.append(key.json()["id"])
    points = {"delta": 100, "reason": "seed", "idempotency_key": f"seed-{tag}"}
    assert (await client.post(f"/api/members/{member['id']}/points", json=points, headers=admin)).status_code == 200
    purchase = {"order_no": f"P-{tag}", "amount": 5_000, "store_id": store_id}
    made = await client.post(f"/api/members/{member['id']}/purchases", json=purchase, headers=admin)
    assert made.status_code == 201, made.text
    store.purchases.append(f"P-{tag}")
    template = await client.post(
        "/api/package-templates", json={"name": f"t-{tag}", "kind": "uses", "uses": 3, "price": 300}, headers=admin
    )
    sale = {
        "template_id": template.json()["id"],
        "idempotency_key": f"pk-{tag}",
        "payments": [{"method": "cash", "amount": 300}],
    }
    sold = await client.post(f"/api/members/{member['id']}/packages", json=sale, headers=admin)
    assert sold.status_code == 201, sold.text
    store.member_packages.append(sold.json()["id"])
    visit = {"idempotency_key": f"visit-{tag}"}
    used = await client.post(
        f"/api/members/{member['id']}/packages/{sold.json()['id']}/uses", json=visit, headers=admin
    )
    assert used.status_code == 201, used.text
    store.package_uses.append(used.json()["use"]["id"])
    pos = {
        "store_id": store_id,
        "member_id": member["id"],
        "items": [{"sku": "S", "unit_price": 1_000, "quantity": 1}],
        "idempotency_key": f"POS-{tag}",
        "payments": [{"method": "cash", "amount": 1_000}],
    }
    settled = await client.post("/api/pos/orders", json=pos, headers=admin)
    assert settled.status_code == 201, settled.text
    store.pos_orders.append(settled.json()["id"])
    payer_id, payer = await paying_member(app, merchant_id=demo.merchant.id, mp_openid=f"mp-scope-{tag}")
    await Member.filter(id=payer_id).update(origin_store_id=store_id)
    store.members.append(payer_id)
    package = await add_package(client, admin, name=f"pkg-{tag}", price=1_000, bonus_balance=0, bonus_points=0)
    order = (await recharge(client, payer, package_id=package["id"]))["order"]
    await pay(client, order["out_trade_no"])
    paid = await PayOrder.get(out_trade_no=order["out_trade_no"])
    store.orders.append(paid.id)
    refunded = await refund(client, admin, paid.id, key=f"rf-{tag}")
    assert refunded.status_code == 201, refunded.text
    store.refunds.append(refunded.json()["refund"]["id"])
    await record_anomaly(
        merchant_id=demo.merchant.id,
        kind="amount_mismatch",
        dedupe_key=f"scope:{tag}",
        out_trade_no=paid.out_trade_no,
        detail={},
    )
    store.anomalies.append((await PayAnomaly.get(dedupe_key=f"scope:{tag}")).id)
    now = clock.now()
    await MemberPlan.create(
        merchant_id=demo.merchant.id,
        member_id=payer_id,
        plan_id=1,
        order_id=10_000 + store_id,
        starts_at=now - timedelta(days=10),
        ends_at=now - timedelta(days=1),
    )
    qr = await client.post("/api/qrcodes", json={"kind": "oa", "store_id": store_id}, headers=admin)
    assert qr.status_code == 201, qr.text
    store.qrcodes.append(qr.json()["id"])
    claim = await client.post("/api/card-template/claim-qrcodes", json={"store_id": store_id}, headers=admin)
    assert claim.status_code == 201, claim.text
    await add_staff(client, admin, username=f"cashier-{tag}", role="cashier", store_id=store_id)
    return store


async def _store_of_row(kind: str, row: dict) -> int | None:
    if kind == "member":
        return row["store_id"]
    if kind == "store":
        return row["id"]
    if kind == "store_id":
        return row["store_id"]
    if kind == "order":
        return (await Member.get(id=row["member_id"])).origin_store_id
    if kind == "refund":
        order = await PayOrder.get(id=row["order_id"])
        return (await Member.get(id=order.member_id)).origin_store_id
    if kind == "anomaly":
        order = await PayOrder.get(out_trade_no=row["out_trade_no"])
        return (await Member.get(id=order.member_id)).origin_store_id
    raise AssertionError(f"no way to check rows of kind {kind}")


def _fill(path: str, store: Store) -> str:
    values = {
        "<member_id:int>": store.members[0],
        "<order_id:int>": store.orders[0],
        "<refund_id:int>": store.refunds[0],
        "<anomaly_id:int>": store.anomalies[0],
        "<qr_code_id:int>": store.qrcodes[0],
        "<order_no:str>": store.purchases[0],
        "<package_id:int>": store.member_packages[0],
        "<use_id:int>": store.package_uses[0],
        "<store_id:int>": store.id,
        "<key_id:int>": store.api_keys[0],
        "<pos_order_id:int>": store.pos_orders[0],
        "<template_id:int>": store.templates[0],
        "<tag_id:int>": 1,  # the member is checked first: another store's is 404 whatever the tag
        "<segment_id:int>": store.segment,
        "<snapshot_id:int>": store.snapshot,
    }
    for name, value in values.items():
        path = path.replace(name, str(value))
    assert "<" not in path, f"no id to fill {path} with"
    return path


QUERIES: dict[str, dict[str, Any]] = {"/api/members/<member_id:int>/points/quote": {"order_amount": 1_000}}
QUERIES.update({path: {"from": "2026-01-01", "to": "2026-12-31"} for path in STORE_REPORTS})


@pytest.mark.parametrize("role", ["store_manager", "cashier"])
async def test_a_store_role_sees_and_touches_only_its_own_stores_rows(app, client, admin, demo, role):
    await put_template(client, admin)
    other_id = await add_store(client, admin, code="S002")
    here = await _seed_store(app, client, admin, demo, demo.store.id, "1")
    there = await _seed_store(app, client, admin, demo, other_id, "2")
    me = await add_staff(client, admin, username=f"scoped-{role}", role=role, store_id=here.id)

    routes = sorted(set(store_routes(app)))
    unknown = [
        (method, path)
        for method, path in routes
        if not (
            (
                method == "GET"
                and path in MERCHANT_WIDE | set(LISTS) | MEMBER_ROWS | set(ROW_GETS) | AGGREGATES | set(LOOKUPS)
                or path in SEGMENT_READS
                or path in STORE_REPORTS
            )
            or (method, path) in WRITES
            or (method, path) in MERCHANT_WIDE_WRITES
        )
    ]
    assert unknown == [], f"routes open to store roles that this test does not know how to check: {unknown}"
    everyone = {
        "code": "everyone",
        "name": "All",
        "definition": {"any": [{"field": "balance", "op": "gte", "value": 0}]},
    }
    segment = await client.post("/api/segments", json=everyone, headers=admin)
    assert segment.status_code == 201, segment.text
    here.segment = segment.json()["id"]
    manager = await add_staff(client, admin, username=f"segments-{role}", role="store_manager", store_id=here.id)
    snapshot = await client.post(f"/api/segments/{here.segment}/snapshots", headers=manager)
    assert snapshot.status_code == 201, snapshot.text
    here.snapshot = snapshot.json()["id"]
    ours = set(await Member.filter(origin_store_id=here.id).values_list("id", flat=True))

    checked = 0
    for method, path in routes:
        if method != "GET":
            continue
        params = {LOOKUPS[path]: here.phones[0]} if path in LOOKUPS else QUERIES.get(path)
        response = await client.get(_fill(path, here) if "<" in path else path, params=params, headers=me)
        if response.status_code == 403:  # a role the route is not open to (e.g. cashiers and pay orders)
            assert role not in _roles_of(app, method, path), (path, response.text)
            continue
        assert response.status_code == 200, (path, response.text)
        if path in LISTS:
            key, kind = LISTS[path]
            rows = response.json()[key]
            assert rows, f"{path}: nothing seeded is visible to its own store"
            stores = {await _store_of_row(kind, row) for row in rows}
            assert stores == {here.id}, (path, rows)
            checked += 1
        elif path in MEMBER_ROWS or path in ROW_GETS:
            theirs = await client.get(_fill(path, there), params=QUERIES.get(path), headers=me)
            assert theirs.status_code == 404, (path, theirs.status_code, theirs.text)
            checked += 1
        elif path in LOOKUPS:
            theirs = await client.get(path, params={LOOKUPS[path]: there.phones[0]}, headers=me)
            assert theirs.status_code == 404, (path, theirs.status_code, theirs.text)
            checked += 1
        elif path in SEGMENT_READS:
            if path.endswith("/count"):
                named = response.json()["count"]
                assert named == len(ours), (path, response.text)
            elif path.endswith(".csv"):
                lines = response.text.removeprefix("\ufeff").splitlines()[1:]
                assert {int(line.split(",")[0]) for line in lines} == ours, (path, response.text)
            else:
                assert {row["id"] for row in response.json()["items"]} == ours, (path, response.text)
            checked += 1
        elif path in STORE_REPORTS:
            if path != "/api/analytics/members":
                assert response.json()["store_id"] == here.id, (path, response.text)
                theirs = await client.get(path, params={**QUERIES[path], "store_id": there.id}, headers=me)
                assert theirs.status_code == 403, (path, theirs.status_code, theirs.text)
            checked += 1
        elif path == "/api/paid-plans/stats":
            assert response.json()["ended"] == 1, response.json()  # the store-2 member's ended term is not counted
            checked += 1
    assert checked >= 8

    for method, path in routes:
        if (method, path) not in WRITES:
            continue
        response = await client.request(method, _fill(path, there), json=WRITES[(method, path)], headers=me)
        if response.status_code == 403 and role not in _roles_of(app, method, path):
            continue
        assert response.status_code == 404, (method, path, response.status_code, response.text)
    # nothing of store 2 changed
    assert not await PayAnomaly.filter(id__in=there.anomalies, resolved=True).exists()
    assert await PayRefund.filter(order_id__in=there.orders).count() == 1


def _roles_of(app: Any, method: str, path: str) -> set[str]:
    for route in app.router.routes:
        if "/" + route.path.strip("/") == path and method in route.methods:
            return _roles(route.handler)
    raise AssertionError(f"no route {method} {path}")
