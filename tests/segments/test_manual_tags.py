"""Manual tags through the API: one member, in bulk (JSON and CSV), idempotent, on the timeline, store-scoped."""

from __future__ import annotations

import asyncio

from models.members.timeline import MemberActivity
from models.segments.tables import MemberTag
from models.tenancy.staff import Staff
from tests.helpers import add_member, add_staff, add_store, error_of


async def new_tag(client, headers, code: str = "vip", **body) -> dict:
    response = await client.post(
        "/api/tags", json={"code": code, "name": code.upper(), "kind": "manual", **body}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


async def tag_events(client, headers, member_id: int) -> list[tuple[str, str, int]]:
    response = await client.get(f"/api/members/{member_id}/timeline", headers=headers)
    assert response.status_code == 200, response.text
    return [
        (item["kind"], item["actor"], item["detail"]["tag_id"])
        for item in response.json()["items"]
        if item["kind"].startswith("tag_")
    ]


async def test_add_and_remove_one_member_idempotently_on_the_timeline(client, admin, demo):
    tag = await new_tag(client, admin)
    member = await add_member(client, admin, phone="13800000001")
    path = f"/api/members/{member['id']}/tags"
    admin_id = (await Staff.get(username=demo.admin_username)).id

    first = await client.post(path, json={"tag_id": tag["id"]}, headers=admin)
    assert (first.status_code, first.json()) == (201, {"added": True})
    again = await client.post(path, json={"tag_id": tag["id"]}, headers=admin)
    assert (again.status_code, again.json()) == (200, {"added": False})
    assert await MemberTag.filter(tag_id=tag["id"]).count() == 1

    listed = (await client.get(path, headers=admin)).json()["items"]
    assert [(t["code"], t["source"], t["rule"], t["added_by"]) for t in listed] == [("vip", "manual", None, admin_id)]
    staff = f"staff:{admin_id}"
    assert await tag_events(client, admin, member["id"]) == [("tag_added", staff, tag["id"])]

    gone = await client.delete(f"{path}/{tag['id']}", headers=admin)
    assert (gone.status_code, gone.json()) == (200, {"removed": True})
    twice = await client.delete(f"{path}/{tag['id']}", headers=admin)
    assert twice.json() == {"removed": False}
    assert (await client.get(path, headers=admin)).json()["items"] == []
    assert await tag_events(client, admin, member["id"]) == [
        ("tag_removed", staff, tag["id"]),
        ("tag_added", staff, tag["id"]),
    ]


async def test_bulk_by_json_and_by_csv_reports_added_already_and_unknown_lines(client, admin):
    tag = await new_tag(client, admin)
    one = await add_member(client, admin, phone="13800000001")
    two = await add_member(client, admin, phone="13800000002")
    three = await add_member(client, admin, phone="13800000003")
    path = f"/api/tags/{tag['id']}/members"

    by_ids = await client.post(path, json={"member_ids": [one["id"], 999999]}, headers=admin)
    assert by_ids.status_code == 200, by_ids.text
    assert by_ids.json() == {"added": 1, "already": 0, "unknown": [{"line": 2, "value": "999999"}]}

    csv_body = b"phone\n13800000001\n13899999999\n13800000002\n\n13800000003\n"
    by_csv = await client.post(path, content=csv_body, headers={**admin, "content-type": "text/csv"})
    assert by_csv.status_code == 200, by_csv.text
    assert by_csv.json() == {"added": 2, "already": 1, "unknown": [{"line": 3, "value": "13899999999"}]}

    repeat = await client.post(path, content=csv_body, headers={**admin, "content-type": "text/csv"})
    assert repeat.json() == {"added": 0, "already": 3, "unknown": [{"line": 3, "value": "13899999999"}]}
    tagged = set(await MemberTag.filter(tag_id=tag["id"]).values_list("member_id", flat=True))
    assert tagged == {one["id"], two["id"], three["id"]}
    for member in (one, two, three):
        assert [kind for kind, _, _ in await tag_events(client, admin, member["id"])] == ["tag_added"]

    ids_csv = f"member_id\n{two['id']}\nabc\n".encode()
    mixed = await client.post(path, content=ids_csv, headers={**admin, "content-type": "text/csv"})
    assert mixed.json() == {"added": 0, "already": 1, "unknown": [{"line": 3, "value": "abc"}]}

    bad_header = await client.post(path, content=b"name\nx\n", headers={**admin, "content-type": "text/csv"})
    assert (bad_header.status_code, error_of(bad_header)["code"]) == (422, "tag.csv_header")
    other_type = await client.post(path, content=b"x", headers={**admin, "content-type": "text/plain"})
    assert (other_type.status_code, error_of(other_type)["code"]) == (415, "tag.media_type")


async def test_a_store_manager_tags_only_their_stores_members_and_a_cashier_only_reads(client, admin, demo):
    other_store = await add_store(client, admin, code="S002")
    ours = await add_member(client, admin, phone="13800000001", store_id=demo.store.id)
    theirs = await add_member(client, admin, phone="13800000002", store_id=other_store)
    tag = await new_tag(client, admin)
    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=demo.store.id)
    cashier = await add_staff(client, admin, username="cash1", role="cashier", store_id=demo.store.id)

    denied = await client.post(f"/api/members/{theirs['id']}/tags", json={"tag_id": tag["id"]}, headers=manager)
    assert (denied.status_code, error_of(denied)["code"]) == (404, "member.not_found")
    allowed = await client.post(f"/api/members/{ours['id']}/tags", json={"tag_id": tag["id"]}, headers=manager)
    assert allowed.status_code == 201, allowed.text
    bulk = await client.post(f"/api/tags/{tag['id']}/members", json={"phones": ["13800000002"]}, headers=manager)
    assert bulk.json() == {"added": 0, "already": 0, "unknown": [{"line": 1, "value": "13800000002"}]}
    assert await MemberTag.filter(member_id=theirs["id"]).count() == 0

    read = await client.get(f"/api/members/{ours['id']}/tags", headers=cashier)
    assert [t["code"] for t in read.json()["items"]] == ["vip"]
    write = await client.post(f"/api/members/{ours['id']}/tags", json={"tag_id": tag["id"]}, headers=cashier)
    assert write.status_code == 403
    hidden = await client.get(f"/api/members/{theirs['id']}/tags", headers=cashier)
    assert hidden.status_code == 404


