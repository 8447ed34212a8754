"""Segments through the API: tags and conditions combined, counted, previewed, exported, frozen, store-scoped."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from models.segments.tables import MemberTag, Segment, SegmentSnapshot, Tag
from tests.helpers import add_member, add_staff, add_store, error_of, other_merchant
from tests.segments.test_rule_tags import add_tiers, buy

GOLD_SPENT_VIP = {
    "all": [
        {"field": "tier", "op": "in", "value": ["gold"]},
        {"field": "purchase_amount", "op": "gte", "value": 50000, "window_days": 90},
        {"tag": "vip"},
    ]
}
VIP_NOT_GOLD = {"all": [{"tag": "vip"}, {"none": [{"field": "tier", "op": "in", "value": ["gold"]}]}]}


async def new_tag(client, headers, code: str) -> dict:
    response = await client.post("/api/tags", json={"code": code, "name": code, "kind": "manual"}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def new_segment(client, headers, definition, code: str = "seg") -> dict:
    response = await client.post(
        "/api/segments", json={"code": code, "name": code, "definition": definition}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def tag_member(client, headers, member_id: int, tag_id: int) -> None:
    response = await client.post(f"/api/members/{member_id}/tags", json={"tag_id": tag_id}, headers=headers)
    assert response.status_code == 201, response.text


async def world(client, admin, demo) -> dict:
    """Five members over two stores: gold/silver by purchases, some tagged vip."""
    await add_tiers(client, admin)
    north = demo.store.id
    south = await add_store(client, admin, code="S002")
    vip = await new_tag(client, admin, "vip")
    members = {}
    plan = [  # name, store, purchase fen (0: none), vip
        ("m1", north, 60000, True),
        ("m2", north, 60000, False),
        ("m3", south, 70000, True),
        ("m4", north, 50000, True),
        ("m5", south, 0, True),
    ]
    for i, (name, store, amount, tagged) in enumerate(plan):
        member = await add_member(client, admin, name=name, phone=f"1380000000{i + 1}", store_id=store)
        if amount:
            await buy(client, admin, member["id"], f"O{i}", amount)
        if tagged:
            await tag_member(client, admin, member["id"], vip["id"])
        members[name] = member["id"]
    return {"ids": members, "vip": vip, "north": north, "south": south}


async def count_of(client, headers, segment_id: int) -> int:
    response = await client.get(f"/api/segments/{segment_id}/count", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["count"]


async def preview_ids(client, headers, segment_id: int, limit: int = 2) -> tuple[int, list[int]]:
    """Every page of the preview, by the keyset cursor: (total, member ids in order)."""
    ids: list[int] = []
    after, totals = 0, set()
    while True:
        response = await client.get(
            f"/api/segments/{segment_id}/members", params={"limit": limit, "after": after}, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        totals.add(page["total"])
        ids += [row["id"] for row in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert len(totals) == 1
    return totals.pop(), ids


async def export_ids(client, headers, segment_id: int) -> list[int]:
    response = await client.get(f"/api/segments/{segment_id}/export.csv", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text.removeprefix("\ufeff"))))
    return [int(row["id"]) for row in rows]


async def snapshot_ids(client, headers, segment_id: int, snapshot_id: int) -> tuple[int, list[int]]:
    ids: list[int] = []
    after = 0
    while True:
        response = await client.get(
            f"/api/segments/{segment_id}/snapshots/{snapshot_id}/members",
            params={"limit": 1, "after": after},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [row["id"] for row in page["items"]]
        if page["next_after"] is None:
            return page["snapshot"]["member_count"], ids
        after = page["next_after"]


async def test_tags_and_conditions_match_the_members_computed_by_hand_everywhere_alike(client, admin, demo):
    w = await world(client, admin, demo)
    ids = w["ids"]
    gold = await new_segment(client, admin, GOLD_SPENT_VIP, code="gold")
    assert gold["definition"]["all"][2] == {"tag": w["vip"]["id"]}  # kept by tag id
    by_id = {"all": [{"tag": w["vip"]["id"]}, {"none": [{"field": "tier", "op": "in", "value": ["gold"]}]}]}
    others = await new_segment(client, admin, by_id, code="others")
    expected = {gold["id"]: [ids["m1"], ids["m3"]], others["id"]: [ids["m4"], ids["m5"]]}

    for segment_id, members in expected.items():
        assert await count_of(client, admin, segment_id) == len(members)
        assert await preview_ids(client, admin, segment_id, limit=1) == (len(members), members)
        assert await export_ids(client, admin, segment_id) == members
        snap = await client.post(f"/api/segments/{segment_id}/snapshots", headers=admin)
        assert snap.status_code == 201, snap.text
        assert snap.json()["member_count"] == len(members)
        assert await snapshot_ids(client, admin, segment_id, snap.json()["id"]) == (len(members), members)

    page = (await client.get(f"/api/segments/{gold['id']}/members", headers=admin)).json()
    first = page["items"][0]
    assert (first["name"], first["phone_masked"], first["tier_code"]) == ("m1", "138****0001", "gold")
    points = (await client.get(f"/api/members/{ids['m1']}/points", headers=admin)).json()["balance"]
    assert first["points"] == points > 0

    listed = (await client.get("/api/segments", headers=admin)).json()["items"]
    assert [s["code"] for s in listed] == ["gold", "others"]
    # an archived tag no longer counts; a vip-only definition follows the tag's members
    vip_only = await new_segment(client, admin, {"any": [{"tag": "vip"}]}, code="viponly")
    assert await count_of(client, admin, vip_only["id"]) == 4
    await client.patch(f"/api/tags/{w['vip']['id']}", json={"archived": True}, headers=admin)
    assert await count_of(client, admin, vip_only["id"]) == 0


async def test_a_snapshot_does_not_change_when_members_change_afterwards(client, admin, demo):
    w = await world(client, admin, demo)
    ids = w["ids"]
    segment = await new_segment(client, admin, GOLD_SPENT_VIP)
    snap = (await client.post(f"/api/segments/{segment['id']}/snapshots", headers=admin)).json()
    assert snap["definition"] == segment["definition"]

    gone = await client.delete(f"/api/members/{ids['m1']}/tags/{w['vip']['id']}", headers=admin)
    assert gone.json() == {"removed": True}
    await tag_member(client, admin, ids["m2"], w["vip"]["id"])
    redefined = await client.patch(
        f"/api/segments/{segment['id']}", json={"definition": {"any": [{"tag": "vip"}]}}, headers=admin
    )
    assert redefined.status_code == 200, redefined.text

    assert await count_of(client, admin, segment["id"]) == 4  # m2, m3, m4, m5 now
    assert await snapshot_ids(client, admin, segment["id"], snap["id"]) == (2, [ids["m1"], ids["m3"]])
    stored = await SegmentSnapshot.get(id=snap["id"])
    assert stored.definition == segment["definition"] != redefined.json()["definition"]

    archived = await client.patch(f"/api/segments/{segment['id']}", json={"archived": True}, headers=admin)
    assert archived.json()["status"] == "archived"
    refused = await client.post(f"/api/segments/{segment['id']}/snapshots", headers=admin)
    assert (refused.status_code, error_of(refused)["code"]) == (409, "segment.archived")


def _swap(node: Any, old: object, new: object) -> Any:
    """The definition with every value `old` replaced by `new` (another merchant's tag id, known only at run time)."""
    if isinstance(node, dict):
        return {key: _swap(value, old, new) for key, value in node.items()}
    if isinstance(node, list):
        return [_swap(value, old, new) for value in node]
    return new if node == old else node


@pytest.mark.parametrize(
    ("definition", "field", "code"),
    [
        ({"all": [{"tag": "vip"}, {"tag": "nosuch"}]}, "definition.all.1.tag", "rule.unknown_tag"),
        ({"any": [{"none": [{"tag": "old"}]}]}, "definition.any.0.none.0.tag", "rule.tag_archived"),
        ({"all": [{"tag": "FOREIGN"}]}, "definition.all.0.tag", "rule.unknown_tag"),
        ({"all": [{"tag": "vip", "op": "eq"}]}, "definition.all.0", "rule.invalid"),
        ({"all": [{"tag": 1.5}]}, "definition.all.0.tag", "rule.unknown_tag"),
        ({"all": [{"tag": "vip"}, {"field": "tier", "op": "in", "value": ["x"]}]}, "definition.all.1.value.0", None),
        ({"all": []}, "definition.all", "rule.invalid"),
    ],
)
async def test_a_bad_definition_is_422_with_its_path_and_nothing_is_written(client, admin, definition, field, code):
    await add_tiers(client, admin)
    await new_tag(client, admin, "vip")
    old = await new_tag(client, admin, "old")
    await client.patch(f"/api/tags/{old['id']}", json={"archived": True}, headers=admin)
    foreign = await other_merchant()
    foreign_tag = await Tag.create(merchant_id=foreign.merchant.id, code="f", name="f", kind="manual")
    body = {"code": "s", "name": "s", "definition": _swap(definition, "FOREIGN", foreign_tag.id)}
    response = await client.post("/api/segments", json=body, headers=admin)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == field
    assert code is None or error["code"] == code
    assert await Segment.all().count() == 0


async def test_a_rule_tag_takes_no_tag_leaf(client, admin):
    await new_tag(client, admin, "vip")
    body = {"code": "r", "name": "r", "kind": "rule", "rule": {"all": [{"tag": "vip"}]}}
    response = await client.post("/api/tags", json=body, headers=admin)
    assert (response.status_code, error_of(response)["field"]) == (422, "rule.all.0.tag")


async def test_a_store_manager_sees_and_freezes_only_their_stores_members(client, admin, demo):
    w = await world(client, admin, demo)
    ids = w["ids"]
    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=w["north"])
    cashier = await add_staff(client, admin, username="cash1", role="cashier", store_id=w["north"])
    segment = await new_segment(client, manager, GOLD_SPENT_VIP)

    for headers, expected in ((manager, [ids["m1"]]), (cashier, [ids["m1"]]), (admin, [ids["m1"], ids["m3"]])):
        assert await count_of(client, headers, segment["id"]) == len(expected)
        assert await preview_ids(client, headers, segment["id"]) == (len(expected), expected)
        assert await export_ids(client, headers, segment["id"]) == expected
    snap = (await client.post(f"/api/segments/{segment['id']}/snapshots", headers=manager)).json()
    assert (snap["store_id"], snap["member_count"]) == (w["north"], 1)
    assert await snapshot_ids(client, cashier, segment["id"], snap["id"]) == (1, [ids["m1"]])

    whole = (await client.post(f"/api/segments/{segment['id']}/snapshots", headers=admin)).json()
    hidden = await client.get(f"/api/segments/{segment['id']}/snapshots/{whole['id']}/members", headers=manager)
    assert (hidden.status_code, error_of(hidden)["code"]) == (404, "segment.snapshot_not_found")
    denied = await client.post(
        "/api/segments", json={"code": "c", "name": "c", "definition": {"any": [{"tag": "vip"}]}}, headers=cashier
    )
    assert denied.status_code == 403
    assert (await client.post(f"/api/segments/{segment['id']}/snapshots", headers=cashier)).status_code == 403

    foreign = await other_merchant()
    elsewhere = await Segment.create(merchant_id=foreign.merchant.id, code="x", name="x", definition={"any": []})
    missing = await client.get(f"/api/segments/{elsewhere.id}/count", headers=admin)
    assert (missing.status_code, error_of(missing)["code"]) == (404, "segment.not_found")


