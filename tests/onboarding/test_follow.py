"""The official-account follow flow, driven through the emulator: scan → subscribe → member → welcome."""

from __future__ import annotations

import asyncio

import httpx

from models.members.members import Member
from models.members.timeline import MemberActivity
from models.onboarding.qrcodes import QrCode, QrScan
from models.tenancy.onboarding_settings import OnboardingSettings
from tests.helpers import add_store
from tests.onboarding.test_qrcodes import add_staff_member, create_code
from wechat.crypto import OACrypto
from wechat.xmlutil import parse_xml

EMU = "/_emulator"
DEFAULT_WELCOME = "欢迎加入！点击领取会员卡。"


def reply_of(delivery: dict, settings) -> dict[str, str] | None:
    """The server's passive reply in one delivery (decrypted in safe mode), or None for "success"."""
    assert delivery["status"] == 200, delivery
    if delivery["body"] == "success":
        return None
    outer = parse_xml(delivery["body"])
    if "Encrypt" not in outer:
        return outer
    official = settings.wechat.official
    crypto = OACrypto(token=official.token, encoding_aes_key=official.encoding_aes_key, appid=official.appid)
    return parse_xml(
        crypto.decrypt(
            encrypt=outer["Encrypt"],
            msg_signature=outer["MsgSignature"],
            timestamp=outer["TimeStamp"],
            nonce=outer["Nonce"],
        )
    )


async def fire(client: httpx.AsyncClient, path: str, **body: object) -> list[dict]:
    response = await client.post(f"{EMU}/control/{path}", json=body)
    assert response.status_code == 200, response.text
    return response.json()["deliveries"]


async def subscribe(client: httpx.AsyncClient, openid: str, scene: str | None, **body: object) -> list[dict]:
    key = {"event_key": f"qrscene_{scene}"} if scene else {}
    return await fire(client, "oa-event", openid=openid, event="subscribe", **key, **body)


async def timeline(member_id: int) -> list[str]:
    return [a.kind for a in await MemberActivity.filter(member_id=member_id).order_by("id")]


async def test_store_scan_registers_a_subscribed_member_of_that_store(client, admin, demo, settings):
    code = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    deliveries = await fire(client, "scan", store="S001", openid="o1")
    reply = reply_of(deliveries[0], settings)
    assert reply is not None
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == "o1"
    assert reply["Content"] == DEFAULT_WELCOME  # no card QR yet: text only
    member = await Member.get(openid="o1")
    assert member.merchant_id == demo.merchant.id
    assert member.origin_store_id == demo.store.id
    assert member.origin_staff_id is None
    assert member.source == "oa_qr"
    assert member.subscribed is True
    assert member.subscribed_at is not None
    assert member.unsubscribed_at is None
    scans = await QrScan.filter(member_id=member.id)
    assert [(s.qr_code_id, s.scene, s.event) for s in scans] == [(code["id"], "store:S001", "subscribe")]
    assert (await QrCode.get(id=code["id"])).scan_count == 1
    assert await timeline(member.id) == ["registered", "followed"]
    followed = await MemberActivity.get(member_id=member.id, kind="followed")
    assert followed.detail["scene"] == "store:S001"
    assert followed.actor == "wechat"
    listed = (await client.get("/api/members/", params={"openid": "o1"}, headers=admin)).json()
    assert [(m["id"], m["store_id"]) for m in listed["items"]] == [(member.id, demo.store.id)]


async def test_staff_scene_credits_the_staff_member_and_their_store(client, admin, demo, settings):
    store_b = await add_store(client, admin, code="S002")
    staff_id, _ = await add_staff_member(client, admin, username="clerk_b", role="cashier", store_id=store_b)
    code = await create_code(client, admin, kind="oa", staff_id=staff_id)
    deliveries = await subscribe(client, "o_staff", f"staff:{staff_id}")
    reply = reply_of(deliveries[0], settings)
    assert reply is not None and reply["Content"] == DEFAULT_WELCOME
    member = await Member.get(openid="o_staff")
    assert (member.origin_store_id, member.origin_staff_id, member.source) == (store_b, staff_id, "oa_qr")
    assert (await QrCode.get(id=code["id"])).scan_count == 1


