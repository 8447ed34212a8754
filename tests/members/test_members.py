"""Members over HTTP: registration, profile changes, search, custom fields and the sealed ID card."""

from __future__ import annotations

import pytest

from models.members.members import Member
from tests.helpers import add_member, error_of, member_total

ID_CARD = "11010519491231002X"

FIELDS = [
    {"key": "nickname", "label": "Nickname", "type": "string"},
    {"key": "cups_per_week", "label": "Cups per week", "type": "int"},
    {"key": "joined_on", "label": "Joined on", "type": "date"},
    {"key": "milk", "label": "Milk", "type": "enum", "options": ["whole", "oat", "none"]},
    {"key": "newsletter", "label": "Newsletter", "type": "bool"},
]
VALUES = {"nickname": "Lei", "cups_per_week": 3, "joined_on": "2024-02-29", "milk": "oat", "newsletter": False}


async def _define(client, admin, **field) -> dict:
    response = await client.post("/api/member-fields", json=field, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
async def fields(client, admin) -> list[dict]:
    return [await _define(client, admin, **field) for field in FIELDS]


async def test_new_member_round_trips_and_starts_at_zero(client, admin, demo):
    created = await add_member(
        client,
        admin,
        store_id=demo.store.id,
        phone="13800000001",
        name="Han Meimei",
        gender="female",
        birthday="1990-05-04",
        openid="o-abc",
    )
    assert created["points"] == 0
    assert created["balance"] == 0
    assert created["store_id"] == demo.store.id
    assert (created["phone"], created["name"], created["gender"]) == ("13800000001", "Han Meimei", "female")
    assert created["birthday"] == "1990-05-04"
    assert created["openid"] == "o-abc"
    assert created["custom_fields"] == {}
    assert created["id_card_no_masked"] is None

    read = await client.get(f"/api/members/{created['id']}", headers=admin)
    assert read.status_code == 200
    assert read.json() == {**created, "packages": []}  # the read adds the active packages


async def test_update_changes_only_the_given_fields(client, admin):
    member = await add_member(client, admin, phone="13800000001", name="Old Name", gender="male")
    response = await client.patch(f"/api/members/{member['id']}", json={"name": "New Name"}, headers=admin)
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "New Name"
    assert (updated["phone"], updated["gender"]) == ("13800000001", "male")
    assert (await client.get(f"/api/members/{member['id']}", headers=admin)).json()["name"] == "New Name"


async def test_search_by_phone_name_and_openid(client, admin):
    first = await add_member(client, admin, phone="13800000001", name="Zhang San", openid="o-1")
    second = await add_member(client, admin, phone="13800000002", name="Zhang Si")
    third = await add_member(client, admin, phone="13800000003", name="Wang Wu")

    everyone = (await client.get("/api/members/", headers=admin)).json()
    assert everyone["total"] == 3
    assert [m["id"] for m in everyone["items"]] == [third["id"], second["id"], first["id"]]
    by_phone = (await client.get("/api/members/", params={"phone": "13800000002"}, headers=admin)).json()
    assert (by_phone["total"], [m["id"] for m in by_phone["items"]]) == (1, [second["id"]])
    by_name = (await client.get("/api/members/", params={"name": "zhang"}, headers=admin)).json()
    assert {m["id"] for m in by_name["items"]} == {first["id"], second["id"]}
    by_openid = (await client.get("/api/members/", params={"openid": "o-1"}, headers=admin)).json()
    assert [m["id"] for m in by_openid["items"]] == [first["id"]]
    page = (await client.get("/api/members/", params={"limit": 2, "offset": 2}, headers=admin)).json()
    assert (page["total"], [m["id"] for m in page["items"]]) == (3, [first["id"]])


async def test_bad_search_query_is_422_with_field(client, admin):
    response = await client.get("/api/members/", params={"limit": 0}, headers=admin)
    assert response.status_code == 422
    assert error_of(response)["field"] == "limit"


async def test_unknown_member_is_404(client, admin):
    response = await client.get("/api/members/999999", headers=admin)
    assert response.status_code == 404
    assert error_of(response)["code"] == "member.not_found"


async def test_custom_fields_of_every_type_are_stored_and_returned(client, admin, fields):
    listed = (await client.get("/api/member-fields", headers=admin)).json()["items"]
    assert [(f["key"], f["type"]) for f in listed] == [(f["key"], f["type"]) for f in FIELDS]
    assert listed[3]["options"] == ["whole", "oat", "none"]

    member = await add_member(client, admin, custom_fields=VALUES)
    assert member["custom_fields"] == VALUES
    read = (await client.get(f"/api/members/{member['id']}", headers=admin)).json()
    assert read["custom_fields"] == VALUES
    assert (await Member.get(id=member["id"])).custom_fields == VALUES


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("nickname", 12),
        ("nickname", "x" * 256),
        ("cups_per_week", "3"),
        ("cups_per_week", 2.5),
        ("cups_per_week", True),
        ("joined_on", "2023-02-29"),
        ("joined_on", 20240229),
        ("milk", "soy"),
        ("milk", ["oat"]),
        ("newsletter", "false"),
        ("newsletter", 0),
    ],
)
async def test_wrong_custom_field_type_is_422_with_field(client, admin, fields, key, value):
    before = await member_total(client, admin)
    response = await client.post("/api/members/", json={"custom_fields": {key: value}}, headers=admin)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "custom_field.value_invalid"
    assert error["field"] == f"custom_fields.{key}"
    assert await member_total(client, admin) == before


