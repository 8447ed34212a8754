"""One-tap activation of the member card, driven through the emulator as a new customer would."""

from __future__ import annotations

import asyncio

from models.kernel.outbox import OutboxMessage
from models.members.member_card import MemberCard
from models.members.members import Member, register_wechat_member
from models.members.timeline import MemberActivity
from tests.cards.helpers import (
    EMU,
    MOBILE,
    activated_member,
    calls,
    claim,
    deliver,
    deliver_after_backoff,
    encrypt_code,
    followed_and_claimed,
    form,
    member_headers,
    member_id_of,
    oa_event,
    points_of,
    put_template,
    scan,
    set_rewards,
    submit,
)

ACTIVATE = "/card/membercard/activate"
TEMPINFO = "/card/membercard/activatetempinfo/get"
UPDATEUSER = "/card/membercard/updateuser"


async def kinds(member_id: int) -> list[str]:
    return [a.kind for a in await MemberActivity.filter(member_id=member_id).order_by("id")]


async def test_scan_claim_activate_then_earn_updates_the_card(app, client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100)
    member_id, code = await followed_and_claimed(client, admin, card_id=card_id)
    ticket = await submit(client, openid="o1", card_id=card_id, code=code, info=form(mobile="13800000001"))
    assert await calls(client, TEMPINFO) == []  # nothing leaves the callback: the outbox does it

    assert await deliver(app) == 1
    assert [c["body"] for c in await calls(client, TEMPINFO)] == [{"activate_ticket": ticket}]
    activate = [c["body"] for c in await calls(client, ACTIVATE)]
    assert activate == [
        {
            "membership_number": code,
            "code": code,
            "card_id": card_id,
            "init_bonus": 100,
            "init_balance": 0,
            "init_custom_field_value1": "普通会员",
            "init_custom_field_value2": "0",
        }
    ]
    member = (await client.get(f"/api/members/{member_id}", headers=admin)).json()
    assert (member["phone"], member["name"], member["gender"], member["birthday"]) == (
        "13800000001",
        "韩梅梅",
        "female",
        "1990-05-17",
    )
    assert member["store_id"] == demo.store.id and member["points"] == 100
    stored = await Member.get(id=member_id)
    assert stored.member_no == code and stored.activated_at is not None
    assert await points_of(client, admin, member_id) == [(100, "gift", f"welcome:{member_id}:points")]
    assert [k for k in await kinds(member_id) if k.startswith(("card", "activ"))] == ["card_claimed", "activated"]
    assert await calls(client, UPDATEUSER) == []

    earn = {"delta": 30, "reason": "消费", "idempotency_key": "order-1"}
    assert (await client.post(f"/api/members/{member_id}/points", json=earn, headers=admin)).status_code == 200
    assert await deliver(app) == 1
    synced = [c["body"] for c in await calls(client, UPDATEUSER)]
    assert synced == [
        {
            "code": code,
            "card_id": card_id,
            "bonus": 130,
            "balance": 0,
            "custom_field_value1": "普通会员",
            "custom_field_value2": "0",
            "notify_optional": {
                "is_notify_bonus": True,
                "is_notify_balance": False,
                "is_notify_custom_field1": False,
                "is_notify_custom_field2": False,
            },
            "record_bonus": "消费 +30",
        }
    ]


async def test_every_event_redelivered_three_times_concurrently_gives_one_member_card_and_reward(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100)
    code = "100000000001"
    burst = {"repeat": 3, "concurrent": True}
    # follow and claim race to register the member; then two distinct claims of one code race for the card
    await asyncio.gather(
        scan(client, openid="o1", **burst), claim(client, openid="o1", card_id=card_id, code=code, **burst)
    )
    await asyncio.gather(
        claim(client, openid="o1", card_id=card_id, code=code, create_time=1_800_000_000, **burst),
        claim(client, openid="o1", card_id=card_id, code=code, create_time=1_800_000_001, **burst),
    )
    await asyncio.gather(
        submit(client, openid="o1", card_id=card_id, code=code, info=form(), **burst),
        submit(client, openid="o1", card_id=card_id, code=code, info=form(), create_time=1_800_000_002, **burst),
    )
    await asyncio.gather(deliver(app), deliver(app))
    await deliver(app)

    assert await Member.filter(openid="o1").count() == 1
    member_id = await member_id_of(client, admin, "o1")
    assert await MemberCard.filter(card_id=card_id).count() == 1
    assert await points_of(client, admin, member_id) == [(100, "gift", f"welcome:{member_id}:points")]
    assert [c["body"]["code"] for c in await calls(client, ACTIVATE)] == [code]
    assert (await kinds(member_id)).count("card_claimed") == 1
    assert (await kinds(member_id)).count("activated") == 1


