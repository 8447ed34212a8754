"""External POS orders imported over HTTP (JSON lines and CSV): the purchase's record and earning rule, once.

Default rules: 1 point per 1,000 fen paid, 1 growth per 100 fen.
  12,345 fen -> 12 points, 123 growth     8,000 -> 8, 80     999 -> 0 points, 9 growth     25,000 -> 25, 250
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from models.checkout import imports
from models.checkout.purchases import Purchase
from models.ledger.books import PointsAccount, PointsEntry
from models.tiers.tables import GrowthEntry, MemberTier
from server.__main__ import _check_ledgers
from tests.helpers import add_member, add_staff, add_store, error_of
from tests.points.helpers import assert_lots_agree
from tests.tiers.helpers import new_member as member_with_card

URL = "/api/pos/orders/import"
NDJSON = {"content-type": "application/x-ndjson"}
CSV = {"content-type": "text/csv"}
WHEN = "2026-11-01T12:30:00+08:00"


def _ndjson(*orders: dict[str, Any]) -> str:
    return "".join(json.dumps(order) + "\n" for order in orders)


async def _post(client: httpx.AsyncClient, headers: dict[str, str], body: str | bytes, kind: dict[str, str]):
    return await client.post(URL, content=body, headers={**headers, **kind})


async def _standing(member: int) -> tuple[int, int]:
    points = (await PointsAccount.get(member_id=member)).balance
    assert points == await assert_lots_agree(member)
    row = await MemberTier.get_or_none(member_id=member)
    return points, row.growth_total if row is not None else 0


async def _three_members(client, admin, demo) -> tuple[int, int, int]:
    by_id = (await add_member(client, admin, phone="13800000101"))["id"]
    by_phone = (await add_member(client, admin, phone="13800000102"))["id"]
    by_card = await member_with_card(client, admin, merchant_id=demo.merchant.id, phone="13800000103", card=True)
    return by_id, by_phone, by_card


async def test_ndjson_lines_become_purchases_that_earn_and_a_second_send_repeats(client, admin, demo):
    by_id, by_phone, by_card = await _three_members(client, admin, demo)
    items = [{"sku": "A", "category": "care", "amount": 12_345, "quantity": 3}]
    body = _ndjson(
        {"external_order_id": "X-1", "store_id": demo.store.id, "member_id": by_id, "occurred_at": WHEN,
         "amount": 12_345, "items": items},
        {"external_order_id": "X-2", "store_code": demo.store.code, "phone": "13800000102", "occurred_at": WHEN,
         "amount": 8_000},
        {"external_order_id": "X-3", "store_id": demo.store.id, "card_code": f"C{by_card:011d}",
         "occurred_at": "2026-11-02T09:00:00Z", "amount": 999},
    )  # fmt: skip
    first = await _post(client, admin, body, NDJSON)
    assert first.status_code == 200, first.text
    assert first.json() == {"total": 3, "created": 3, "repeated": 0, "rejected": 0, "errors": []}
    assert await _standing(by_id) == (12, 123)
    assert await _standing(by_phone) == (8, 80)
    assert await _standing(by_card) == (0, 9)
    rows = await Purchase.filter(merchant_id=demo.merchant.id).order_by("order_no")
    assert [(r.order_no, r.source, r.store_id, r.amount) for r in rows] == [
        ("ext:X-1", "import", demo.store.id, 12_345),
        ("ext:X-2", "import", demo.store.id, 8_000),
        ("ext:X-3", "import", demo.store.id, 999),
    ]
    assert rows[0].items == items and rows[0].occurred_at.isoformat().startswith("2026-11-01T04:30:00")

    again = await _post(client, admin, body, NDJSON)
    assert again.json() == {"total": 3, "created": 0, "repeated": 3, "rejected": 0, "errors": []}
    assert await Purchase.filter(merchant_id=demo.merchant.id).count() == 3
    assert await PointsEntry.filter(member_id__in=[by_id, by_phone, by_card]).count() == 2  # 999 fen earn no points
    assert await GrowthEntry.filter(member_id__in=[by_id, by_phone, by_card]).count() == 3
    assert await _standing(by_id) == (12, 123)
    changed = _ndjson({"external_order_id": "X-2", "member_id": by_id, "store_id": demo.store.id, "occurred_at": WHEN,
                       "amount": 8_000})  # fmt: skip
    taken = (await _post(client, admin, changed, NDJSON)).json()
    assert (taken["rejected"], taken["errors"][0]["code"]) == (1, "purchase.order_no_taken")
    # the purchases endpoint and the import are one record: its order number is the import's
    same = await client.post(
        f"/api/members/{by_id}/purchases", json={"order_no": "ext:X-1", "amount": 12_345}, headers=admin
    )
    assert same.status_code == 200 and same.json()["points"] == 12
    assert await _check_ledgers() == 0


async def test_csv_with_an_items_column_earns_as_the_purchases_endpoint_does(client, admin, demo):
    imported = (await add_member(client, admin, phone="13800000201"))["id"]
    direct = (await add_member(client, admin, phone="13800000202"))["id"]
    items = json.dumps([{"sku": "A", "amount": 25_000}]).replace('"', '""')
    body = (
        "\ufeffexternal_order_id,store_code,phone,occurred_at,amount,items\r\n"
        f'C-1,{demo.store.code},13800000201,{WHEN},25000,"{items}"\r\n'
        "\r\n"
        f"C-2,{demo.store.code},13800000201,2026-11-03T10:00:00+08:00,8000,\r\n"
    ).encode()
    answer = await _post(client, admin, body, CSV)
    assert answer.json() == {"total": 2, "created": 2, "repeated": 0, "rejected": 0, "errors": []}, answer.text
    await client.post(f"/api/members/{direct}/purchases", json={"order_no": "D-1", "amount": 25_000}, headers=admin)
    await client.post(f"/api/members/{direct}/purchases", json={"order_no": "D-2", "amount": 8_000}, headers=admin)
    assert await _standing(imported) == await _standing(direct) == (33, 330)
    assert (await Purchase.get(order_no="ext:C-1")).items == [
        {"sku": "A", "category": "", "amount": 25_000, "quantity": 1}
    ]
    assert (await _post(client, admin, body, CSV)).json()["repeated"] == 2
    assert await _standing(imported) == (33, 330)
    assert await _check_ledgers() == 0


async def test_bad_lines_are_reported_by_number_and_the_good_ones_land(client, admin, demo):
    member = (await add_member(client, admin, phone="13800000301", store_id=demo.store.id))["id"]
    other_store = await add_store(client, admin, code="IMP2")
    created = await client.post(f"/api/stores/{demo.store.id}/api-keys", json={"name": "till"}, headers=admin)
    till = {"Authorization": f"ApiKey {created.json()['key']}"}
    good = {"member_id": member, "occurred_at": WHEN, "amount": 10_000}
    lines = [
        json.dumps({"external_order_id": "B-1", "store_id": demo.store.id, **good}),  # 1 ok
        json.dumps({"external_order_id": "B-2", **good, "member_id": 999_999}),  # 2 unknown member
        json.dumps({"external_order_id": "B-3", **good, "amount": -5}),  # 3 bad amount
        json.dumps({"external_order_id": "B-4", **good, "amount": "500"}),  # 4 a string is not fen
        json.dumps({"external_order_id": "B-5", **good, "occurred_at": "2026-11-01 12:00"}),  # 5 no offset
        json.dumps({"external_order_id": "B-6", "store_id": other_store, **good}),  # 6 another store
        "",  # 7 blank: skipped
        "{not json",  # 8
        json.dumps({"external_order_id": "B-1", **good}),  # 9 twice in the file
        json.dumps({"external_order_id": "B-10", **good, "amount": 2_000}),  # 10 ok, the key's own store
    ]
    answer = await _post(client, till, "\n".join(lines), NDJSON)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["total"], result["created"], result["repeated"], result["rejected"]) == (9, 2, 0, 7)
    assert [(e["line"], e["code"], e["field"]) for e in result["errors"]] == [
        (2, "member.not_found", "member_id"),
        (3, "import.amount_invalid", "amount"),
        (4, "import.amount_invalid", "amount"),
        (5, "import.occurred_at_invalid", "occurred_at"),
        (6, "auth.store_scope", "store_id"),
        (8, "import.json_invalid", None),
        (9, "import.duplicate_line", "external_order_id"),
    ]
    orders = (
        await Purchase.filter(merchant_id=demo.merchant.id).order_by("order_no").values_list("order_no", "store_id")
    )
    assert orders == [("ext:B-1", demo.store.id), ("ext:B-10", demo.store.id)]
    assert await _standing(member) == (12, 120)

    csv_body = f"external_order_id,member_id,occurred_at,amount\nK-1,{member},{WHEN},1.5\nK-2,{member},soon,100\n"
    bad_csv = (await _post(client, till, csv_body, CSV)).json()
    assert [(e["line"], e["code"]) for e in bad_csv["errors"]] == [
        (2, "import.amount_invalid"),
        (3, "import.occurred_at_invalid"),
    ]
    header = await _post(client, admin, "order,amount\nA,1\n", CSV)
    assert (header.status_code, error_of(header)["code"]) == (422, "import.header_invalid")
    wrong_type = await _post(client, admin, "{}", {"content-type": "application/json"})
    assert (wrong_type.status_code, error_of(wrong_type)["code"]) == (415, "import.media_type")
    assert (await client.post(URL, content="", headers=NDJSON)).status_code == 401
    cashier = await add_staff(client, admin, username="imp-cashier", role="cashier", store_id=demo.store.id)
    assert (await _post(client, cashier, lines[0], NDJSON)).status_code == 403
    assert await _check_ledgers() == 0


async def test_too_many_lines_or_bytes_write_nothing(client, admin, demo):
    member = (await add_member(client, admin, phone="13800000401"))["id"]
    line = {"store_id": demo.store.id, "member_id": member, "occurred_at": WHEN, "amount": 1_000}
    body = _ndjson(*({"external_order_id": f"M-{n}", **line} for n in range(imports.MAX_LINES + 1)))
    many = await _post(client, admin, body, NDJSON)
    assert (many.status_code, error_of(many)["code"]) == (422, "import.too_many_lines")
    rows = "".join(f"M-{n},{demo.store.id},{member},{WHEN},1000\n" for n in range(imports.MAX_LINES + 1))
    many_csv = await _post(client, admin, "external_order_id,store_id,member_id,occurred_at,amount\n" + rows, CSV)
    assert (many_csv.status_code, error_of(many_csv)["code"]) == (422, "import.too_many_lines")
    huge = await _post(client, admin, b" " * (imports.MAX_BYTES + 1), NDJSON)
    assert (huge.status_code, error_of(huge)["code"]) == (413, "request.too_large")
    assert await Purchase.filter(member_id=member).count() == 0
    bad = _ndjson(*({"external_order_id": f"Z-{n}", **line, "amount": 0} for n in range(150)))
    capped = (await _post(client, admin, bad, NDJSON)).json()
    assert (capped["total"], capped["rejected"], len(capped["errors"])) == (150, 150, imports.MAX_ERRORS)
    assert [e["line"] for e in capped["errors"]] == list(range(1, 101))
    times = _ndjson(
        {"external_order_id": "T-1", **line, "occurred_at": "1999-12-31T23:00:00-08:00"},
        {"external_order_id": "T-2", **line, "occurred_at": "0001-01-01T00:00:00+14:00"},
        {"external_order_id": "T-3", **line, "occurred_at": "2999-01-01T00:00:00+08:00"},
        {"external_order_id": "T-4", **line, "occurred_at": 1_767_000_000},
    )
    timed = (await _post(client, admin, times, NDJSON)).json()
    assert [(e["line"], e["code"]) for e in timed["errors"]] == [
        (n, "import.occurred_at_invalid") for n in (1, 2, 3, 4)
    ]
    exactly = _ndjson(*({"external_order_id": f"M-{n}", **line} for n in range(3)))
    assert (await _post(client, admin, exactly, NDJSON)).json()["created"] == 3
    assert await _standing(member) == (3, 30)
    assert await _check_ledgers() == 0