async def test_bulk_tagging_every_member_of_a_segment(client, admin, demo):
    w = await world(client, admin, demo)
    ids = w["ids"]
    segment = await new_segment(client, admin, VIP_NOT_GOLD)
    promo = await new_tag(client, admin, "promo")
    path = f"/api/tags/{promo['id']}/members"

    first = await client.post(path, json={"segment_id": segment["id"]}, headers=admin)
    assert first.json() == {"added": 2, "already": 0, "unknown": []}, first.text
    tagged = set(await MemberTag.filter(tag_id=promo["id"]).values_list("member_id", flat=True))
    assert tagged == {ids["m4"], ids["m5"]}
    again = await client.post(path, json={"segment_id": segment["id"]}, headers=admin)
    assert again.json() == {"added": 0, "already": 2, "unknown": []}

    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=w["north"])
    other = await new_tag(client, admin, "north")
    scoped = await client.post(f"/api/tags/{other['id']}/members", json={"segment_id": segment["id"]}, headers=manager)
    assert scoped.json() == {"added": 1, "already": 0, "unknown": []}
    assert set(await MemberTag.filter(tag_id=other["id"]).values_list("member_id", flat=True)) == {ids["m4"]}

    mixed = await client.post(path, json={"segment_id": segment["id"], "member_ids": [ids["m1"]]}, headers=admin)
    assert (mixed.status_code, error_of(mixed)["field"]) == (422, "segment_id")
    unknown = await client.post(path, json={"segment_id": 999999}, headers=admin)
    assert (unknown.status_code, error_of(unknown)["code"]) == (404, "segment.not_found")