async def test_codes_are_unique_archived_tags_take_no_members_and_rule_tags_refuse_manual_changes(client, admin):
    tag = await new_tag(client, admin)
    taken = await client.post("/api/tags", json={"code": "vip", "name": "x", "kind": "manual"}, headers=admin)
    assert (taken.status_code, error_of(taken)["code"]) == (409, "tag.code_taken")
    member = await add_member(client, admin, phone="13800000001")

    archived = await client.patch(f"/api/tags/{tag['id']}", json={"archived": True, "name": "Old"}, headers=admin)
    assert (archived.json()["status"], archived.json()["name"]) == ("archived", "Old")
    refused = await client.post(f"/api/members/{member['id']}/tags", json={"tag_id": tag["id"]}, headers=admin)
    assert (refused.status_code, error_of(refused)["code"]) == (409, "tag.archived")
    listed = await client.get("/api/tags", params={"status": "active"}, headers=admin)
    assert listed.json()["items"] == []

    rule = {"code": "rich", "name": "Rich", "kind": "rule", "rule": {"field": "balance", "op": "gte", "value": 1}}
    rule_tag = (await client.post("/api/tags", json=rule, headers=admin)).json()
    for response in (
        await client.post(f"/api/members/{member['id']}/tags", json={"tag_id": rule_tag["id"]}, headers=admin),
        await client.delete(f"/api/members/{member['id']}/tags/{rule_tag['id']}", headers=admin),
        await client.post(f"/api/tags/{rule_tag['id']}/members", json={"member_ids": [member["id"]]}, headers=admin),
    ):
        assert (response.status_code, error_of(response)["code"]) == (409, "tag.rule_managed")


async def test_the_same_tag_added_at_once_many_times_is_added_once(client, admin):
    tag = await new_tag(client, admin)
    member = await add_member(client, admin, phone="13800000001")
    path = f"/api/members/{member['id']}/tags"
    answers = await asyncio.gather(*(client.post(path, json={"tag_id": tag["id"]}, headers=admin) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    bulk = f"/api/tags/{tag['id']}/members"
    twice = await asyncio.gather(
        *(client.post(bulk, json={"member_ids": [member["id"]]}, headers=admin) for _ in range(4))
    )
    assert [b.json()["added"] for b in twice] == [0, 0, 0, 0]
    assert await MemberTag.filter(tag_id=tag["id"]).count() == 1
    assert await MemberActivity.filter(member_id=member["id"], kind="tag_added").count() == 1


async def test_values_no_member_can_have_are_unknown_lines_not_errors(client, admin):
    """Found by the schema fuzzer: a phone longer than the column, or an id outside the column's range."""
    tag = await new_tag(client, admin)
    member = await add_member(client, admin, phone="13800000007")
    path = f"/api/tags/{tag['id']}/members"
    by_ids = await client.post(path, json={"member_ids": [-27, 2**40, member["id"]]}, headers=admin)
    assert by_ids.status_code == 200, by_ids.text
    assert (by_ids.json()["added"], by_ids.json()["unknown"]) == (
        1,
        [{"line": 1, "value": "-27"}, {"line": 2, "value": str(2**40)}],
    )
    by_phones = await client.post(path, json={"phones": ["1" * 25, "13800000007"]}, headers=admin)
    assert by_phones.json() == {"added": 0, "already": 1, "unknown": [{"line": 1, "value": "1" * 25}]}
    both = await client.post(path, json={"member_ids": [member["id"]], "phones": ["13800000007"]}, headers=admin)
    assert (both.status_code, error_of(both)["code"]) == (422, "tag.bulk_ambiguous")
