"""The promised coupons, each exactly once: recharge-package gifts at settlement, welcome coupons at activation."""

from __future__ import annotations

from models.coupons.tables import Coupon
from models.tiers.earning import add_growth
from models.tiers.tables import Tier
from tests.cards.helpers import activated_member, put_template, set_rewards
from tests.coupons.helpers import add_template
from tests.helpers import error_of
from tests.payments.helpers import add_package, pay, paying_member, recharge, use_pay_version
from tests.tiers.helpers import add_tier, lasting, new_member


async def test_recharge_package_coupons_granted_once_at_settlement(app, client, admin, demo):
    await use_pay_version("v3")
    template = await add_template(client, admin, channels=["gift"], total_stock=None)
    closed = await add_template(client, admin, channels=["self"], name="self only")
    bad = await client.post(
        "/api/recharge-packages",
        json={"name": "x", "price": 100, "gifts": {"coupons": [{"template_id": closed["id"]}]}},
        headers=admin,
    )
    assert bad.status_code == 422 and error_of(bad)["code"] == "coupon_template.not_giftable"
    package = await add_package(client, admin, gifts={"coupons": [{"template_id": template["id"], "quantity": 2}]})
    assert package["gifts"] == {"coupons": [{"template_id": template["id"], "quantity": 2}]}
    member_id, headers = await paying_member(app, merchant_id=demo.merchant.id, mp_openid="mp-c1")
    order = (await recharge(client, headers, package_id=package["id"]))["order"]
    await pay(client, order["out_trade_no"], repeat=3, concurrent=True)
    coupons = await Coupon.filter(member_id=member_id, template_id=template["id"])
    assert len(coupons) == 2 and {c.channel for c in coupons} == {"gift"}
    mine = (await client.get("/api/mp/me/coupons", headers=headers)).json()["items"]
    assert len(mine) == 2


async def test_welcome_coupons_at_activation_once(app, client, admin, demo):
    template = await add_template(client, admin, channels=["gift"])
    bad = await client.put("/api/onboarding-settings", json={"welcome_coupon_template_ids": [999999]}, headers=admin)
    assert bad.status_code == 422
    await set_rewards(client, admin, welcome_coupon_template_ids=[template["id"]])  # type: ignore[arg-type]
    settings = (await client.get("/api/onboarding-settings", headers=admin)).json()
    assert settings["welcome_coupon_template_ids"] == [template["id"]]
    card_id = (await put_template(client, admin))["card_id"]
    member_id, _ = await activated_member(client, app, admin, card_id=card_id, openid="o-w1", mobile="13800000071")
    assert await Coupon.filter(member_id=member_id, template_id=template["id"]).count() == 1


async def test_tier_upgrade_gift_coupons_once(app, client, admin, demo):
    admin = lasting(app, admin)
    template = await add_template(client, admin, channels=["gift"], per_member_limit=1)
    await add_tier(client, admin, "normal", 0, 0)
    gift = {"points": 10, "coupons": [{"template_id": template["id"], "quantity": 2}]}
    silver = await add_tier(client, admin, "silver", 1, 1000, upgrade_gift=gift)
    # a gift written before coupons existed names a template the API no longer accepts: it is skipped
    legacy = {**gift, "coupons": [*gift["coupons"], {"template": "legacy-name"}]}
    await Tier.filter(id=silver["id"]).update(upgrade_gift=legacy)
    member_id = await new_member(client, admin, merchant_id=demo.merchant.id, phone="13900000401")
    for key in ("g1", "g1", "g2"):
        await add_growth(
            merchant_id=demo.merchant.id,
            member_id=member_id,
            delta=600,
            kind="activity",
            reason="t",
            idempotency_key=key,
        )
    coupons = await Coupon.filter(member_id=member_id, template_id=template["id"])
    assert len(coupons) == 2 and {c.channel for c in coupons} == {"gift"}
