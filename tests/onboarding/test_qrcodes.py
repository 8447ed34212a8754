"""Store and staff QR codes through the API and the emulator; onboarding settings."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import login
from tests.helpers import STAFF_PASSWORD, add_store, error_of

EMU = "/_emulator"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


async def add_staff_member(
    client: httpx.AsyncClient, headers: dict[str, str], *, username: str, role: str, store_id: int | None
) -> tuple[int, dict[str, str]]:
    """Create a staff login; return its id and auth headers."""
    body = {"username": username, "password": STAFF_PASSWORD, "role": role, "store_id": store_id}
    response = await client.post("/api/staff", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"], await login(client, username, STAFF_PASSWORD)


async def create_code(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> dict:
    response = await client.post("/api/qrcodes", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def emulator_calls(client: httpx.AsyncClient, path: str) -> list[dict]:
    response = await client.get(f"{EMU}/control/calls", params={"path": path})
    assert response.status_code == 200, response.text
    return response.json()["calls"]


async def test_oa_store_code_is_created_once_through_qrcode_create(client, admin, demo):
    created = await client.post("/api/qrcodes", json={"kind": "oa", "store_id": demo.store.id}, headers=admin)
    assert created.status_code == 201, created.text
    code = created.json()
    assert code["kind"] == "oa"
    assert code["scene"] == "store:S001"
    assert code["store_id"] == demo.store.id
    assert code["staff_id"] is None
    assert code["is_active"] is True
    assert code["scan_count"] == 0
    assert code["ticket"]
    assert code["url"].startswith("http://weixin.qq.com/q/")
    assert code["image_url"] == f"/api/qrcodes/{code['id']}/image"
    calls = await emulator_calls(client, "/cgi-bin/qrcode/create")
    assert [c["body"] for c in calls] == [
        {"action_name": "QR_LIMIT_STR_SCENE", "action_info": {"scene": {"scene_str": "store:S001"}}}
    ]
    again = await client.post(
        "/api/qrcodes", json={"kind": "oa", "store_id": demo.store.id, "label": "other"}, headers=admin
    )
    assert again.status_code == 200, again.text
    assert again.json() == code
    assert len(await emulator_calls(client, "/cgi-bin/qrcode/create")) == 1


async def test_concurrent_creates_of_one_code_end_in_one_row(client, admin, demo):
    responses = await asyncio.gather(
        *(client.post("/api/qrcodes", json={"kind": "oa", "store_id": demo.store.id}, headers=admin) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 201], [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = (await client.get("/api/qrcodes", headers=admin)).json()
    assert listed["total"] == 1


async def test_mp_code_stores_the_png_wechat_returns(client, admin, demo):
    code = await create_code(client, admin, kind="mp", store_id=demo.store.id, label="counter")
    assert code["kind"] == "mp"
    assert code["scene"] == "store:S001"
    assert code["label"] == "counter"
    assert code["ticket"] == "" and code["url"] == ""
    calls = await emulator_calls(client, "/wxa/getwxacodeunlimit")
    assert [c["body"] for c in calls] == [{"scene": "store:S001", "page": "pages/index/index", "check_path": False}]
    png = await client.get(f"/api/qrcodes/{code['id']}/image", headers=admin)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_MAGIC)
    svg = await client.get(f"/api/qrcodes/{code['id']}/image", params={"format": "svg"}, headers=admin)
    assert svg.status_code == 422
    assert error_of(svg)["code"] == "qrcode.format_unavailable"
    # the same scene may have an oa and an mp code side by side
    oa = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    assert oa["id"] != code["id"]


async def test_mp_scene_longer_than_32_characters_is_refused_before_wechat(client, admin):
    store_id = await add_store(client, admin, code="A-VERY-LONG-STORE-CODE-OF-30-CH")
    response = await client.post("/api/qrcodes", json={"kind": "mp", "store_id": store_id}, headers=admin)
    assert response.status_code == 422
    assert error_of(response)["code"] == "qrcode.scene_invalid"
    assert await emulator_calls(client, "/wxa/getwxacodeunlimit") == []
    oa = await create_code(client, admin, kind="oa", store_id=store_id)  # QR_LIMIT_STR_SCENE allows 64
    assert oa["scene"] == "store:A-VERY-LONG-STORE-CODE-OF-30-CH"


async def test_staff_code_names_the_staff_member_and_their_store(client, admin, demo):
    staff_id, _ = await add_staff_member(client, admin, username="clerk1", role="cashier", store_id=demo.store.id)
    code = await create_code(client, admin, kind="oa", staff_id=staff_id)
    assert code["scene"] == f"staff:{staff_id}"
    assert code["staff_id"] == staff_id
    assert code["store_id"] == demo.store.id
    calls = await emulator_calls(client, "/cgi-bin/qrcode/create")
    assert calls[-1]["body"]["action_info"]["scene"]["scene_str"] == f"staff:{staff_id}"


async def test_images_render_locally_as_png_and_svg_even_when_disabled(client, admin, demo):
    code = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    disabled = await client.post(f"/api/qrcodes/{code['id']}/disable", headers=admin)
    assert disabled.status_code == 200
    assert disabled.json()["is_active"] is False
    png = await client.get(f"/api/qrcodes/{code['id']}/image", headers=admin)
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(PNG_MAGIC)
    width = int.from_bytes(png.content[16:20], "big")
    assert width % 8 == 0 and width >= 8 * 29  # scale 8, version >= 3 with a border
    svg = await client.get(f"/api/qrcodes/{code['id']}/image", params={"format": "svg"}, headers=admin)
    assert svg.status_code == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text
    bad = await client.get(f"/api/qrcodes/{code['id']}/image", params={"format": "gif"}, headers=admin)
    assert bad.status_code == 422
    missing = await client.get("/api/qrcodes/999999/image", headers=admin)
    assert missing.status_code == 404


async def test_list_shows_scan_counts_and_store_roles_see_their_store_only(client, admin, demo):
    other_store = await add_store(client, admin, code="S002")
    ours = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    theirs = await create_code(client, admin, kind="oa", store_id=other_store)
    fired = await client.post(f"{EMU}/control/scan", json={"store": "S001", "openid": "o_list_1"})
    assert fired.json()["deliveries"][0]["status"] == 200
    listed = (await client.get("/api/qrcodes", headers=admin)).json()
    assert listed["total"] == 2
    assert [(c["id"], c["scan_count"]) for c in listed["items"]] == [(theirs["id"], 0), (ours["id"], 1)]
    _, manager = await add_staff_member(client, admin, username="mgr_b", role="store_manager", store_id=other_store)
    scoped = (await client.get("/api/qrcodes", headers=manager)).json()
    assert [c["id"] for c in scoped["items"]] == [theirs["id"]]
    hidden = await client.get(f"/api/qrcodes/{ours['id']}/image", headers=manager)
    assert hidden.status_code == 404
    only_mp = (await client.get("/api/qrcodes", params={"kind": "mp"}, headers=admin)).json()
    assert only_mp == {"total": 0, "items": []}


async def test_roles_for_creating_and_disabling(client, admin, demo):
    store_b = await add_store(client, admin, code="S002")
    _, cashier = await add_staff_member(client, admin, username="cash_a", role="cashier", store_id=demo.store.id)
    _, manager_a = await add_staff_member(client, admin, username="mgr_a", role="store_manager", store_id=demo.store.id)
    staff_b, _ = await add_staff_member(client, admin, username="cash_b", role="cashier", store_id=store_b)
    denied = await client.post("/api/qrcodes", json={"kind": "oa", "store_id": demo.store.id}, headers=cashier)
    assert denied.status_code == 403
    for body in ({"kind": "oa", "store_id": store_b}, {"kind": "oa", "staff_id": staff_b}):
        other = await client.post("/api/qrcodes", json=body, headers=manager_a)
        assert other.status_code == 404, other.text
        assert error_of(other)["code"] == "qrcode.target_not_found"
    assert await emulator_calls(client, "/cgi-bin/qrcode/create") == []
    own = await create_code(client, manager_a, kind="oa", store_id=demo.store.id)
    assert own["store_id"] == demo.store.id
    assert (await client.post(f"/api/qrcodes/{own['id']}/disable", headers=cashier)).status_code == 403
    b_code = await create_code(client, admin, kind="oa", store_id=store_b)
    assert (await client.post(f"/api/qrcodes/{b_code['id']}/disable", headers=manager_a)).status_code == 404
    assert (await client.post(f"/api/qrcodes/{own['id']}/disable", headers=manager_a)).status_code == 200
    listed = (await client.get("/api/qrcodes", headers=cashier)).json()
    assert [(c["id"], c["is_active"]) for c in listed["items"]] == [(own["id"], False)]


async def test_bad_requests_write_nothing(client, admin, demo):
    cases = [
        ({"kind": "oa"}, 422),
        ({"kind": "oa", "store_id": demo.store.id, "staff_id": 1}, 422),
        ({"kind": "card", "store_id": demo.store.id}, 422),
        ({"kind": "oa", "store_id": 999999}, 404),
        ({"kind": "oa", "staff_id": 999999}, 404),
        ({"kind": "oa", "store_id": 2**40}, 422),
        ({"kind": "oa", "store_id": demo.store.id, "label": "x" * 65}, 422),
    ]
    for body, status in cases:
        response = await client.post("/api/qrcodes", json=body, headers=admin)
        assert response.status_code == status, (body, response.text)
        error_of(response)
    fail = await client.post(
        f"{EMU}/control/fail-next", json={"path": "/cgi-bin/qrcode/create", "errcode": 40053, "times": 1}
    )
    assert fail.status_code == 200
    refused = await client.post("/api/qrcodes", json={"kind": "oa", "store_id": demo.store.id}, headers=admin)
    assert refused.status_code == 502
    assert error_of(refused)["code"] == "wechat.api_error"
    assert (await client.get("/api/qrcodes", headers=admin)).json()["total"] == 0
    assert (await client.post("/api/qrcodes/999999/disable", headers=admin)).status_code == 404


async def test_onboarding_settings_defaults_update_and_validation(client, admin, demo):
    defaults = await client.get("/api/onboarding-settings", headers=admin)
    assert defaults.status_code == 200
    assert defaults.json() == {
        "welcome_points": 0,
        "welcome_balance": 0,
        "referrer_points": 50,
        "referee_points": 50,
        "welcome_text": "欢迎加入！点击领取会员卡。",
        "tier_name": "普通会员",
        "welcome_coupon_template_ids": [],
    }
    changed = await client.put(
        "/api/onboarding-settings", json={"welcome_points": 100, "welcome_balance": 500}, headers=admin
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["welcome_points"] == 100
    assert changed.json()["welcome_balance"] == 500
    assert changed.json()["referrer_points"] == 50
    again = await client.put("/api/onboarding-settings", json={"welcome_text": "你好"}, headers=admin)
    assert again.json()["welcome_points"] == 100
    assert again.json()["welcome_text"] == "你好"
    _, cashier = await add_staff_member(client, admin, username="cash_s", role="cashier", store_id=demo.store.id)
    _, manager = await add_staff_member(client, admin, username="mgr_s", role="store_manager", store_id=demo.store.id)
    read = await client.get("/api/onboarding-settings", headers=cashier)
    assert read.status_code == 200 and read.json()["welcome_text"] == "你好"
    for headers in (cashier, manager):
        assert (
            await client.put("/api/onboarding-settings", json={"welcome_points": 1}, headers=headers)
        ).status_code == 403
    for body in (
        {"welcome_points": -1},
        {"welcome_balance": 1.5},
        {"referrer_points": "10"},
        {"referee_points": 10_000_001},
        {"welcome_text": "x" * 601},
        {"tier_name": ""},
        {"unknown": 1},
    ):
        bad = await client.put("/api/onboarding-settings", json=body, headers=admin)
        assert bad.status_code == 422, (body, bad.text)
    final = (await client.get("/api/onboarding-settings", headers=admin)).json()
    assert (final["welcome_points"], final["welcome_balance"], final["welcome_text"]) == (100, 500, "你好")


async def test_concurrent_first_settings_changes_end_in_one_row(client, admin):
    from models.tenancy.onboarding_settings import OnboardingSettings

    responses = await asyncio.gather(
        *(
            client.put("/api/onboarding-settings", json={"referrer_points": points}, headers=admin)
            for points in (10, 20, 30)
        )
    )
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert await OnboardingSettings.all().count() == 1
    final = (await client.get("/api/onboarding-settings", headers=admin)).json()
    assert final["referrer_points"] in (10, 20, 30)


async def test_a_quota_error_from_wechat_says_so_with_its_errcode_and_writes_nothing(client, admin, demo):
    listed = await client.get("/api/qrcodes", headers=admin)
    before = listed.json()["total"]
    await client.post(f"{EMU}/control/fail-next", json={"path": "/cgi-bin/qrcode/create", "errcode": 45009})
    response = await client.post("/api/qrcodes", json={"kind": "oa", "store_id": demo.store.id}, headers=admin)
    error = error_of(response)
    assert (response.status_code, error["code"], error["errcode"]) == (503, "wechat.quota_exceeded", 45009)
    assert "quota" in error["message"] and error["errmsg"]
    assert (await client.get("/api/qrcodes", headers=admin)).json()["total"] == before
    refused_calls = await emulator_calls(client, "/cgi-bin/qrcode/create")
    assert len(refused_calls) == 1  # a daily quota is not retried
