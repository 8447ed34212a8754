"""A merchant made by create-merchant gets its WeChat accounts by the owner API or the CLI, checked by a test call."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from models.kernel.inbound import InboundEvent
from models.tenancy.merchants import WechatAccount
from server.__main__ import ACCOUNT_FILE_OPTIONS, ACCOUNT_OPTIONS, set_wechat_account
from tests.conftest import login
from tests.helpers import OTHER_OWNER_PASSWORD, add_staff, error_of, other_merchant
from wechat.emulator import KEYS_DIR, MERCHANT_SERIAL_NO, PLATFORM_PUBLIC_KEY_ID

EMU = "/_emulator"
OA = {
    "appid": "wx11112222acme0001",
    "secret": "acme-oa-secret-value",
    "token": "acmetoken42",
    "encoding_aes_key": "Zyxwvutsrqponmlkjihgfedcba9876543210ABCDEFG",
    "api_base": "emulator",
}
MP = {"appid": "wx11112222acme0002", "secret": "acme-mp-secret-value", "api_base": "emulator"}
PAY = {
    "mch_id": "1900000777",
    "api_v3_key": "acme-pay-v3-key-0123456789abcdef",
    "api_key": "acme-pay-v2-key-0123456789abcdef",
    "cert_serial_no": MERCHANT_SERIAL_NO,
    "private_key": (KEYS_DIR / "merchant_private_key.pem").read_text(),
    "platform_public_key_id": PLATFORM_PUBLIC_KEY_ID,
    "platform_public_key": (KEYS_DIR / "platform_public_key.pem").read_text(),
    "api_base": "emulator",
}
SECRET_VALUES = (OA["secret"], OA["encoding_aes_key"], MP["secret"], PAY["api_v3_key"], PAY["api_key"], "PRIVATE KEY")


async def _register_in_emulator(client) -> None:
    """What the merchant's WeChat console holds: the emulator knows the new appids and mch_id."""
    for body in (
        {k: OA[k] for k in ("appid", "secret", "token", "encoding_aes_key")},
        {"appid": MP["appid"], "secret": MP["secret"]},
        {"mch_id": PAY["mch_id"], "api_key": PAY["api_key"], "api_v3_key": PAY["api_v3_key"]},
    ):
        assert (await client.post(f"{EMU}/control/accounts", json=body)).status_code == 200


async def _acme(client) -> tuple[int, dict[str, str]]:
    acme = await other_merchant("acme")
    await _register_in_emulator(client)
    return acme.merchant.id, await login(client, "acme-owner", OTHER_OWNER_PASSWORD)


async def test_owner_sets_each_kind_and_no_secret_is_ever_shown_or_stored_in_plaintext(client):
    merchant_id, owner = await _acme(client)
    assert (await client.get("/api/wechat-accounts", headers=owner)).json() == {"items": []}
    answers = []
    for kind, body in (("official", OA), ("miniprogram", MP), ("pay", PAY)):
        response = await client.put(f"/api/wechat-accounts/{kind}", json=body, headers=owner)
        assert response.status_code == 200, response.text
        assert response.json()["kind"] == kind
        answers.append(response.text)
    listed = await client.get("/api/wechat-accounts", headers=owner)
    answers.append(listed.text)
    items = {item["kind"]: item for item in listed.json()["items"]}
    assert items["official"]["appid"] == OA["appid"]
    assert items["official"]["secrets_set"] == {"secret": True, "token": True, "encoding_aes_key": True}
    assert items["pay"]["mch_id"] == PAY["mch_id"] and items["pay"]["api_version"] == "v3"
    assert all(items["pay"]["secrets_set"].values())
    rows = await WechatAccount.filter(merchant_id=merchant_id)
    assert len(rows) == 3
    for text in answers + [row.secrets_enc for row in rows]:
        assert not any(value in text for value in SECRET_VALUES), text
    pay = next(row for row in rows if row.kind == "pay")
    assert pay.secrets()["private_key"].strip() == PAY["private_key"].strip()  # decrypts to what was uploaded