async def test_referral_scene_sets_the_referrer_of_a_new_member_only(client, demo):
    await subscribe(client, "o_ref_a", None)
    referrer = await Member.get(openid="o_ref_a")
    assert referrer.origin_store_id is None
    await subscribe(client, "o_ref_b", f"ref:{referrer.referral_code}")
    referee = await Member.get(openid="o_ref_b")
    assert referee.referrer_id == referrer.id
    assert referee.origin_store_id is None
    # an existing member scanning someone's referral code does not gain a referrer
    await fire(client, "oa-event", openid="o_ref_a", event="SCAN", event_key=f"ref:{referee.referral_code}")
    assert (await Member.get(id=referrer.id)).referrer_id is None
    assert await QrScan.filter(scene=f"ref:{referee.referral_code}").count() == 1
    # an unknown referral code registers the member without a referrer
    await subscribe(client, "o_ref_c", "ref:NOSUCHCODE")
    assert (await Member.get(openid="o_ref_c")).referrer_id is None


async def test_scan_by_an_existing_member_keeps_the_origin_and_counts_the_scan(client, admin, demo, settings):
    store_b = await add_store(client, admin, code="S002")
    code_b = await create_code(client, admin, kind="oa", store_id=store_b)
    await fire(client, "scan", store="S001", openid="o_existing")
    member = await Member.get(openid="o_existing")
    deliveries = await fire(client, "scan", store="S002", openid="o_existing", subscribed=True)
    reply = reply_of(deliveries[0], settings)
    assert reply is not None and reply["Content"] == DEFAULT_WELCOME
    again = await Member.get(id=member.id)
    assert again.origin_store_id == demo.store.id
    assert again.subscribed_at == member.subscribed_at  # SCAN is not a new follow
    assert await Member.filter(openid="o_existing").count() == 1
    scans = await QrScan.filter(member_id=member.id).order_by("id")
    assert [(s.qr_code_id, s.scene, s.event) for s in scans] == [
        (None, "store:S001", "subscribe"),  # no code was created for S001: logged, not counted
        (code_b["id"], "store:S002", "scan"),
    ]
    assert (await QrCode.get(id=code_b["id"])).scan_count == 1
    assert await timeline(member.id) == ["registered", "followed", "scanned"]


async def test_unsubscribe_keeps_the_member_and_a_later_follow_returns(client, demo, settings):
    await fire(client, "scan", store="S001", openid="o_leave")
    member = await Member.get(openid="o_leave")
    deliveries = await fire(client, "oa-event", openid="o_leave", event="unsubscribe")
    assert reply_of(deliveries[0], settings) is None
    left = await Member.get(id=member.id)
    assert left.subscribed is False
    assert left.unsubscribed_at is not None
    assert left.origin_store_id == demo.store.id
    # a returning follower is recognised (no second member) and welcomed again
    back = await subscribe(client, "o_leave", None, create_time=1_900_000_000)
    assert reply_of(back[0], settings)["Content"] == DEFAULT_WELCOME
    returned = await Member.get(id=member.id)
    assert (returned.subscribed, returned.unsubscribed_at) == (True, None)
    assert await Member.filter(openid="o_leave").count() == 1
    assert await timeline(member.id) == ["registered", "followed", "unfollowed", "followed"]
    # unsubscribe from someone we never saw writes nothing
    members_before = await Member.all().count()
    activity_before = await MemberActivity.all().count()
    await fire(client, "oa-event", openid="o_stranger", event="unsubscribe")
    assert await Member.all().count() == members_before
    assert await MemberActivity.all().count() == activity_before


async def test_disabled_code_or_unknown_store_registers_without_attribution(client, admin, demo):
    code = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    assert (await client.post(f"/api/qrcodes/{code['id']}/disable", headers=admin)).status_code == 200
    await fire(client, "scan", store="S001", openid="o_disabled")
    member = await Member.get(openid="o_disabled")
    assert (member.origin_store_id, member.source, member.subscribed) == (None, "oa_qr", True)
    assert (await QrCode.get(id=code["id"])).scan_count == 0
    assert [s.qr_code_id for s in await QrScan.filter(member_id=member.id)] == [None]
    await fire(client, "scan", store="NOPE", openid="o_unknown_store")
    assert (await Member.get(openid="o_unknown_store")).origin_store_id is None
    await subscribe(client, "o_unknown_staff", "staff:999999")
    stranger = await Member.get(openid="o_unknown_staff")
    assert (stranger.origin_store_id, stranger.origin_staff_id) == (None, None)


