"""OA / mini-program crypto and XML helpers checked against the official sample vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.wechat.vectordata import (
    VECTORS,
    by_id,
    flip_last_char,
    load,
    tamper_last_block,
    vectors,
)
from wechat.crypto import (
    OACrypto,
    check_oa_signature,
    check_wxa_rawdata_signature,
    sha1_signature,
    wxa_decrypt,
    wxa_encrypt,
    wxa_rawdata_signature,
)
from wechat.errors import (
    WeChatAPIError,
    WeChatCryptoError,
    WeChatSignatureError,
)
from wechat.xmlutil import parse_xml

SHARED_VECTORS = Path(__file__).resolve().parents[3] / "shared" / "wechat-vectors"
CRYPTO_FILES = (
    "oa-signature.json",
    "oa-crypto.json",
    "miniprogram-crypto.json",
    "pay-v2-sign.json",
    "refund-v2.json",
    "pay-v3.json",
)
HANDLED_KINDS = {
    "sha1_sorted",
    "oa_msg_decrypt",
    "oa_encrypt_fixed_random",
    "oa_encrypt_message_fixed_random",
    "wecom_echostr_verify",
    "wxa_decrypt",
    "aes_cbc_encrypt",
    "wxa_rawdata_signature",
    "pay_v2_sign",
    "refund_req_info_decrypt",
    "v3_notify",
    "v3_aead",
    "rsa_sha256_sign",
    "v3_cert_decrypt",
}
# Computed by the vector author from this echostr, recorded in the vector's notes.
WECOM_ECHOSTR_PLAIN = "5927782489442352469"


def test_in_repo_vectors_equal_shared_copy() -> None:
    if not SHARED_VECTORS.is_dir():
        pytest.skip("../shared/wechat-vectors not present")
    shared = {p.name: p.read_bytes() for p in SHARED_VECTORS.iterdir() if p.is_file()}
    ours = {p.name: p.read_bytes() for p in VECTORS.iterdir() if p.is_file()}
    assert ours == shared


def test_every_verified_vector_is_exercised() -> None:
    for name in CRYPTO_FILES:
        for v in load(name)["vectors"]:
            if v.get("verified") is True:
                assert v["kind"] in HANDLED_KINDS, (name, v["id"])
    verified_items = {i["id"] for i in load("notify-protocol.json")["items"] if i.get("verified")}
    # v2 ack XML is tested below; the v3 ack is an HTTP status + JSON rule with no function here.
    assert verified_items == {"pay_v2_notify_ack", "pay_v3_notify_ack"}


# --- official account: URL signature and safe-mode crypto -------------------------------------


@pytest.mark.parametrize("v", vectors("oa-signature.json", "sha1_sorted"))
def test_sha1_sorted_signature(v: dict[str, Any]) -> None:
    assert sha1_signature(*v["parts"]) == v["expected_signature"]
    assert sha1_signature(*reversed(v["parts"])) == v["expected_signature"]
    if "token" in v:
        args = {"token": v["token"], "timestamp": v["timestamp"], "nonce": v["nonce"]}
        assert check_oa_signature(signature=v["expected_signature"], **args) is True
        assert check_oa_signature(signature=v["negative"]["signature"], **args) is False
        assert check_oa_signature(signature="", **args) is False


def oa_crypto(v: dict[str, Any], appid: str | None = None) -> OACrypto:
    """Build OACrypto from a vector."""
    return OACrypto(
        token=v["token"],
        encoding_aes_key=v["encoding_aes_key"],
        appid=appid or v.get("appid") or v["receive_id"],
    )


@pytest.mark.parametrize("v", vectors("oa-crypto.json", "oa_msg_decrypt"))
def test_oa_decrypt(v: dict[str, Any]) -> None:
    body = parse_xml(v["post_xml"])
    args = {"timestamp": v["timestamp"], "nonce": v["nonce"]}
    plaintext = oa_crypto(v).decrypt(encrypt=body["Encrypt"], msg_signature=v["msg_signature"], **args)
    if "expected_plaintext" in v:
        assert plaintext == v["expected_plaintext"]
    fields = parse_xml(plaintext)
    for key, value in v.get("expected_fields", {}).items():
        assert fields[key] == value
    if "MsgType" in body:  # compatible mode: plaintext fields sit beside <Encrypt>
        assert {k: x for k, x in body.items() if k != "Encrypt"} == fields


@pytest.mark.parametrize("v", vectors("oa-crypto.json", "oa_msg_decrypt"))
def test_oa_decrypt_rejects_tampering(v: dict[str, Any]) -> None:
    encrypt = parse_xml(v["post_xml"])["Encrypt"]
    crypto = oa_crypto(v)
    ts, nonce, sig = v["timestamp"], v["nonce"], v["msg_signature"]
    with pytest.raises(WeChatSignatureError):
        crypto.decrypt(
            encrypt=encrypt,
            msg_signature=flip_last_char(sig),
            timestamp=ts,
            nonce=nonce,
        )
    with pytest.raises(WeChatSignatureError):
        crypto.decrypt(encrypt=encrypt, msg_signature=sig, timestamp=ts, nonce=nonce + "1")
    with pytest.raises(WeChatSignatureError):
        crypto.decrypt(
            encrypt=tamper_last_block(encrypt),
            msg_signature=sig,
            timestamp=ts,
            nonce=nonce,
        )
    with pytest.raises(WeChatCryptoError, match="appid"):
        oa_crypto(v, appid="wx0000000000000000").decrypt(encrypt=encrypt, msg_signature=sig, timestamp=ts, nonce=nonce)
    # Even with a correctly re-signed ciphertext, a damaged last block must not decrypt.
    forged = tamper_last_block(encrypt)
    forged_sig = crypto.signature(timestamp=ts, nonce=nonce, encrypt=forged)
    with pytest.raises(WeChatCryptoError):
        crypto.decrypt(encrypt=forged, msg_signature=forged_sig, timestamp=ts, nonce=nonce)
    junk_sig = crypto.signature(timestamp=ts, nonce=nonce, encrypt="not base64!")
    with pytest.raises(WeChatCryptoError):
        crypto.decrypt(encrypt="not base64!", msg_signature=junk_sig, timestamp=ts, nonce=nonce)


@pytest.mark.parametrize("v", vectors("oa-crypto.json", "oa_encrypt_fixed_random"))
def test_oa_encrypt_fixed_random(v: dict[str, Any]) -> None:
    crypto = oa_crypto(v)
    encrypt, msg_signature = crypto.encrypt(
        v["plaintext"],
        nonce="42",
        timestamp="1409735669",
        random16=v["random"].encode(),
    )
    assert encrypt == v["expected_encrypt"]
    assert msg_signature == sha1_signature(v["token"], "1409735669", "42", v["expected_encrypt"])
    back = crypto.decrypt(encrypt=encrypt, msg_signature=msg_signature, timestamp="1409735669", nonce="42")
    assert back == v["plaintext"]


@pytest.mark.parametrize("v", vectors("oa-crypto.json", "oa_encrypt_message_fixed_random"))
def test_oa_encrypt_reply_full_xml(v: dict[str, Any]) -> None:
    crypto = oa_crypto(v)
    reply = crypto.encrypt_reply(
        v["plaintext"],
        nonce=v["nonce"],
        timestamp=v["timestamp"],
        random16=v["random"].encode(),
    )
    assert reply == v["expected_xml"]
    fields = parse_xml(reply)
    assert (fields["TimeStamp"], fields["Nonce"]) == (v["timestamp"], v["nonce"])
    back = crypto.decrypt(
        encrypt=fields["Encrypt"],
        msg_signature=fields["MsgSignature"],
        timestamp=fields["TimeStamp"],
        nonce=fields["Nonce"],
    )
    assert back == v["plaintext"]


@pytest.mark.parametrize("v", vectors("oa-crypto.json", "wecom_echostr_verify"))
def test_wecom_echostr(v: dict[str, Any]) -> None:
    crypto = oa_crypto(v)
    args = {
        "encrypt": v["echostr"],
        "msg_signature": v["msg_signature"],
        "timestamp": v["timestamp"],
    }
    assert crypto.decrypt(nonce=v["nonce"], **args) == WECOM_ECHOSTR_PLAIN
    with pytest.raises(WeChatSignatureError):
        crypto.decrypt(nonce=v["negative"]["nonce"], **args)


def test_oa_build_encrypted_post_round_trip() -> None:
    v = by_id("oa-crypto.json", "oa_official_python_sample_decrypt")
    crypto = oa_crypto(v)
    xml = v["expected_plaintext"]
    body, params = crypto.build_encrypted_post(xml, nonce="777", timestamp="1700000000")
    fields = parse_xml(body)
    assert set(fields) == {"ToUserName", "Encrypt"}
    assert fields["ToUserName"] == "gh_10f6c3c3ac5a"
    assert params["encrypt_type"] == "aes"
    assert params["openid"] == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    assert params["signature"] == sha1_signature(v["token"], "1700000000", "777")
    assert check_oa_signature(
        token=v["token"],
        signature=params["signature"],
        timestamp="1700000000",
        nonce="777",
    )
    assert params["msg_signature"] == sha1_signature(v["token"], "1700000000", "777", fields["Encrypt"])
    back = crypto.decrypt(
        encrypt=fields["Encrypt"],
        msg_signature=params["msg_signature"],
        timestamp=params["timestamp"],
        nonce=params["nonce"],
    )
    assert back == xml


def test_oa_crypto_round_trip_random_and_bad_key() -> None:
    v = by_id("oa-crypto.json", "oa_wechatpy_decrypt_message")
    crypto = oa_crypto(v)
    message = "<xml><Content><![CDATA[会员 🎉 points]]></Content></xml>"
    first = crypto.encrypt(message, nonce="n", timestamp="1")
    second = crypto.encrypt(message, nonce="n", timestamp="1")
    assert first[0] != second[0]  # fresh random prefix each time
    assert crypto.decrypt(encrypt=first[0], msg_signature=first[1], timestamp="1", nonce="n") == message
    with pytest.raises(ValueError):
        OACrypto(token="t", encoding_aes_key="short", appid="wx")
    with pytest.raises(ValueError):
        crypto.encrypt(message, nonce="n", timestamp="1", random16=b"123")


@pytest.mark.parametrize("extra", [0, 1, 15, 16, 17, 31])
def test_oa_pads_to_32_byte_blocks(extra: int) -> None:
    v = by_id("oa-crypto.json", "oa_wechatpy_decrypt_message")
    crypto = oa_crypto(v)
    # random(16) + len(4) + msg + appid(18): pick msg so the total is 32 * k + extra bytes.
    message = "x" * (64 - 16 - 4 - len(v["appid"]) + extra)
    encrypt, msg_signature = crypto.encrypt(message, nonce="n", timestamp="1")
    key = base64.b64decode(v["encoding_aes_key"] + "=")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    raw = decryptor.update(base64.b64decode(encrypt)) + decryptor.finalize()
    assert len(raw) % 32 == 0
    assert raw[-1] == 32 - extra
    assert raw[-(32 - extra) :] == bytes([32 - extra]) * (32 - extra)
    back = crypto.decrypt(encrypt=encrypt, msg_signature=msg_signature, timestamp="1", nonce="n")
    assert back == message


# --- mini-program -------------------------------------------------------------------------------


@pytest.mark.parametrize("v", vectors("miniprogram-crypto.json", "wxa_decrypt"))
def test_wxa_decrypt(v: dict[str, Any]) -> None:
    keys = {"session_key": v["session_key"], "iv": v["iv"]}
    payload = wxa_decrypt(encrypted_data=v["encrypted_data"], appid=v["appid"], **keys)
    assert payload == json.loads(v["expected_plaintext"])
    assert wxa_encrypt(data=v["expected_plaintext"], **keys) == v["encrypted_data"]
    with pytest.raises(WeChatCryptoError, match="watermark"):
        wxa_decrypt(encrypted_data=v["encrypted_data"], appid="wx0000000000000000", **keys)
    with pytest.raises(WeChatCryptoError):
        wxa_decrypt(
            encrypted_data=tamper_last_block(v["encrypted_data"]),
            appid=v["appid"],
            **keys,
        )
    with pytest.raises(WeChatCryptoError):
        wxa_decrypt(encrypted_data="%%%", appid=v["appid"], **keys)


@pytest.mark.parametrize("v", vectors("miniprogram-crypto.json", "aes_cbc_encrypt"))
def test_wxa_aes_cbc(v: dict[str, Any]) -> None:
    keys = {"session_key": v["key_b64"], "iv": v["iv_b64"]}
    assert wxa_encrypt(data=v["plaintext"], **keys) == v["expected_b64"]
    with pytest.raises(WeChatCryptoError, match="JSON"):  # decrypts, but "" is not an object
        wxa_decrypt(encrypted_data=v["expected_b64"], appid="wx4f4bc4dec97d474b", **keys)


@pytest.mark.parametrize("v", vectors("miniprogram-crypto.json", "wxa_rawdata_signature"))
def test_wxa_rawdata_signature(v: dict[str, Any]) -> None:
    assert wxa_rawdata_signature(v["raw_data"], v["session_key"]) == v["expected_signature"]
    args = {"session_key": v["session_key"], "signature": v["expected_signature"]}
    assert check_wxa_rawdata_signature(raw_data=v["raw_data"], **args) is True
    assert check_wxa_rawdata_signature(raw_data=v["raw_data"].replace("Band", "Bond"), **args) is False


def test_wxa_round_trip_dict() -> None:
    keys = {"session_key": "tiihtNczf5v6AKRyjwEUhQ==", "iv": "r7BXXKkLb8qrSNn05n0qiA=="}
    data = {"phoneNumber": "13800000000", "watermark": {"appid": "wxA", "timestamp": 1}}
    assert wxa_decrypt(encrypted_data=wxa_encrypt(data=data, **keys), appid="wxA", **keys) == data


def test_api_error_keeps_code_and_message() -> None:
    error = WeChatAPIError(40001, "invalid credential")
    assert (error.errcode, error.errmsg) == (40001, "invalid credential")
    assert str(error) == "WeChat API error 40001: invalid credential"