async def test_a_push_to_the_new_official_account_reaches_its_merchant(client):
    merchant_id, owner = await _acme(client)
    assert (await client.put("/api/wechat-accounts/official", json=OA, headers=owner)).status_code == 200
    fired = await client.post(
        f"{EMU}/control/oa-event", json={"appid": OA["appid"], "openid": "o_acme_1", "event": "subscribe"}
    )
    assert fired.status_code == 200, fired.text
    assert fired.json()["deliveries"][0]["status"] == 200
    event = await InboundEvent.get(openid="o_acme_1")
    assert (event.merchant_id, event.appid) == (merchant_id, OA["appid"])


async def test_refused_credentials_are_422_with_wechats_error_and_nothing_is_saved(client):
    _, owner = await _acme(client)
    wrong = await client.put("/api/wechat-accounts/official", json={**OA, "secret": "not-the-secret"}, headers=owner)
    assert wrong.status_code == 422, wrong.text
    error = error_of(wrong)
    assert (error["code"], error["errcode"]) == ("wechat.credentials_rejected", 40125)
    fault = {"path": "/v3/certificates", "status": 401, "errcode": "SIGN_ERROR", "errmsg": "签名错误"}
    assert (await client.post(f"{EMU}/control/fail-next", json=fault)).status_code == 200
    refused = await client.put("/api/wechat-accounts/pay", json=PAY, headers=owner)
    assert refused.status_code == 422, refused.text
    assert error_of(refused)["errcode"] == "SIGN_ERROR"
    other_key = (KEYS_DIR / "merchant_public_key.pem").read_text()  # not the key WeChat Pay signs with
    unverified = await client.put(
        "/api/wechat-accounts/pay", json={**PAY, "platform_public_key": other_key}, headers=owner
    )
    assert unverified.status_code == 422, unverified.text
    assert "does not verify" in error_of(unverified)["message"]
    bad_format = await client.put("/api/wechat-accounts/pay", json={**PAY, "private_key": "nope"}, headers=owner)
    assert bad_format.status_code == 422
    assert error_of(bad_format)["field"] == "private_key"
    assert (await client.get("/api/wechat-accounts", headers=owner)).json() == {"items": []}
    assert await WechatAccount.filter(mch_id=PAY["mch_id"]).count() == 0


async def test_only_the_owner_may_see_or_set_accounts(client, admin, demo):
    for role in ("hq_admin", "store_manager", "cashier", "marketer"):
        store_id = None if role in ("hq_admin", "marketer") else demo.store.id
        headers = await add_staff(client, admin, username=f"wx-{role}", role=role, store_id=store_id)
        assert (await client.get("/api/wechat-accounts", headers=headers)).status_code == 403
        put = await client.put("/api/wechat-accounts/miniprogram", json=MP, headers=headers)
        assert put.status_code == 403, put.text
    assert (await client.get("/api/wechat-accounts")).status_code == 401


async def test_another_merchants_appid_or_a_second_account_of_a_kind_is_409(client, demo):
    _, owner = await _acme(client)
    demo_appid = (await WechatAccount.get(merchant_id=demo.merchant.id, kind="official")).appid
    taken = await client.put("/api/wechat-accounts/official", json={**OA, "appid": demo_appid}, headers=owner)
    assert taken.status_code == 409, taken.text
    assert error_of(taken)["code"] == "wechat.account_taken"
    assert (await client.put("/api/wechat-accounts/miniprogram", json=MP, headers=owner)).status_code == 200
    again = await client.put("/api/wechat-accounts/miniprogram", json={**MP, "secret": "rotated"}, headers=owner)
    assert again.status_code == 422  # same appid, the emulator still holds the old secret: a rotation is checked
    second = await client.put(
        "/api/wechat-accounts/miniprogram", json={**MP, "appid": "wx11112222acme0009"}, headers=owner
    )
    assert second.status_code == 409
    assert error_of(second)["code"] == "wechat.account_exists"


def _args(**fields: str) -> argparse.Namespace:
    values: dict[str, str | None] = {name: None for name in ACCOUNT_OPTIONS}
    values |= {f"{name}_file": None for name in ACCOUNT_FILE_OPTIONS}
    return argparse.Namespace(from_file=None, **(values | fields))


