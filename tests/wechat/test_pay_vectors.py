"""WeChat Pay v2 / v3 signatures and payload crypto checked against the public sample vectors."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from wechatpy.pay.utils import calculate_signature as wechatpy_md5_signature

from tests.wechat.vectordata import by_id, flip_last_char, tamper_last_block, vectors
from wechat.errors import WeChatCryptoError
from wechat.paysign import (
    v2_decrypt_req_info,
    v2_encrypt_req_info,
    v2_jsapi_pay_params,
    v2_sign,
    v2_string_a,
    v2_verify,
    v3_aead_decrypt,
    v3_aead_encrypt,
    v3_jsapi_pay_params,
    v3_request_message,
    v3_response_message,
    v3_sign_message,
    v3_timestamp_is_fresh,
    v3_verify,
)
from wechat.xmlutil import parse_xml

# --- pay v2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", vectors("pay-v2-sign.json", "pay_v2_sign"))
def test_v2_sign(v: dict[str, Any]) -> None:
    params, key, sign_type = v["params"], v["api_key"], v["sign_type"]
    if "expected_string_a" in v:
        assert v2_string_a(params) == v["expected_string_a"]
    assert f"{v2_string_a(params)}&key={key}" == v["expected_string_sign_temp"]
    assert v2_sign(params, key=key, sign_type=sign_type) == v["expected_sign"]
    noisy = {**params, "sign": "IGNORED", "attach": "", "detail": None}
    assert v2_sign(noisy, key=key, sign_type=sign_type) == v["expected_sign"]
    signed = {**params, "sign": v["expected_sign"]}
    assert v2_verify(signed, key=key, sign_type=sign_type) is True
    assert v2_verify(signed, key=key + "x", sign_type=sign_type) is False
    first = next(iter(params))
    assert v2_verify({**signed, first: params[first] + "1"}, key=key, sign_type=sign_type) is False
    assert (
        v2_verify(
            {**signed, "sign": flip_last_char(v["expected_sign"])},
            key=key,
            sign_type=sign_type,
        )
        is False
    )
    assert v2_verify(params, key=key, sign_type=sign_type) is False  # no sign at all


@pytest.mark.parametrize(
    "v",
    [p for p in vectors("pay-v2-sign.json", "pay_v2_sign") if "package" in p.values[0]["params"]],
)
def test_v2_jsapi_pay_params(v: dict[str, Any]) -> None:
    params = v["params"]
    result = v2_jsapi_pay_params(
        appid=params["appId"],
        prepay_id=params["package"].removeprefix("prepay_id="),
        key=v["api_key"],
        sign_type=v["sign_type"],
        nonce_str=params["nonceStr"],
        timestamp=params["timeStamp"],
    )
    assert result == {**params, "paySign": v["expected_sign"]}


def test_v2_verify_hmac_notify_where_md5_only_check_fails() -> None:
    v = by_id("pay-v2-sign.json", "pay_v2_official_doc_hmac_sha256")
    key = v["api_key"]
    notify = {
        **v["params"],
        "sign_type": "HMAC-SHA256",
        "result_code": "SUCCESS",
        "total_fee": 1,
    }
    notify["sign"] = v2_sign(notify, key=key, sign_type="HMAC-SHA256")
    assert len(notify["sign"]) == 64
    assert v2_verify(notify, key=key) is True  # sign_type read from the notify itself
    assert v2_verify(notify, key=key, sign_type="MD5") is False
    unsigned = {k: x for k, x in notify.items() if k != "sign"}
    assert wechatpy_md5_signature(unsigned, key) != notify["sign"]  # wechatpy 1.8.18 would reject
    assert v2_verify({**notify, "total_fee": 100}, key=key) is False
    assert v2_verify({**notify, "sign_type": "SHA1"}, key=key) is False
    with pytest.raises(ValueError):
        v2_sign(notify, key=key, sign_type="SHA1")


@pytest.mark.parametrize("v", vectors("refund-v2.json", "refund_req_info_decrypt"))
def test_v2_refund_req_info(v: dict[str, Any]) -> None:
    outer = parse_xml(v["notify_xml"])
    assert (outer["appid"], outer["mch_id"], "sign" in outer) == (
        v["appid"],
        v["mch_id"],
        False,
    )
    root_xml = v2_decrypt_req_info(outer["req_info"], api_key=v["api_key"])
    fields = parse_xml(root_xml)
    for key, value in v["expected_fields"].items():
        assert fields[key] == value
    assert v2_encrypt_req_info(root_xml, api_key=v["api_key"]) == outer["req_info"]  # ECB: exact
    with pytest.raises(WeChatCryptoError):
        v2_decrypt_req_info(outer["req_info"], api_key=v["api_key"].upper())
    with pytest.raises(WeChatCryptoError):
        v2_decrypt_req_info(tamper_last_block(outer["req_info"]), api_key=v["api_key"])


# --- pay v3 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("v", vectors("pay-v3.json", "v3_notify"))
def test_v3_notify(v: dict[str, Any]) -> None:
    headers, body, cert = v["headers"], v["body"], v["platform_certificate_pem"]
    ts, nonce, sig = (
        headers["Wechatpay-Timestamp"],
        headers["Wechatpay-Nonce"],
        headers["Wechatpay-Signature"],
    )
    assert v3_response_message(timestamp=ts, nonce=nonce, body=body) == v["expected_signed_message"].encode()
    public_pem = (
        x509.load_pem_x509_certificate(cert.encode())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for key_pem in (cert, public_pem):
        for raw in (body, body.encode()):
            assert v3_verify(
                public_key_pem=key_pem,
                timestamp=ts,
                nonce=nonce,
                body=raw,
                signature=sig,
            )
    bad = {
        "public_key_pem": cert,
        "timestamp": ts,
        "nonce": nonce,
        "body": body,
        "signature": sig,
    }
    assert v3_verify(**{**bad, "body": body.replace("签约成功", "签约失败")}) is False
    assert v3_verify(**{**bad, "body": body + " "}) is False
    assert v3_verify(**{**bad, "timestamp": str(int(ts) + 1)}) is False
    assert v3_verify(**{**bad, "nonce": nonce[:-1]}) is False
    assert v3_verify(**{**bad, "signature": "A" + sig[1:]}) is False
    assert v3_verify(**{**bad, "signature": "not base64!"}) is False
    assert v3_timestamp_is_fresh(ts, now=int(ts) + 300) is True
    assert v3_timestamp_is_fresh(ts, now=int(ts) + 301) is False
    resource = json.loads(body)["resource"]
    args = {
        "api_v3_key": v["apiv3_key"],
        "nonce": resource["nonce"],
        "ciphertext": resource["ciphertext"],
    }
    plain = v3_aead_decrypt(associated_data=resource["associated_data"], **args)
    assert plain.decode() == v["expected_plaintext"]
    with pytest.raises(WeChatCryptoError):
        v3_aead_decrypt(associated_data="transaction", **args)


@pytest.mark.parametrize("v", vectors("pay-v3.json", "v3_aead"))
def test_v3_aead(v: dict[str, Any]) -> None:
    args = {
        "api_v3_key": v["apiv3_key"],
        "nonce": v["nonce"],
        "associated_data": v["associated_data"],
    }
    assert v3_aead_decrypt(ciphertext=v["ciphertext"], **args) == v["expected_plaintext"].encode()
    assert v3_aead_encrypt(plaintext=v["expected_plaintext"], **args) == v["ciphertext"]
    with pytest.raises(WeChatCryptoError):
        v3_aead_decrypt(ciphertext=tamper_last_block(v["ciphertext"]), **args)
    with pytest.raises(WeChatCryptoError):
        v3_aead_decrypt(ciphertext=v["ciphertext"], **{**args, "associated_data": "x"})


@pytest.mark.parametrize("v", vectors("pay-v3.json", "rsa_sha256_sign"))
def test_v3_sign_message(v: dict[str, Any]) -> None:
    signature = v3_sign_message(private_key_pem=v["private_key_pem"], message=v["message"])
    assert signature == v["expected_signature"]
    cert = by_id("pay-v3.json", "v3_notify_full_wechatpay_go")["platform_certificate_pem"]
    public_key = x509.load_pem_x509_certificate(cert.encode()).public_key()
    public_key.verify(base64.b64decode(signature), b"source", padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("v", vectors("pay-v3.json", "v3_cert_decrypt"))
def test_v3_certificate_download_decrypt(v: dict[str, Any]) -> None:
    pem = v3_aead_decrypt(
        api_v3_key=v["apiv3_key"],
        nonce=v["nonce"],
        associated_data=v["associated_data"],
        ciphertext=v["ciphertext"],
    )
    cert = x509.load_pem_x509_certificate(pem)
    assert f"{cert.serial_number:X}" == v["expected_serial_no"]
    assert cert.not_valid_before_utc == datetime.fromisoformat(v["expected_effective_time"])
    assert cert.not_valid_after_utc == datetime.fromisoformat(v["expected_expire_time"])


def test_v3_request_message_and_jsapi_pay_params() -> None:
    message = v3_request_message(
        method="get",
        url_path="/v3/certificates",
        timestamp="1554208460",
        nonce="593BEC0C",
        body="",
    )
    assert message == "GET\n/v3/certificates\n1554208460\n593BEC0C\n\n"
    key_pem = by_id("pay-v3.json", "v3_rsa_sha256_sign_wechatpay_go")["private_key_pem"]
    fmt = by_id("pay-v3.json", "v3_jsapi_paysign_format")["message_format"].replace("\\n", "\n")
    pay = v3_jsapi_pay_params(
        appid="wxd678efh567hg6787",
        prepay_id="wx2017",
        private_key_pem=key_pem,
        nonce_str="5K8264",
        timestamp="1414561699",
    )
    assert {k: x for k, x in pay.items() if k != "paySign"} == {
        "appId": "wxd678efh567hg6787",
        "timeStamp": "1414561699",
        "nonceStr": "5K8264",
        "package": "prepay_id=wx2017",
        "signType": "RSA",
    }
    signed = fmt.format(**pay)
    assert signed == "wxd678efh567hg6787\n1414561699\n5K8264\nprepay_id=wx2017\n"
    assert pay["paySign"] == v3_sign_message(private_key_pem=key_pem, message=signed)