async def test_unknown_custom_field_is_422(client, admin, fields):
    response = await client.post("/api/members/", json={"custom_fields": {"shoe_size": 42}}, headers=admin)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "custom_field.unknown"
    assert error["field"] == "custom_fields.shoe_size"
    assert await member_total(client, admin) == 0


async def test_required_custom_field_missing_is_422_and_writes_nothing(client, admin):
    await _define(client, admin, key="city", label="City", type="string", required=True)
    before = await member_total(client, admin)
    for body in ({"phone": "13800000001"}, {"phone": "13800000001", "custom_fields": {"city": ""}}):
        response = await client.post("/api/members/", json=body, headers=admin)
        assert response.status_code == 422, response.text
        error = error_of(response)
        assert error["code"] == "custom_field.required"
        assert error["field"] == "custom_fields.city"
    assert await member_total(client, admin) == before == 0
    assert await Member.filter(phone="13800000001").count() == 0

    ok = await add_member(client, admin, phone="13800000001", custom_fields={"city": "Hangzhou"})
    assert ok["custom_fields"] == {"city": "Hangzhou"}


async def test_patch_merges_custom_fields_and_null_removes(client, admin, fields):
    member = await add_member(client, admin, custom_fields={"nickname": "Lei", "milk": "oat"})
    merged = await client.patch(
        f"/api/members/{member['id']}", json={"custom_fields": {"newsletter": True, "milk": "whole"}}, headers=admin
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["custom_fields"] == {"nickname": "Lei", "milk": "whole", "newsletter": True}

    removed = await client.patch(
        f"/api/members/{member['id']}", json={"custom_fields": {"nickname": None}}, headers=admin
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["custom_fields"] == {"milk": "whole", "newsletter": True}
    assert (await Member.get(id=member["id"])).custom_fields == {"milk": "whole", "newsletter": True}


async def test_patch_cannot_remove_a_required_field_or_set_a_wrong_type(client, admin):
    await _define(client, admin, key="city", label="City", type="string", required=True)
    await _define(client, admin, key="cups", label="Cups", type="int")
    member = await add_member(client, admin, custom_fields={"city": "Hangzhou"})
    removed = await client.patch(f"/api/members/{member['id']}", json={"custom_fields": {"city": None}}, headers=admin)
    assert removed.status_code == 422
    assert error_of(removed)["code"] == "custom_field.required"
    wrong = await client.patch(f"/api/members/{member['id']}", json={"custom_fields": {"cups": "two"}}, headers=admin)
    assert wrong.status_code == 422
    assert error_of(wrong)["field"] == "custom_fields.cups"
    assert (await Member.get(id=member["id"])).custom_fields == {"city": "Hangzhou"}


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ({"key": "Bad-Key", "label": "x", "type": "string"}, "custom_field.key_invalid"),
        ({"key": "milk", "label": "Milk", "type": "enum"}, "custom_field.options_invalid"),
        ({"key": "milk", "label": "Milk", "type": "enum", "options": ["a", "a"]}, "custom_field.options_invalid"),
        ({"key": "age", "label": "Age", "type": "int", "options": ["1"]}, "custom_field.options_invalid"),
        ({"key": "age", "label": "Age", "type": "float"}, "validation.failed"),
    ],
)
async def test_invalid_field_definition_is_422(client, admin, field, code):
    response = await client.post("/api/member-fields", json=field, headers=admin)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == code
    assert (await client.get("/api/member-fields", headers=admin)).json()["items"] == []


async def test_duplicate_field_key_is_409(client, admin):
    await _define(client, admin, key="city", label="City", type="string")
    response = await client.post(
        "/api/member-fields", json={"key": "city", "label": "Town", "type": "string"}, headers=admin
    )
    assert response.status_code == 409
    assert error_of(response)["code"] == "custom_field.key_taken"