async def test_redelivered_scan_changes_nothing_twice(client, admin, demo, settings):
    code = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    deliveries = await fire(client, "scan", store="S001", openid="o_repeat", repeat=3)
    replies = [reply_of(d, settings) for d in deliveries]
    assert replies[0] is not None and replies[0]["Content"] == DEFAULT_WELCOME
    assert replies[1:] == [replies[0], replies[0]]  # redeliveries get the stored reply, nothing is redone
    await _assert_one_member_one_scan("o_repeat", code["id"])


async def test_concurrent_redeliveries_make_one_member_and_one_scan(client, admin, demo, settings):
    code = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    deliveries = await fire(client, "scan", store="S001", openid="o_burst", repeat=3, concurrent=True)
    replies = [reply_of(d, settings) for d in deliveries]
    assert [r["Content"] for r in replies] == [DEFAULT_WELCOME] * 3  # one welcome, answered to every delivery
    await _assert_one_member_one_scan("o_burst", code["id"])


async def _assert_one_member_one_scan(openid: str, code_id: int) -> None:
    members = await Member.filter(openid=openid)
    assert len(members) == 1
    assert await QrScan.filter(member_id=members[0].id).count() == 1
    assert (await QrCode.get(id=code_id)).scan_count == 1
    assert await timeline(members[0].id) == ["registered", "followed"]


async def test_subscribe_and_scan_of_one_new_follower_at_once_make_one_member(client, admin, demo, settings):
    code = await create_code(client, admin, kind="oa", store_id=demo.store.id)
    first, second = await asyncio.gather(
        client.post(f"{EMU}/control/scan", json={"store": "S001", "openid": "o_race", "create_time": 1_800_000_001}),
        client.post(
            f"{EMU}/control/scan",
            json={"store": "S001", "openid": "o_race", "subscribed": True, "create_time": 1_800_000_002},
        ),
    )
    for fired in (first, second):
        assert fired.status_code == 200, fired.text
        assert reply_of(fired.json()["deliveries"][0], settings)["Content"] == DEFAULT_WELCOME
    members = await Member.filter(openid="o_race")
    assert len(members) == 1
    assert members[0].origin_store_id == demo.store.id
    scans = await QrScan.filter(member_id=members[0].id)
    assert sorted(s.event for s in scans) == ["scan", "subscribe"]
    assert (await QrCode.get(id=code["id"])).scan_count == 2


async def test_welcome_text_and_card_link_come_from_the_merchant(client, admin, demo, settings):
    changed = await client.put("/api/onboarding-settings", json={"welcome_text": "欢迎光临小店"}, headers=admin)
    assert changed.status_code == 200
    text_only = await fire(client, "scan", store="S001", openid="o_text_only")
    assert reply_of(text_only[0], settings)["Content"] == "欢迎光临小店"
    # card claim QR codes come from the card part; store-less first, then one for this store
    await QrCode.create(merchant_id=demo.merchant.id, kind="card", scene="", url="https://w.url.cn/s/all")
    s1 = await fire(client, "scan", store="S001", openid="o_generic")
    assert reply_of(s1[0], settings)["Content"] == '欢迎光临小店\n<a href="https://w.url.cn/s/all">领取会员卡</a>'
    await QrCode.create(
        merchant_id=demo.merchant.id, kind="card", scene="S001", store_id=demo.store.id, url="https://w.url.cn/s/1"
    )
    s2 = await fire(client, "scan", store="S001", openid="o_store_card")
    assert reply_of(s2[0], settings)["Content"] == '欢迎光临小店\n<a href="https://w.url.cn/s/1">领取会员卡</a>'
    await QrCode.filter(store_id=demo.store.id, kind="card").update(is_active=False)
    s3 = await fire(client, "scan", store="S001", openid="o_card_off")
    assert reply_of(s3[0], settings)["Content"] == '欢迎光临小店\n<a href="https://w.url.cn/s/all">领取会员卡</a>'
    assert await OnboardingSettings.filter(merchant_id=demo.merchant.id).count() == 1
    listed = (await client.get("/api/qrcodes", headers=admin)).json()
    assert listed == {"total": 0, "items": []}  # card-claim codes are listed by the card API, not here
