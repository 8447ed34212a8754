"""Done-when of the foundation: an emulator QR scan reaches the server encrypted and is accepted once."""

from __future__ import annotations

from models.kernel.inbound import InboundEvent
from tests.helpers import set_message_mode

EMU = "/_emulator"


async def test_scan_delivered_three_times_is_recorded_once(client, admin):
    fired = await client.post(f"{EMU}/control/scan", json={"store": "S001", "openid": "o_scan_1", "repeat": 3})
    assert fired.status_code == 200, fired.text
    deliveries = fired.json()["deliveries"]
    assert len(deliveries) == 3
    assert all(d["status"] == 200 and "<Encrypt>" in d["body"] for d in deliveries), deliveries  # welcome reply
    events = (await client.get("/api/wechat/events", headers=admin)).json()["items"]
    assert len(events) == 1
    assert events[0]["event"] == "subscribe"
    assert events[0]["openid"] == "o_scan_1"
    assert events[0]["payload"]["EventKey"] == "qrscene_store:S001"
    assert events[0]["payload"]["Ticket"]


async def test_concurrent_redeliveries_of_scan_and_subscribed_scan(client):
    fired = await client.post(
        f"{EMU}/control/scan", json={"store": "S001", "openid": "o_scan_2", "repeat": 3, "concurrent": True}
    )
    assert [d["status"] for d in fired.json()["deliveries"]] == [200, 200, 200]
    again = await client.post(
        f"{EMU}/control/scan",
        json={"store": "S001", "openid": "o_scan_2", "subscribed": True, "create_time": 1800000000},
    )
    assert again.json()["deliveries"][0]["status"] == 200
    rows = await InboundEvent.filter(openid="o_scan_2").order_by("id")
    assert [(r.event, r.payload["EventKey"]) for r in rows] == [
        ("subscribe", "qrscene_store:S001"),
        ("SCAN", "store:S001"),
    ]


async def test_plaintext_mode_from_the_emulator_is_accepted_too(client):
    await set_message_mode("plaintext")
    fired = await client.post(
        f"{EMU}/control/oa-event", json={"openid": "o_plain_emu", "event": "unsubscribe", "safe_mode": False}
    )
    assert fired.json()["deliveries"][0]["status"] == 200
    assert await InboundEvent.filter(openid="o_plain_emu", event="unsubscribe").count() == 1
