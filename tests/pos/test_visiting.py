"""A chain member served at another store's till: found by QR or card, quoted and settled with a till ticket."""

from __future__ import annotations

from datetime import timedelta

from models.pos.tickets import TICKET_TTL
from tests.helpers import add_member, add_staff, add_store, error_of
from tests.pos.test_api_keys import api_key, new_key
from tests.pos.test_lookup import lookup, mp_qr


def _order(store_id: int, member_id: int, **extra: object) -> dict:
    return {
        "store_id": store_id,
        "member_id": member_id,
        "items": [{"sku": "LATTE", "name": "Latte", "unit_price": 3200, "quantity": 1}],
        **extra,
    }


async def test_a_member_of_another_store_is_served_with_the_ticket_of_their_qr(client, admin, demo, pinned):
    member_id, qr = await mp_qr(client, "mp_visitor", demo.store.code)  # joined at the demo store
    store_b = await add_store(client, admin, code="S801")
    till_b = api_key((await new_key(client, admin, store_b))["key"])
    cashier_b = await add_staff(client, admin, username="cash_b", role="cashier", store_id=store_b)
    change = {"delta": 500, "reason": "x", "idempotency_key": "v1"}
    assert (await client.post(f"/api/members/{member_id}/points", json=change, headers=admin)).status_code == 200

    found = (await lookup(client, till_b, qr=qr)).json()
    assert (found["member_id"], found["visiting"], found["points"]) == (member_id, True, 500)
    ticket = found["member_ticket"]

    # without the ticket the till of store B does not see this member: nothing quoted, nothing written
    bare = await client.post("/api/pos/quote", json=_order(store_b, member_id), headers=till_b)
    assert (bare.status_code, error_of(bare)["code"]) == (404, "member.not_found")
    quoted = await client.post("/api/pos/quote", json=_order(store_b, member_id, member_ticket=ticket), headers=till_b)
    assert (quoted.status_code, quoted.json()["due"]) == (200, 3200), quoted.text

    order = _order(
        store_b,
        member_id,
        member_ticket=ticket,
        points=100,
        idempotency_key="visit-1",
        payments=[{"method": "cash", "amount": 2200}],
    )
    settled = await client.post("/api/pos/orders", json=order, headers=till_b)
    assert settled.status_code == 201, settled.text
    body = settled.json()
    assert (body["store_id"], body["member_id"], body["points_used"]) == (store_b, member_id, 100)
    # the order is store B's: its till reads it and takes a return without the ticket
    assert (await client.get(f"/api/pos/orders/{body['id']}", headers=till_b)).status_code == 200
    back = {"items": [{"sku": "LATTE", "quantity": 1}], "idempotency_key": "visit-ret-1"}
    returned = await client.post(f"/api/pos/orders/{body['id']}/returns", json=back, headers=till_b)
    assert (returned.status_code, returned.json()["points_back"]) == (201, 100), returned.text

    # a cashier of store B gets a ticket the same way; it is bound to the store, the member and 30 minutes
    cashier_ticket = (await lookup(client, cashier_b, qr=qr)).json()["member_ticket"]
    other_member = await add_member(client, admin, name="Else", phone="13800007777", store_id=demo.store.id)
    store_c = await add_store(client, admin, code="S802")
    till_c = api_key((await new_key(client, admin, store_c))["key"])
    wrong = [
        (till_b, _order(store_b, other_member["id"], member_ticket=cashier_ticket)),  # another member
        (till_c, _order(store_c, member_id, member_ticket=cashier_ticket)),  # another store's till
        (till_b, _order(store_b, member_id, member_ticket=cashier_ticket[:-2] + "AA")),  # forged
        (till_b, _order(store_b, member_id, member_ticket="garbage")),
    ]
    for headers, bad in wrong:
        refused = await client.post("/api/pos/quote", json=bad, headers=headers)
        assert (refused.status_code, error_of(refused)["code"]) == (403, "pos.ticket_invalid"), bad
    # the ticket does not open another store's orders: a store-B ticket for an order of store C
    elsewhere = await client.post(
        "/api/pos/quote", json=_order(store_c, member_id, member_ticket=cashier_ticket), headers=cashier_b
    )
    assert (elsewhere.status_code, error_of(elsewhere)["code"]) == (403, "auth.store_scope")
    pinned[0] += timedelta(seconds=TICKET_TTL + 1)
    expired = await client.post(  # (the cashier's login has expired too: store B's till asks)
        "/api/pos/quote", json=_order(store_b, member_id, member_ticket=cashier_ticket), headers=till_b
    )
    assert (expired.status_code, error_of(expired)["code"]) == (403, "pos.ticket_invalid")


async def test_by_phone_a_member_of_another_store_stays_hidden(client, admin, demo):
    """A phone number is no proof the member is at this till: no ticket, the usual 404."""
    await add_member(client, admin, name="Home", phone="13800008888", store_id=demo.store.id)
    store_b = await add_store(client, admin, code="S803")
    till_b = api_key((await new_key(client, admin, store_b))["key"])
    hidden = await lookup(client, till_b, phone="13800008888")
    assert (hidden.status_code, error_of(hidden)["code"]) == (404, "member.not_found")
