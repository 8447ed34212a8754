"""Merchant member management over HTTP: search filters, the streamed CSV export and the member timeline."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx

from models.kernel.config_cache import config_change
from models.members.member_card import MemberCard
from models.members.members import Member
from models.tenancy.merchants import Merchant
from models.tenancy.staff import Staff
from tests.helpers import add_member, add_staff, add_store, error_of
from tests.members.test_import import define, start, wait_done

ID_CARD = "11010519491231002X"


async def ids(client: httpx.AsyncClient, headers: dict[str, str], query: str) -> list[int]:
    response = await client.get(f"/api/members/?limit=100&{query}", headers=headers)
    assert response.status_code == 200, response.text
    return sorted(m["id"] for m in response.json()["items"])


async def test_search_filters(client, admin, demo):
    other_store = await add_store(client, admin, code="S002")
    here = [(await add_member(client, admin, phone=f"1380000000{i}", store_id=demo.store.id))["id"] for i in range(4)]
    there = (await add_member(client, admin, phone="13800000009", store_id=other_store))["id"]
    await MemberCard.create(merchant_id=demo.merchant.id, member_id=here[0], card_id="pCARD", code="812345678901")
    await Member.filter(id=here[1]).update(subscribed=True, activated_at=datetime(2024, 3, 5, tzinfo=UTC))
    await Member.filter(id=here[2]).update(source="oa_qr", subscribed=True)
    stamps = {  # Asia/Shanghai is UTC+8: 16:00Z is local midnight
        here[0]: datetime(2024, 3, 1, 15, 59, 59, tzinfo=UTC),
        here[1]: datetime(2024, 3, 1, 16, 0, 0, tzinfo=UTC),
        here[2]: datetime(2024, 3, 2, 15, 59, 59, tzinfo=UTC),
        here[3]: datetime(2024, 3, 2, 16, 0, 0, tzinfo=UTC),
    }
    for member_id, stamp in stamps.items():
        await Member.filter(id=member_id).update(created_at=stamp)

    assert await ids(client, admin, "card_code=812345678901") == [here[0]]
    assert await ids(client, admin, "card_code=000") == []
    assert await ids(client, admin, f"store_id={other_store}") == [there]
    assert await ids(client, admin, "source=oa_qr") == [here[2]]
    assert await ids(client, admin, "subscribed=true") == [here[1], here[2]]
    assert await ids(client, admin, "subscribed=false") == [here[0], here[3], there]
    assert await ids(client, admin, "activated=true") == [here[1]]
    assert await ids(client, admin, "activated=false") == [here[0], here[2], here[3], there]
    assert await ids(client, admin, "created_from=2024-03-02&created_to=2024-03-02") == [here[1], here[2]]
    assert await ids(client, admin, "created_to=2024-03-01") == [here[0]]
    assert await ids(client, admin, "created_from=2024-03-03&source=staff") == [here[3], there]
    assert await ids(client, admin, "subscribed=true&created_to=2024-03-01") == []
    async with config_change(merchant_id=demo.merchant.id):  # as a writer of configuration would
        await Merchant.filter(id=demo.merchant.id).update(timezone="UTC")
    assert await ids(client, admin, "created_from=2024-03-01&created_to=2024-03-01") == [here[0], here[1]]

    cashier = await add_staff(client, admin, username="cash1", role="cashier", store_id=demo.store.id)
    assert await ids(client, cashier, f"store_id={other_store}") == here  # store roles stay in their store
    assert await ids(client, cashier, "subscribed=true") == [here[1], here[2]]
    bad = await client.get("/api/members/?subscribed=maybe", headers=admin)
    assert (bad.status_code, error_of(bad)["field"]) == (422, "subscribed")
    bad = await client.get("/api/members/?created_from=2024-02-30", headers=admin)
    assert (bad.status_code, error_of(bad)["field"]) == (422, "created_from")


def _rows(response: httpx.Response) -> list[list[str]]:
    assert response.content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


async def test_export_streams_every_member_with_custom_fields_and_never_the_id_card(client, admin, demo):
    await define(client, admin, key="level", label="Level", type="enum", options=["gold", "silver"])
    await define(client, admin, key="nickname", label="Nickname", type="string")
    lines = ["phone,name,level"] + [f"1390000{i:04d},Imported {i},{'gold' if i % 2 else ''}" for i in range(1205)]
    job = await wait_done(client, admin, await start(client, admin, "\n".join(lines).encode()))
    assert job["created"] == 1205
    member = await add_member(
        client,
        admin,
        phone="13800000001",
        name='=HYPERLINK("http://x")',
        gender="female",
        birthday="1990-05-04",
        store_id=demo.store.id,
        id_card_no=ID_CARD,
        custom_fields={"nickname": "@lei", "level": "silver"},
    )
    for book, delta in (("points", 30), ("balance", 120)):
        body = {"delta": delta, "reason": "test", "idempotency_key": f"export-{book}"}
        assert (await client.post(f"/api/members/{member['id']}/{book}", json=body, headers=admin)).status_code == 200

    response = await client.get("/api/members/export.csv", headers=admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="members.csv"'
    rows = _rows(response)
    assert rows[0] == [
        "id", "member_no", "phone", "name", "gender", "birthday", "store_code", "source", "points", "balance_fen",
        "created_at", "level", "nickname",
    ]  # fmt: skip
    assert len(rows) == 1 + 1206
    assert [int(r[0]) for r in rows[1:]] == sorted(int(r[0]) for r in rows[1:])
    assert rows[2][2:] == ["13900000001", "Imported 1", "unknown", "", "", "import", "0", "0", rows[2][10], "gold", ""]
    created = (await Member.get(id=member["id"])).created_at.astimezone(ZoneInfo("Asia/Shanghai"))
    assert rows[-1] == [
        str(member["id"]), "", "13800000001", "'=HYPERLINK(\"http://x\")", "female", "1990-05-04",
        demo.store.code, "staff", "30", "120", created.isoformat(timespec="seconds"), "silver", "'@lei",
    ]  # fmt: skip
    assert ID_CARD not in response.text and member["id_card_no_masked"] not in response.text
    assert "id_card" not in response.text

    only_staff = _rows(await client.get("/api/members/export.csv?source=staff", headers=admin))
    assert [r[0] for r in only_staff[1:]] == [str(member["id"])]
    empty = _rows(await client.get("/api/members/export.csv?phone=0000000", headers=admin))
    assert len(empty) == 1
    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=demo.store.id)
    forbidden = await client.get("/api/members/export.csv", headers=manager)
    assert (forbidden.status_code, error_of(forbidden)["code"]) == (403, "auth.role_forbidden")
    bad = await client.get("/api/members/export.csv?limit=5", headers=admin)
    assert (bad.status_code, error_of(bad)["code"]) == (422, "validation.failed")


async def test_openapi_describes_csv_bodies(client):
    spec = (await client.get("/docs/openapi.json")).json()
    export = spec["paths"]["/api/members/export.csv"]["get"]
    assert list(export["responses"]["200"]["content"]) == ["text/csv"]
    assert "Roles: owner, hq_admin." in export["description"]
    upload = spec["paths"]["/api/members/imports"]["post"]
    assert list(upload["requestBody"]["content"]) == ["text/csv"]
    assert {"202", "401", "403", "413", "415", "422"} <= set(upload["responses"])
    timeline = spec["paths"]["/api/members/{member_id}/timeline"]["get"]
    assert {p["name"] for p in timeline["parameters"] if p["in"] == "query"} == {"before_id", "limit"}


async def test_timeline_shows_registration_and_who_changed_what(client, admin, demo):
    owner_id = (await Staff.get(username=demo.admin_username)).id
    await define(client, admin, key="nickname", label="Nickname", type="string")
    member = await add_member(client, admin, phone="13800000001", name="Li Lei", store_id=demo.store.id)
    path = f"/api/members/{member['id']}"
    change = {"name": "Han Mei", "id_card_no": ID_CARD, "custom_fields": {"nickname": "Mei"}}
    assert (await client.patch(path, json=change, headers=admin)).status_code == 200
    assert (await client.patch(path, json={"name": "Han Mei"}, headers=admin)).status_code == 200  # no change
    cashier = await add_staff(client, admin, username="cash1", role="cashier", store_id=demo.store.id)
    cashier_id = (await Staff.get(username="cash1")).id
    assert (await client.patch(path, json={"birthday": "1990-05-04"}, headers=cashier)).status_code == 200

    response = await client.get(f"{path}/timeline", headers=cashier)
    assert response.status_code == 200, response.text
    page = response.json()
    assert [(a["kind"], a["actor"], a["detail"]) for a in page["items"]] == [
        ("profile_changed", f"staff:{cashier_id}", {"birthday": {"old": None, "new": "1990-05-04"}}),
        (
            "profile_changed",
            f"staff:{owner_id}",
            {
                "name": {"old": "Li Lei", "new": "Han Mei"},
                "id_card_no": "changed",
                "custom_fields.nickname": {"old": None, "new": "Mei"},
            },
        ),
        (
            "registered",
            f"staff:{owner_id}",
            {"source": "staff", "store_id": demo.store.id, "staff_id": None, "referrer_id": None},
        ),
    ]
    assert page["next_before_id"] is None
    assert ID_CARD not in response.text
    first = (await client.get(f"{path}/timeline?limit=2", headers=admin)).json()
    assert [a["id"] for a in first["items"]] == [a["id"] for a in page["items"][:2]]
    assert first["next_before_id"] == page["items"][1]["id"]
    rest = (await client.get(f"{path}/timeline?limit=2&before_id={first['next_before_id']}", headers=admin)).json()
    assert ([a["kind"] for a in rest["items"]], rest["next_before_id"]) == (["registered"], None)

    other_store = await add_store(client, admin, code="S002")
    outsider = await add_staff(client, admin, username="cash2", role="cashier", store_id=other_store)
    hidden = await client.get(f"{path}/timeline", headers=outsider)
    assert (hidden.status_code, error_of(hidden)["code"]) == (404, "member.not_found")


async def test_imported_member_timeline_names_the_job_and_staff(client, admin, demo):
    owner_id = (await Staff.get(username=demo.admin_username)).id
    job = await wait_done(client, admin, await start(client, admin, b"phone,store_code\n13900000001,S001\n"))
    member_id = (await client.get("/api/members/?phone=13900000001", headers=admin)).json()["items"][0]["id"]
    items = (await client.get(f"/api/members/{member_id}/timeline", headers=admin)).json()["items"]
    assert [(a["kind"], a["actor"], a["detail"]) for a in items] == [
        (
            "registered",
            f"staff:{owner_id}",
            {"source": "import", "store_id": demo.store.id, "import_job_id": job["id"], "line": 2},
        )
    ]
