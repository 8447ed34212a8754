"""The member card: template, review events, claim QR codes, card events, code decryption and the card sync."""

from __future__ import annotations

import asyncio

from models.kernel.outbox import OutboxMessage
from models.members.member_card import MemberCard
from models.members.members import Member
from models.members.timeline import MemberActivity
from tests.cards.helpers import (
    EMU,
    MOBILE,
    NAME,
    SEX,
    TEMPLATE,
    activated_member,
    calls,
    claim,
    deliver,
    deliver_after_backoff,
    encrypt_code,
    oa_event,
    put_template,
    set_rewards,
)
from tests.helpers import add_staff, add_store, error_of

UPDATEUSER = "/card/membercard/updateuser"


async def test_template_creates_the_card_then_updates_it(client, admin, demo):
    field = {"key": "drink", "label": "喜欢的饮品", "type": "string"}
    assert (await client.post("/api/member-fields", json=field, headers=admin)).status_code == 201
    created = await put_template(client, admin, form={"required": [MOBILE, "drink"], "optional": [NAME]})
    assert created["status"] == "checking" and created["card_id"].startswith("p")
    assert created["form"] == {"required": [MOBILE, "drink"], "optional": [NAME]}
    [create] = [c["body"]["card"] for c in await calls(client, "/card/create")]
    assert create["card_type"] == "MEMBER_CARD"
    card = create["member_card"]
    assert card["base_info"] == {
        "brand_name": "汇元咖啡",
        "title": "汇元会员卡",
        "logo_url": "https://mmbiz.qpic.cn/mmbiz/logo.png",
        "color": "Color010",
        "notice": "结账时出示会员卡",
        "description": "积分可抵现，储值更优惠",
        "code_type": "CODE_TYPE_QRCODE",
        "date_info": {"type": "DATE_TYPE_PERMANENT"},
        "sku": {"quantity": 100_000_000},
        "get_limit": 1,
        "can_give_friend": False,
    }
    assert (card["supply_bonus"], card["supply_balance"], card["prerogative"]) == (True, True, "会员专享九折")
    rule = card["bonus_rule"]  # the engine's defaults: 1 point per 10 yuan, 10 points pay 1 yuan
    assert (rule["cost_money_unit"], rule["increase_bonus"], rule["cost_bonus_unit"], rule["reduce_money"]) == (
        1000,
        1,
        10,
        100,
    )
    assert card["custom_field1"] == {"name_type": "FIELD_NAME_TYPE_LEVEL"}
    assert card["custom_field2"] == {"name_type": "FIELD_NAME_TYPE_COUPON"}
    assert (card["wx_activate"], card["wx_activate_after_submit"]) == (True, True)
    assert card["wx_activate_after_submit_url"] == "https://huiyuan.test/mp/activate"
    [form] = [c["body"] for c in await calls(client, "/card/membercard/activateuserform/set")]
    assert form == {
        "card_id": created["card_id"],
        "required_form": {"common_field_id_list": [MOBILE], "custom_field_list": ["喜欢的饮品"]},
        "optional_form": {"common_field_id_list": [NAME], "custom_field_list": []},
    }

    cashier = await add_staff(client, admin, username="cashier1", role="cashier", store_id=demo.store.id)
    shown = await client.get("/api/card-template", headers=cashier)
    assert shown.status_code == 200 and shown.json()["card_id"] == created["card_id"]

    updated = await put_template(client, admin, title="汇元金卡", form={"required": [MOBILE], "optional": [SEX]})
    assert updated["card_id"] == created["card_id"] and updated["config"]["title"] == "汇元金卡"
    assert len(await calls(client, "/card/create")) == 1
    [update] = [c["body"] for c in await calls(client, "/card/update")]
    assert update["card_id"] == created["card_id"]
    assert update["member_card"]["base_info"]["title"] == "汇元金卡"
    assert "brand_name" not in update["member_card"]["base_info"] and "supply_bonus" not in update["member_card"]
    forms = [c["body"]["required_form"] for c in await calls(client, "/card/membercard/activateuserform/set")]
    assert forms[-1] == {"common_field_id_list": [MOBILE], "custom_field_list": []}


async def test_concurrent_first_saves_create_one_card_and_the_brand_stays(client, admin):
    answers = await asyncio.gather(*[client.put("/api/card-template", json=TEMPLATE, headers=admin) for _ in range(3)])
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.json()["card_id"] for a in answers}) == 1
    assert len(await calls(client, "/card/create")) == 1 and len(await calls(client, "/card/update")) == 2
    renamed = await client.put("/api/card-template", json={**TEMPLATE, "brand_name": "别的牌子"}, headers=admin)
    assert renamed.status_code == 422 and error_of(renamed)["code"] == "card.brand_fixed"