async def test_duplicate_phone_is_409_naming_the_existing_member(client, admin):
    existing = await add_member(client, admin, phone="13800000001")
    before = await member_total(client, admin)
    response = await client.post("/api/members/", json={"phone": "13800000001", "name": "Copy"}, headers=admin)
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "member.phone_taken"
    assert error["member_id"] == existing["id"]
    assert await member_total(client, admin) == before == 1


async def test_patch_to_a_taken_phone_is_409(client, admin):
    existing = await add_member(client, admin, phone="13800000001")
    other = await add_member(client, admin, phone="13800000002")
    response = await client.patch(f"/api/members/{other['id']}", json={"phone": "13800000001"}, headers=admin)
    assert response.status_code == 409
    assert error_of(response)["code"] == "member.phone_taken"
    assert error_of(response)["member_id"] == existing["id"]
    assert (await client.get(f"/api/members/{other['id']}", headers=admin)).json()["phone"] == "13800000002"


async def test_invalid_profile_values_are_422_with_field(client, admin):
    for body, field in (
        ({"phone": "12ab"}, "phone"),
        ({"id_card_no": "123"}, "id_card_no"),
        ({"gender": "other"}, "gender"),
        ({"birthday": "2999-01-01"}, "birthday"),
    ):
        response = await client.post("/api/members/", json=body, headers=admin)
        assert response.status_code == 422, (body, response.text)
        assert error_of(response)["field"] == field, body
    assert await member_total(client, admin) == 0


async def test_id_card_is_sealed_masked_and_searchable(client, admin):
    member = await add_member(client, admin, id_card_no=ID_CARD.lower())
    assert member["id_card_no_masked"] == "110***********002X"
    assert "id_card_no" not in member
    assert ID_CARD not in str(member).upper()

    row = await Member.get(id=member["id"])
    stored = " ".join(str(value) for value in row.__dict__.values()).upper()
    assert ID_CARD not in stored
    assert ID_CARD[:-1] not in stored
    assert row.id_card_enc is not None and row.id_card_enc.startswith("v1:")
    assert row.id_card_index is not None and len(row.id_card_index) == 64
    assert ID_CARD not in row.id_card_index.upper()

    for query in (ID_CARD, ID_CARD.lower()):
        found = (await client.get("/api/members/", params={"id_card_no": query}, headers=admin)).json()
        assert (found["total"], [m["id"] for m in found["items"]]) == (1, [member["id"]])
    other = (await client.get("/api/members/", params={"id_card_no": "110105194912310011"}, headers=admin)).json()
    assert other["total"] == 0


async def test_duplicate_id_card_is_409(client, admin):
    existing = await add_member(client, admin, id_card_no=ID_CARD)
    response = await client.post("/api/members/", json={"id_card_no": ID_CARD.lower()}, headers=admin)
    assert response.status_code == 409
    assert error_of(response)["code"] == "member.id_card_taken"
    assert error_of(response)["member_id"] == existing["id"]


async def test_patch_id_card_replaces_and_null_clears_it(client, admin):
    member = await add_member(client, admin, id_card_no=ID_CARD)
    replaced = await client.patch(
        f"/api/members/{member['id']}", json={"id_card_no": "110105194912310011"}, headers=admin
    )
    assert replaced.json()["id_card_no_masked"] == "110***********0011"
    gone = (await client.get("/api/members/", params={"id_card_no": ID_CARD}, headers=admin)).json()
    assert gone["total"] == 0
    cleared = await client.patch(f"/api/members/{member['id']}", json={"id_card_no": None}, headers=admin)
    assert cleared.json()["id_card_no_masked"] is None
    row = await Member.get(id=member["id"])
    assert (row.id_card_enc, row.id_card_index) == (None, None)


@pytest.mark.parametrize("key", ["name", "gender"])
async def test_patch_null_into_a_non_nullable_field_is_422(client, admin, key):
    member = await add_member(client, admin, phone="13800000001", gender="male")
    response = await client.patch(f"/api/members/{member['id']}", json={key: None}, headers=admin)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "member.value_required"
    assert error_of(response)["field"] == key
    row = await Member.get(id=member["id"])
    assert (row.name, row.gender) == ("Li Lei", "male")


async def test_patch_null_clears_nullable_profile_fields(client, admin):
    member = await add_member(client, admin, phone="13800000001", birthday="1990-05-04")
    response = await client.patch(f"/api/members/{member['id']}", json={"phone": None, "birthday": None}, headers=admin)
    assert response.status_code == 200, response.text
    assert (response.json()["phone"], response.json()["birthday"]) == (None, None)