async def test_a_missing_required_field_activates_nothing_and_a_complete_resubmission_does(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100)
    member_id, code = await followed_and_claimed(client, admin, card_id=card_id)
    await submit(client, openid="o1", card_id=card_id, code=code, info=form(mobile=None))
    assert await deliver(app) == 1  # rejected for good: delivered, not retried

    member_id = await member_id_of(client, admin, "o1")
    card = await MemberCard.get(card_id=card_id, code=code)
    assert card.status == "claimed" and card.activated_at is None
    assert await points_of(client, admin, member_id) == []
    assert await calls(client, ACTIVATE) == []
    assert [m.status for m in await OutboxMessage.filter(topic="card.activate")] == ["delivered"]
    rejected = await MemberActivity.get(member_id=member_id, kind="activation_rejected")
    assert rejected.detail["missing"] == [MOBILE] and rejected.detail["reason"] == "card.field_required"

    fixed = form(mobile="13800000009")
    await submit(client, openid="o1", card_id=card_id, code=code, info=fixed, create_time=1_800_000_000)
    await deliver(app)
    assert (await MemberCard.get(id=card.id)).status == "activated"
    assert await points_of(client, admin, member_id) == [(100, "gift", f"welcome:{member_id}:points")]


async def test_a_phone_of_another_member_is_rejected(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    taken = await client.post("/api/members/", json={"name": "Li Lei", "phone": "13800000001"}, headers=admin)
    assert taken.status_code == 201
    member_id, code = await followed_and_claimed(client, admin, card_id=card_id)
    await submit(client, openid="o1", card_id=card_id, code=code, info=form(mobile="13800000001"))
    await deliver(app)
    assert (await MemberCard.get(code=code)).status == "claimed"
    rejected = await MemberActivity.get(kind="activation_rejected")
    assert rejected.detail["reason"] == "card.phone_taken"


async def test_referral_rewards_both_sides_once(app, client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=10)
    referrer_id, _ = await activated_member(client, app, admin, card_id=card_id, openid="o_ref", mobile="13800000002")
    referrer = await Member.get(id=referrer_id)
    referee, _ = await register_wechat_member(
        merchant_id=demo.merchant.id, openid="o_new", referral_code=referrer.referral_code, source="oa_qr"
    )
    assert referee.referrer_id == referrer_id
    code = await claim(client, openid="o_new", card_id=card_id)
    for create_time in (1_800_000_100, 1_800_000_101):  # the member submits twice
        await submit(client, openid="o_new", card_id=card_id, code=code, info=form(), create_time=create_time)
        await deliver(app)
    await deliver(app)

    assert await points_of(client, admin, referrer_id) == [
        (10, "gift", f"welcome:{referrer_id}:points"),
        (50, "gift", f"referral:{referee.id}:referrer"),
    ]
    assert await points_of(client, admin, referee.id) == [
        (10, "gift", f"welcome:{referee.id}:points"),
        (50, "gift", f"referral:{referee.id}:referee"),
    ]
    assert [c["body"]["init_bonus"] for c in await calls(client, ACTIVATE) if c["body"]["code"] == code] == [60]
    assert [c["body"]["bonus"] for c in await calls(client, UPDATEUSER)] == [60]  # the referrer's card


async def test_self_referral_gives_only_the_welcome_gift(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=10)
    await scan(client, openid="o1")
    member_id = await member_id_of(client, admin, "o1")
    await Member.filter(id=member_id).update(referrer_id=member_id)
    code = await claim(client, openid="o1", card_id=card_id)
    await submit(client, openid="o1", card_id=card_id, code=code, info=form())
    await deliver(app)
    assert await points_of(client, admin, member_id) == [(10, "gift", f"welcome:{member_id}:points")]


async def test_a_failed_activate_call_is_retried_without_granting_twice(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100, welcome_balance=500)
    member_id, code = await followed_and_claimed(client, admin, card_id=card_id)
    await submit(client, openid="o1", card_id=card_id, code=code, info=form())
    fault = {"path": ACTIVATE, "errcode": 40079, "errmsg": "system busy"}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    assert await deliver(app) == 0
    message = await OutboxMessage.get(topic="card.activate")
    assert message.status == "pending" and "40079" in message.last_error
    assert (await MemberCard.get(code=code)).status == "activated"

    assert await deliver_after_backoff(app) == 1
    member_id = await member_id_of(client, admin, "o1")
    assert await points_of(client, admin, member_id) == [(100, "gift", f"welcome:{member_id}:points")]
    assert len(await calls(client, TEMPINFO)) == 1
    bodies = [c["body"] for c in await calls(client, ACTIVATE)]
    assert len(bodies) == 2 and bodies[1]["init_bonus"] == 100 and bodies[1]["init_balance"] == 500


async def mp_login(client, *, openid: str, unionid: str, member_id: int) -> dict[str, str]:
    code = (await client.post(f"{EMU}/control/mp-code", json={"openid": openid, "unionid": unionid})).json()["code"]
    answer = await client.post("/api/mp/login", json={"code": code})
    assert answer.status_code == 200, answer.text
    assert answer.json()["member_id"] == member_id
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def test_miniprogram_activation_page(app, client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100)
    member_id, code = await followed_and_claimed(client, admin, card_id=card_id)
    ticket = await submit(client, openid="o1", card_id=card_id, code=code, info=form(mobile="13800000003"))
    encrypted = await encrypt_code(client, card_id=card_id, code=code)
    body = {"activate_ticket": ticket, "card_id": card_id, "encrypt_code": encrypted}
    # the OA member's unionid (from user/info) links the mini-program login to the same member
    await Member.filter(id=member_id).update(unionid="u1")
    me = await mp_login(client, openid="mp_o1", unionid="u1", member_id=member_id)

    stranger, _ = await register_wechat_member(merchant_id=demo.merchant.id, openid="o_other", source="oa_qr")
    other = member_headers(app, member_id=stranger.id, merchant_id=demo.merchant.id)
    denied = await client.post("/api/mp/card/activate", json=body, headers=other)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "card.not_yours"
    unknown = await client.post("/api/mp/card/activate", json={**body, "encrypt_code": "AAAA"}, headers=me)
    assert unknown.status_code == 404
    assert (await client.post("/api/mp/card/activate", json=body, headers=admin)).status_code == 403

    answers = await asyncio.gather(*[client.post("/api/mp/card/activate", json=body, headers=me) for _ in range(3)])
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert {(a.json()["status"], a.json()["code"], a.json()["points"]) for a in answers} == {("activated", code, 100)}
    assert answers[0].json()["tier_name"] == "普通会员"
    assert await calls(client, ACTIVATE) == []  # through the outbox
    await deliver(app)
    await deliver(app)
    activate = [c["body"] for c in await calls(client, ACTIVATE)]
    assert [(b["code"], b["membership_number"], b["init_bonus"]) for b in activate] == [(code, code, 100)]
    assert await points_of(client, admin, member_id) == [(100, "gift", f"welcome:{member_id}:points")]
    assert (await Member.get(id=member_id)).phone == "13800000003"


async def test_miniprogram_activation_without_a_required_field_is_422(app, client, admin, demo):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100)
    member_id, code = await followed_and_claimed(client, admin, card_id=card_id)
    ticket = await submit(client, openid="o1", card_id=card_id, code=code, info=form(mobile=None))
    encrypted = await encrypt_code(client, card_id=card_id, code=code)
    answer = await client.post(
        "/api/mp/card/activate",
        json={"activate_ticket": ticket, "card_id": card_id, "encrypt_code": encrypted},
        headers=member_headers(app, member_id=member_id, merchant_id=demo.merchant.id),
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "card.field_required"
    assert answer.json()["error"]["field"] == MOBILE
    assert (await MemberCard.get(code=code)).status == "claimed"
    assert await points_of(client, admin, member_id) == []


async def test_custom_fields_on_the_form_are_stored_on_the_member(app, client, admin):
    field = {"key": "drink", "label": "喜欢的饮品", "type": "enum", "options": ["拿铁", "美式"]}
    assert (await client.post("/api/member-fields", json=field, headers=admin)).status_code == 201
    template = await put_template(client, admin, form={"required": [MOBILE, "drink"], "optional": []})
    card_id = template["card_id"]
    member_id, code = await followed_and_claimed(client, admin, card_id=card_id)
    await submit(client, openid="o1", card_id=card_id, code=code, info=form(**{"喜欢的饮品": "拿铁"}))
    await deliver(app)
    member = await Member.get(openid="o1")
    assert member.custom_fields == {"drink": "拿铁"}
    assert (member.name, member.birthday) == ("", None)  # not on this form
    assert (await MemberCard.get(code=code)).status == "activated"

    await scan(client, openid="o2")
    code2 = await claim(client, openid="o2", card_id=card_id)
    await submit(
        client, openid="o2", card_id=card_id, code=code2, info=form(mobile="13800000005", **{"喜欢的饮品": "茶"})
    )
    await deliver(app)
    assert (await MemberCard.get(code=code2)).status == "claimed"
    rejected = await MemberActivity.get(kind="activation_rejected")
    assert rejected.detail["field"] == "custom_fields.drink"


async def test_unknown_card_events_write_nothing(client, admin):
    await put_template(client, admin)
    await oa_event(client, openid="o9", event="submit_membercard_user_info", card_id="pUnknown", code="1", info=form())
    assert await OutboxMessage.filter(topic="card.activate").count() == 0
    assert await Member.filter(openid="o9").count() == 0


async def test_a_second_card_after_deleting_the_first_grants_nothing_again(app, client, admin):
    card_id = (await put_template(client, admin))["card_id"]
    await set_rewards(client, admin, welcome_points=100)
    member_id, first = await activated_member(client, app, admin, card_id=card_id, openid="o1", mobile="13800000001")
    await oa_event(client, openid="o1", event="user_del_card", card_id=card_id, code=first)
    await set_rewards(client, admin, welcome_points=300)
    second = await claim(client, openid="o1", card_id=card_id, create_time=1_800_000_000)
    await submit(client, openid="o1", card_id=card_id, code=second, info=form(), create_time=1_800_000_001)
    await deliver(app)
    assert [c.status for c in await MemberCard.filter(member_id=member_id).order_by("id")] == ["removed", "activated"]
    assert await points_of(client, admin, member_id) == [(100, "gift", f"welcome:{member_id}:points")]
    activate = [(c["body"]["code"], c["body"]["membership_number"]) for c in await calls(client, ACTIVATE)]
    assert activate == [(first, first), (second, first)]  # the member keeps the first membership number


async def test_three_different_first_contacts_at_once_make_one_member(client, admin):
    """Follow, card claim and card view of a brand-new openid arriving in the same instant (no deadlock)."""
    card_id = (await put_template(client, admin))["card_id"]
    for n in range(3):
        openid = f"o_burst3_{n}"
        await asyncio.gather(
            scan(client, openid=openid, repeat=2, concurrent=True),
            claim(client, openid=openid, card_id=card_id, code=f"88000000000{n}", repeat=2, concurrent=True),
            oa_event(
                client,
                openid=openid,
                event="user_view_card",
                card_id=card_id,
                code=f"88000000000{n}",
                repeat=2,
                concurrent=True,
            ),
        )
        members = await Member.filter(openid=openid)
        assert len(members) == 1
        assert await MemberCard.filter(member_id=members[0].id).count() == 1