async def test_template_input_is_checked_before_wechat_is_called(client, admin, demo):
    cases = [
        ({"color": "Color999"}, "color"),
        ({"form": {"required": [MOBILE, "no_such_field"], "optional": []}}, "form.required.1"),
        ({"form": {"required": [MOBILE], "optional": [MOBILE]}}, "form.optional"),
        ({"logo_url": "not a url"}, "logo_url"),
    ]
    for change, field in cases:
        answer = await client.put("/api/card-template", json={**TEMPLATE, **change}, headers=admin)
        assert answer.status_code == 422, answer.text
        assert error_of(answer)["field"] == field
    manager = await add_staff(client, admin, username="mgr1", role="store_manager", store_id=demo.store.id)
    assert (await client.put("/api/card-template", json=TEMPLATE, headers=manager)).status_code == 403
    assert await calls(client, "/card/create") == []
    missing = await client.get("/api/card-template", headers=admin)
    assert missing.status_code == 404 and error_of(missing)["code"] == "card.template_missing"


async def test_review_events_approve_or_reject_the_card(client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    await oa_event(client, openid="o_sys", event="card_not_pass_check", card_id=card_id, extra={"RefuseReason": "logo"})
    shown = (await client.get("/api/card-template", headers=admin)).json()
    assert (shown["status"], shown["reject_reason"]) == ("rejected", "logo")
    await oa_event(client, openid="o_sys", event="card_pass_check", card_id="pNotOurs", create_time=1_800_000_000)
    assert (await client.get("/api/card-template", headers=admin)).json()["status"] == "rejected"
    await oa_event(client, openid="o_sys", event="card_pass_check", card_id=card_id, create_time=1_800_000_001)
    shown = (await client.get("/api/card-template", headers=admin)).json()
    assert (shown["status"], shown["reject_reason"]) == ("approved", "")


async def test_claim_qr_codes_one_per_store(client, admin, demo):
    none_yet = await client.post("/api/card-template/claim-qrcodes", json={}, headers=admin)
    assert none_yet.status_code == 404 and error_of(none_yet)["code"] == "card.template_missing"
    card_id = (await put_template(client, admin))["card_id"]
    first = await client.post("/api/card-template/claim-qrcodes", json={"store_id": demo.store.id}, headers=admin)
    assert first.status_code == 201, first.text
    code = first.json()
    assert (code["store_id"], code["outer_str"], code["card_id"]) == (demo.store.id, "S001", card_id)
    assert code["url"].endswith("/cgi-bin/showqrcode?ticket=" + code["ticket"].replace("=", "%3D"))
    again = await client.post("/api/card-template/claim-qrcodes", json={"store_id": demo.store.id}, headers=admin)
    assert again.status_code == 200 and again.json()["id"] == code["id"]
    general = await client.post("/api/card-template/claim-qrcodes", json={}, headers=admin)
    assert general.status_code == 201 and (general.json()["store_id"], general.json()["outer_str"]) == (None, "")
    bodies = [c["body"]["action_info"]["card"] for c in await calls(client, "/card/qrcode/create")]
    assert bodies == [{"card_id": card_id, "outer_str": "S001"}, {"card_id": card_id}]

    other_store = await add_store(client, admin, code="S002")
    manager = await add_staff(client, admin, username="mgr2", role="store_manager", store_id=other_store)
    denied = await client.post("/api/card-template/claim-qrcodes", json={"store_id": demo.store.id}, headers=manager)
    assert denied.status_code == 404
    own = await client.post("/api/card-template/claim-qrcodes", json={}, headers=manager)
    assert own.status_code == 201 and own.json()["outer_str"] == "S002"
    cashier = await add_staff(client, admin, username="cash2", role="cashier", store_id=other_store)
    assert (await client.post("/api/card-template/claim-qrcodes", json={}, headers=cashier)).status_code == 403
    listed = await client.get("/api/card-template/claim-qrcodes", headers=cashier)
    assert [c["outer_str"] for c in listed.json()["items"]] == ["S002"]
    listed = await client.get("/api/card-template/claim-qrcodes", headers=admin)
    assert [c["outer_str"] for c in listed.json()["items"]] == ["S001", "", "S002"]


async def test_card_events_claim_view_session_and_removal(client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    await oa_event(client, openid="o_x", event="user_get_card", card_id="pNotOurs", outer_str="S001")
    assert await Member.filter(openid="o_x").count() == 0 and await MemberCard.all().count() == 0

    code = await claim(client, openid="o_new", card_id=card_id, repeat=3)
    member = await Member.get(openid="o_new")
    assert (member.source, member.origin_store_id) == ("card", demo.store.id)
    card = await MemberCard.get(card_id=card_id, code=code)
    assert (card.member_id, card.store_id, card.status) == (member.id, demo.store.id, "claimed")
    for event in ("user_view_card", "user_enter_session_from_card", "user_del_card", "user_del_card"):
        await oa_event(client, openid="o_new", event=event, card_id=card_id, code=code, repeat=2)
    card = await MemberCard.get(id=card.id)
    assert card.status == "removed" and card.removed_at is not None
    kinds = [a.kind for a in await MemberActivity.filter(member_id=member.id).order_by("id")]
    assert kinds == ["registered", "card_claimed", "card_viewed", "card_session", "card_removed"]


async def test_decrypt_code_for_the_cashier(app, client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    code = await claim(client, openid="o1", card_id=card_id)
    member = await Member.get(openid="o1")

    async def encrypt(plain: str) -> str:
        return await encrypt_code(client, card_id=card_id, code=plain)

    cashier = await add_staff(client, admin, username="cash1", role="cashier", store_id=demo.store.id)
    found = await client.post("/api/cards/decrypt-code", json={"encrypt_code": await encrypt(code)}, headers=cashier)
    assert found.status_code == 200, found.text
    assert found.json() == {"member_id": member.id, "code": code, "card_id": card_id, "status": "claimed"}
    for encrypted in (await encrypt("999999999999"), "AAAA"):
        unknown = await client.post("/api/cards/decrypt-code", json={"encrypt_code": encrypted}, headers=cashier)
        assert unknown.status_code == 404 and error_of(unknown)["code"] == "card.code_not_found"
    other = await add_staff(
        client, admin, username="cash9", role="cashier", store_id=await add_store(client, admin, code="S009")
    )
    hidden = await client.post("/api/cards/decrypt-code", json={"encrypt_code": await encrypt(code)}, headers=other)
    assert hidden.status_code == 404


async def test_sync_sends_the_latest_state_once_per_batch_and_retries(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100)
    member_id, code = await activated_member(client, app, admin, card_id=card_id, openid="o1", mobile="13800000001")
    plain = await client.post("/api/members/", json={"name": "No Card"}, headers=admin)
    await client.post(
        f"/api/members/{plain.json()['id']}/points",
        json={"delta": 5, "reason": "x", "idempotency_key": "n"},
        headers=admin,
    )
    for delta, key in ((20, "a"), (-50, "b")):
        change = {"delta": delta, "reason": "门店调整", "idempotency_key": key}
        assert (await client.post(f"/api/members/{member_id}/points", json=change, headers=admin)).status_code == 200
    recharge = {"delta": 12345, "kind": "recharge", "reason": "储值", "idempotency_key": "c"}
    assert (await client.post(f"/api/members/{member_id}/balance", json=recharge, headers=admin)).status_code == 200
    assert await OutboxMessage.filter(topic="card.sync").count() == 1  # coalesced; the card-less member has none
    await deliver(app)
    [synced] = [c["body"] for c in await calls(client, UPDATEUSER)]
    assert (synced["code"], synced["card_id"], synced["bonus"], synced["balance"]) == (code, card_id, 70, 12345)
    assert (synced["record_bonus"], synced["record_balance"]) == ("门店调整 -50", "储值 +123.45元")
    assert synced["notify_optional"]["is_notify_bonus"] and synced["notify_optional"]["is_notify_balance"]

    fault = {"path": UPDATEUSER, "errcode": 40079, "times": 1}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    change = {"delta": 1, "reason": "签到", "idempotency_key": "d"}
    await client.post(f"/api/members/{member_id}/points", json=change, headers=admin)
    assert await deliver(app) == 0
    change = {"delta": 2, "reason": "签到", "idempotency_key": "e"}
    await client.post(f"/api/members/{member_id}/points", json=change, headers=admin)
    assert await deliver_after_backoff(app) == 1
    bodies = [c["body"] for c in await calls(client, UPDATEUSER)]
    assert [b["bonus"] for b in bodies] == [70, 71, 73]  # the retry carries the state at its delivery
    assert bodies[-1]["notify_optional"]["is_notify_balance"] is False and bodies[-1]["record_bonus"] == "签到 +2"


async def test_new_points_rules_reach_the_card_s_bonus_rule_once(app, client, admin, demo):
    await put_template(client, admin)
    rules = (await client.get("/api/loyalty/points-rules", headers=admin)).json()
    rules["earn"] = {"points": 3, "per_fen": 500}
    rules["cash"] = {**rules["cash"], "points": 20, "fen": 100}
    for _ in range(2):  # saved twice before delivery: one card/update
        saved = await client.put("/api/loyalty/points-rules", json=rules, headers=admin)
        assert saved.status_code == 200, saved.text
    assert await deliver(app) == 1
    [update] = [c["body"] for c in await calls(client, "/card/update")]
    rule = update["member_card"]["bonus_rule"]
    assert (rule["cost_money_unit"], rule["increase_bonus"], rule["cost_bonus_unit"], rule["reduce_money"]) == (
        500,
        3,
        20,
        100,
    )
