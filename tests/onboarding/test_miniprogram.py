"""Mini-program: login and unionid merge, phone binding, self-service, dynamic member QR, referral code."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta

from models.kernel.cipher import cipher
from models.kernel.config_cache import config_change
from models.members.member_card import MemberCard
from models.members.members import Member, register_wechat_member
from models.members.timeline import MemberActivity
from models.tenancy.onboarding_settings import OnboardingSettings
from tests.helpers import add_member, add_staff, add_store, error_of

EMU = "/_emulator"


def emulator(app):
    return app.blueprints["wechat_emulator"].ctx.state


async def mp_code(client, openid: str, unionid: str | None = None) -> str:
    body = {"openid": openid} | ({"unionid": unionid} if unionid else {})
    response = await client.post(f"{EMU}/control/mp-code", json=body)
    assert response.status_code == 200, response.text
    return response.json()["code"]


async def mp_login(client, openid: str, unionid: str | None = None, **extra) -> dict:
    response = await client.post("/api/mp/login", json={"code": await mp_code(client, openid, unionid), **extra})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(login: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {login['access_token']}"}


def assert_no_session_key(app, openid: str, *responses) -> None:
    session_key = emulator(app).sessions[(app.ctx.settings.wechat.miniprogram.appid, openid)]
    for response in responses:
        assert session_key not in response.text
        assert "session_key" not in response.text


async def test_login_registers_once_then_recognises_the_member(client, app, demo):
    first = await client.post("/api/mp/login", json={"code": await mp_code(client, "mp_a")})
    assert first.status_code == 200, first.text
    body = first.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "member_id", "is_new"}
    assert (body["is_new"], body["expires_in"]) == (True, app.ctx.settings.security.member_token_ttl)
    member = await Member.get(id=body["member_id"])
    assert (member.source, member.mp_openid, member.openid, member.unionid) == ("mp", "mp_a", None, None)
    assert member.merchant_id == demo.merchant.id
    session_key = emulator(app).sessions[(app.ctx.settings.wechat.miniprogram.appid, "mp_a")]
    assert cipher().decrypt(member.mp_session_key_enc, context=f"mp_session:{member.id}") == session_key

    second = await client.post("/api/mp/login", json={"code": await mp_code(client, "mp_a")})
    assert (second.json()["member_id"], second.json()["is_new"]) == (member.id, False)
    me = await client.get("/api/mp/me", headers=bearer(second.json()))
    assert me.json()["member_id"] == member.id
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 1
    calls = (await client.get(f"{EMU}/control/calls", params={"path": "/sns/jscode2session"})).json()["calls"]
    assert len(calls) == 2
    assert_no_session_key(app, "mp_a", second, me)


async def test_bad_reused_and_unknown_codes_are_refused(client, app):
    bad = await client.post("/api/mp/login", json={"code": "not-a-code"})
    assert (bad.status_code, error_of(bad)["code"]) == (401, "mp.code_invalid")
    code = await mp_code(client, "mp_reuse")
    assert (await client.post("/api/mp/login", json={"code": code})).status_code == 200
    reused = await client.post("/api/mp/login", json={"code": code})
    assert (reused.status_code, error_of(reused)["code"]) == (401, "mp.code_invalid")
    unknown = await client.post("/api/mp/login", json={"code": code, "appid": "wx_nobody"})
    assert (unknown.status_code, error_of(unknown)["code"]) == (404, "mp.app_not_found")
    assert await Member.filter(mp_openid="mp_reuse").count() == 1


async def test_referral_code_and_store_count_for_a_new_member_only(client, demo):
    referrer = await mp_login(client, "mp_ref")
    code = (await client.get("/api/mp/me", headers=bearer(referrer))).json()["referral_code"]
    assert len(code) == 8
    existing = await mp_login(client, "mp_old")
    referee = await mp_login(client, "mp_new", referral_code=code.lower(), store_code=demo.store.code)
    again = await mp_login(client, "mp_old", referral_code=code, store_code=demo.store.code)
    stray = await mp_login(client, "mp_stray", referral_code="NOSUCH00", store_code="NOSUCH")
    assert (referee["is_new"], again["is_new"], stray["is_new"]) == (True, False, True)
    rows = {m.mp_openid: m for m in await Member.filter(merchant_id=demo.merchant.id)}
    assert rows["mp_new"].referrer_id == referrer["member_id"]
    assert rows["mp_new"].origin_store_id == demo.store.id
    assert (rows["mp_old"].id, rows["mp_old"].referrer_id, rows["mp_old"].origin_store_id) == (
        existing["member_id"],
        None,
        None,
    )
    assert (rows["mp_stray"].referrer_id, rows["mp_stray"].origin_store_id) == (None, None)
    me = (await client.get("/api/mp/me", headers=bearer(referee))).json()
    assert me["store"] == {"id": demo.store.id, "code": demo.store.code, "name": demo.store.name}


async def test_official_account_member_and_mini_program_login_are_one_member(client, demo):
    oa_member, created = await register_wechat_member(
        merchant_id=demo.merchant.id, openid="oa_x", unionid="u1", source="oa_qr"
    )
    assert created
    login = await mp_login(client, "mp_x", "u1")
    assert (login["member_id"], login["is_new"]) == (oa_member.id, False)
    member = await Member.get(id=oa_member.id)
    assert (member.openid, member.mp_openid, member.unionid, member.source) == ("oa_x", "mp_x", "u1", "oa_qr")
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 1


async def test_concurrent_first_logins_make_one_member(client, demo):
    codes = [await mp_code(client, "mp_rush", "u_rush") for _ in range(5)]
    responses = await asyncio.gather(*(client.post("/api/mp/login", json={"code": c}) for c in codes))
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert len({r.json()["member_id"] for r in responses}) == 1
    assert sorted(r.json()["is_new"] for r in responses) == [False] * 4 + [True]
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 1
    member_id = responses[0].json()["member_id"]
    assert await MemberActivity.filter(member_id=member_id, kind="registered").count() == 1


async def test_phone_binding_with_a_code(client, app):
    login = await mp_login(client, "mp_phone")
    code = (await client.post(f"{EMU}/control/phone-code", json={"phone": "13800000001"})).json()["code"]
    bound = await client.post("/api/mp/me/phone", json={"code": code}, headers=bearer(login))
    assert bound.status_code == 200, bound.text
    assert bound.json()["phone"] == "138****0001"
    assert (await Member.get(id=login["member_id"])).phone == "13800000001"
    calls = (await client.get(f"{EMU}/control/calls", params={"path": "/wxa/business"})).json()["calls"]
    assert [c["body"] for c in calls] == [{"code": code}]
    reused = await client.post("/api/mp/me/phone", json={"code": code}, headers=bearer(login))
    assert (reused.status_code, error_of(reused)["code"]) == (422, "mp.phone_code_invalid")
    activity = await MemberActivity.filter(member_id=login["member_id"], kind="phone_bound")
    assert [(a.actor, a.detail) for a in activity] == [("member", {"method": "code", "phone": "138****0001"})]
    assert_no_session_key(app, "mp_phone", bound, reused)


async def test_phone_binding_with_legacy_encrypted_data(client, app, pinned):
    login = await mp_login(client, "mp_legacy")
    headers = bearer(login)

    async def encrypted(**extra) -> dict:
        body = {"openid": "mp_legacy", "phone": "13800000002", **extra}
        response = await client.post(f"{EMU}/control/phone-encrypt", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    foreign = await client.post("/api/mp/me/phone", json=await encrypted(watermark_appid="wx_other"), headers=headers)
    assert (foreign.status_code, error_of(foreign)["code"]) == (422, "mp.encrypted_data_invalid")
    stale_at = int((pinned[0] - timedelta(hours=24, seconds=5)).timestamp())
    stale = await client.post("/api/mp/me/phone", json=await encrypted(timestamp=stale_at), headers=headers)
    assert (stale.status_code, error_of(stale)["code"]) == (422, "mp.encrypted_data_stale")
    both = await client.post("/api/mp/me/phone", json={"code": "x", **await encrypted()}, headers=headers)
    assert (both.status_code, error_of(both)["code"]) == (422, "validation.failed")
    assert (await Member.get(id=login["member_id"])).phone is None

    payload = await encrypted()
    bound = await client.post("/api/mp/me/phone", json=payload, headers=headers)
    assert (bound.status_code, bound.json()["phone"]) == (200, "138****0002"), bound.text
    assert (await Member.get(id=login["member_id"])).phone == "13800000002"
    assert_no_session_key(app, "mp_legacy", foreign, stale, bound)
    await mp_login(client, "mp_legacy")  # a new login replaces the session_key: old payloads no longer decrypt
    old = await client.post("/api/mp/me/phone", json=payload, headers=headers)
    assert (old.status_code, error_of(old)["code"]) == (422, "mp.encrypted_data_invalid")


async def test_a_phone_of_another_member_is_409_with_its_id(client, admin):
    holder = await add_member(client, admin, phone="13900000009")
    login = await mp_login(client, "mp_taken")
    code = (await client.post(f"{EMU}/control/phone-code", json={"phone": "13900000009"})).json()["code"]
    taken = await client.post("/api/mp/me/phone", json={"code": code}, headers=bearer(login))
    assert taken.status_code == 409, taken.text
    error = error_of(taken)
    assert (error["code"], error["member_id"]) == ("member.phone_taken", holder["id"])
    assert (await Member.get(id=login["member_id"])).phone is None
    assert await MemberActivity.filter(member_id=login["member_id"], kind="phone_bound").count() == 0


async def test_self_service_profile_card_and_balances(client, admin, demo):
    login = await mp_login(client, "mp_self", store_code=demo.store.code)
    headers, member_id = bearer(login), login["member_id"]
    me = await client.get("/api/mp/me", headers=headers)
    member = await Member.get(id=member_id)
    assert me.json() == {
        "member_id": member_id,
        "member_no": None,
        "name": "",
        "gender": "unknown",
        "birthday": None,
        "phone": None,
        "custom_fields": {},
        "points": 0,
        "balance": 0,
        "tier_name": "普通会员",
        "referral_code": member.referral_code,
        "activated": False,
        "store": {"id": demo.store.id, "code": demo.store.code, "name": demo.store.name},
    }
    patch = {"name": "韩梅梅", "gender": "female", "birthday": "1990-05-04"}
    changed = await client.patch("/api/mp/me", json=patch, headers=headers)
    assert changed.status_code == 200, changed.text
    assert {k: changed.json()[k] for k in patch} == patch
    phone = await client.patch("/api/mp/me", json={"phone": "13800000003"}, headers=headers)
    assert (phone.status_code, error_of(phone)["field"]) == (422, "phone")
    activity = await MemberActivity.filter(member_id=member_id, kind="profile_changed")
    assert [(a.actor, a.detail) for a in activity] == [
        (
            "member",
            {
                "name": {"old": "", "new": "韩梅梅"},
                "gender": {"old": "unknown", "new": "female"},
                "birthday": {"old": None, "new": "1990-05-04"},
            },
        )
    ]

    for book, delta in (("points", 120), ("balance", 3550)):
        body = {"delta": delta, "reason": "test", "idempotency_key": f"mp-{book}"}
        assert (await client.post(f"/api/members/{member_id}/{book}", json=body, headers=admin)).status_code == 200
    async with config_change(merchant_id=demo.merchant.id):  # as a writer of configuration would
        await OnboardingSettings.create(merchant_id=demo.merchant.id, tier_name="金卡")
    missing = await client.get("/api/mp/me/card", headers=headers)
    assert (missing.status_code, error_of(missing)["code"]) == (404, "card.not_claimed")
    await MemberCard.create(merchant_id=demo.merchant.id, member_id=member_id, card_id="pCARD", code="123412341234")
    card = await client.get("/api/mp/me/card", headers=headers)
    assert card.json() == {
        "card_id": "pCARD",
        "code": "123412341234",
        "status": "claimed",
        "points": 120,
        "balance": 3550,
        "tier_name": "金卡",
    }


async def test_member_and_staff_tokens_stay_apart(client, admin):
    login = await mp_login(client, "mp_roles")
    staff_on_mp = await client.get("/api/mp/me", headers=admin)
    assert (staff_on_mp.status_code, error_of(staff_on_mp)["code"]) == (403, "auth.role_forbidden")
    for method, path in (("GET", "/api/members/"), ("GET", f"/api/members/{login['member_id']}")):
        denied = await client.request(method, path, headers=bearer(login))
        assert (denied.status_code, error_of(denied)["code"]) == (403, "auth.role_forbidden")
    resolve = await client.post("/api/members/resolve-qr", json={"token": "x"}, headers=bearer(login))
    assert resolve.status_code == 403
    assert (await client.get("/api/mp/me")).status_code == 401


async def test_member_qr_round_trip_expiry_forgery_and_store_scope(client, admin, demo, pinned):
    other_store = await add_store(client, admin, code="S900")
    own_cashier = await add_staff(client, admin, username="c_own", role="cashier", store_id=demo.store.id)
    other_cashier = await add_staff(client, admin, username="c_other", role="cashier", store_id=other_store)
    login = await mp_login(client, "mp_qr", store_code=demo.store.code)
    qr = await client.get("/api/mp/me/qr", headers=bearer(login))
    body = qr.json()
    assert (body["expires_in"], body["refresh_in"]) == (60, 50)
    token = body["token"]
    assert len(token) <= 64 and token.isalnum() and token.isupper()

    resolved = await client.post("/api/members/resolve-qr", json={"token": token}, headers=own_cashier)
    assert (resolved.status_code, resolved.json()["id"]) == (200, login["member_id"]), resolved.text
    assert (await client.post("/api/members/resolve-qr", json={"token": token}, headers=admin)).status_code == 200
    hidden = await client.post("/api/members/resolve-qr", json={"token": token}, headers=other_cashier)
    assert (hidden.status_code, error_of(hidden)["code"]) == (404, "member.not_found")

    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for forged in (flipped, token[:-2], "HYM" + "A" * (len(token) - 3), "garbage"):
        response = await client.post("/api/members/resolve-qr", json={"token": forged}, headers=admin)
        assert (response.status_code, error_of(response)["code"]) == (401, "member_qr.invalid")

    pinned[0] += timedelta(seconds=59)
    assert (await client.post("/api/members/resolve-qr", json={"token": token}, headers=admin)).status_code == 200
    pinned[0] += timedelta(seconds=2)
    expired = await client.post("/api/members/resolve-qr", json={"token": token}, headers=admin)
    assert (expired.status_code, error_of(expired)["code"]) == (401, "member_qr.invalid")
    fresh = (await client.get("/api/mp/me/qr", headers=bearer(login))).json()["token"]
    assert fresh != token
    assert (await client.post("/api/members/resolve-qr", json={"token": fresh}, headers=admin)).status_code == 200


async def test_referral_mini_program_code(client, app):
    login = await mp_login(client, "mp_share")
    referral = await client.get("/api/mp/me/referral", headers=bearer(login))
    assert referral.status_code == 200, referral.text
    body = referral.json()
    member = await Member.get(id=login["member_id"])
    assert body["referral_code"] == member.referral_code
    assert base64.b64decode(body["mp_code_png_base64"]).startswith(b"\x89PNG\r\n\x1a\n")
    calls = (await client.get(f"{EMU}/control/calls", params={"path": "/wxa/getwxacodeunlimit"})).json()["calls"]
    assert [c["body"]["scene"] for c in calls] == [f"ref:{member.referral_code}"]
    assert_no_session_key(app, "mp_share", referral)


async def test_wechat_failures_are_502_or_503_and_write_nothing(client, demo):
    code = await mp_code(client, "mp_busy")
    await client.post(f"{EMU}/control/fail-next", json={"path": "/sns/jscode2session", "errcode": -1})
    busy = await client.post("/api/mp/login", json={"code": code})
    assert (busy.status_code, error_of(busy)["code"]) == (503, "wechat.unavailable")
    await client.post(f"{EMU}/control/fail-next", json={"path": "/sns/jscode2session", "errcode": 40125})
    refused = await client.post("/api/mp/login", json={"code": code})
    refusal = error_of(refused)
    assert (refused.status_code, refusal["code"], refusal["errcode"]) == (502, "wechat.api_error", 40125)
    assert "jscode2session" in refusal["message"]
    assert await Member.filter(merchant_id=demo.merchant.id).count() == 0
    assert (await client.post("/api/mp/login", json={"code": code})).status_code == 200
