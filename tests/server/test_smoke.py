async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


async def test_login_and_me(client, admin):
    r = await client.get("/api/merchant", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["code"] == "demo"