async def test_the_cli_sets_accounts_from_a_file_and_pem_paths_and_prints_no_secret(client, app, tmp_path, capsys):
    merchant_id, _ = await _acme(client)
    creds = tmp_path / "oa.json"
    creds.write_text(json.dumps(OA))
    args = _args(merchant="acme", kind="official")
    args.from_file = str(creds)
    assert await set_wechat_account(args, app.ctx.settings, app.ctx.wechat) == 0
    pay_fields = {k: v for k, v in PAY.items() if k not in ACCOUNT_FILE_OPTIONS and k != "platform_public_key"}
    pay_args = _args(merchant="acme", kind="pay", **pay_fields)
    pay_args.private_key_file = str(KEYS_DIR / "merchant_private_key.pem")
    pay_args.platform_public_key_file = str(KEYS_DIR / "platform_public_key.pem")
    assert await set_wechat_account(pay_args, app.ctx.settings, app.ctx.wechat) == 0
    wrong = _args(merchant="acme", kind="miniprogram", appid=MP["appid"], secret="wrong", api_base="emulator")
    assert await set_wechat_account(wrong, app.ctx.settings, app.ctx.wechat) == 1
    out = capsys.readouterr()
    assert f"official {OA['appid']} saved" in out.out and f"pay {PAY['mch_id']} saved" in out.out
    assert "40125" in out.err
    assert not any(value in out.out + out.err for value in SECRET_VALUES)
    kinds = set(await WechatAccount.filter(merchant_id=merchant_id).values_list("kind", flat=True))
    assert kinds == {"official", "pay"}


def _platform_certificate() -> str:
    """A certificate of the emulator's platform key, as WeChat Pay's platform certificates are."""
    key = serialization.load_pem_private_key((KEYS_DIR / "platform_private_key.pem").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x5157F09EFDC096DE15EBE81A47057A7232F8EBB7)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def test_a_platform_certificate_may_be_uploaded_instead_of_the_public_key(client):
    merchant_id, owner = await _acme(client)
    body = {k: v for k, v in PAY.items() if not k.startswith("platform_public_key")}
    response = await client.put(
        "/api/wechat-accounts/pay", json={**body, "platform_certificate": _platform_certificate()}, headers=owner
    )
    assert response.status_code == 200, response.text
    stored = (await WechatAccount.get(merchant_id=merchant_id, kind="pay")).secrets()
    assert stored["platform_public_key_id"] == "5157F09EFDC096DE15EBE81A47057A7232F8EBB7"
    assert stored["platform_public_key"].strip() == (KEYS_DIR / "platform_public_key.pem").read_text().strip()


async def test_the_official_account_s_message_mode_decides_which_pushes_are_taken(client):
    _, owner = await _acme(client)
    assert (await client.put("/api/wechat-accounts/official", json=OA, headers=owner)).json()["message_mode"] == "safe"
    push = {"appid": OA["appid"], "openid": "o_acme_plain", "event": "subscribe", "mode": "plaintext"}
    refused = await client.post(f"{EMU}/control/oa-event", json=push)
    assert refused.json()["deliveries"][0]["status"] == 403  # safe mode: a plaintext push proves nothing
    bad = await client.put("/api/wechat-accounts/official", json={**OA, "message_mode": "aes"}, headers=owner)
    assert bad.status_code == 422
    plain = await client.put("/api/wechat-accounts/official", json={**OA, "message_mode": "plaintext"}, headers=owner)
    assert plain.status_code == 200 and plain.json()["message_mode"] == "plaintext"
    listed = {a["kind"]: a for a in (await client.get("/api/wechat-accounts", headers=owner)).json()["items"]}
    assert listed["official"]["message_mode"] == "plaintext"
    taken = await client.post(f"{EMU}/control/oa-event", json=push)
    assert taken.json()["deliveries"][0]["status"] == 200
    assert await InboundEvent.filter(openid="o_acme_plain").count() == 1


async def test_without_api_base_a_development_server_checks_against_its_emulator(client):
    _, owner = await _acme(client)
    body = {k: v for k, v in MP.items() if k != "api_base"}
    answer = await client.put("/api/wechat-accounts/miniprogram", json=body, headers=owner)
    assert answer.status_code == 200, answer.text  # not a 503 from trying to reach api.weixin.qq.com
    assert answer.json()["api_base"] == "emulator"
