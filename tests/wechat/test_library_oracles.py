"""Our signatures and ciphers agree with wechatpy (v2, OA) and wechatpayv3 (v3) on random inputs.

The official vectors pin a few fixed points; these properties check the same functions against the
reference SDKs of the design card over many generated inputs.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from wechatpayv3.utils import aes_decrypt, load_private_key, rsa_sign
from wechatpy.crypto import WeChatCrypto
from wechatpy.pay.utils import calculate_signature, calculate_signature_hmac

from wechat.crypto import OACrypto
from wechat.paysign import v2_sign, v3_aead_encrypt, v3_request_message, v3_sign_message, v3_verify

KEYS = Path(__file__).resolve().parents[2] / "wechat" / "emulator" / "keys"
PRIVATE_PEM = (KEYS / "merchant_private_key.pem").read_text()
PUBLIC_PEM = (KEYS / "merchant_public_key.pem").read_text()
FIELD = st.text(
    alphabet=st.characters(min_codepoint=48, max_codepoint=122, categories=["L", "N"]), min_size=1, max_size=12
)
VALUE = st.text(min_size=0, max_size=30).filter(lambda v: "&" not in v and "=" not in v)


@settings(max_examples=200, deadline=None)
@given(
    params=st.dictionaries(FIELD, VALUE, min_size=1, max_size=8),
    key=st.text(min_size=32, max_size=32, alphabet="abcdefghijklmnopqrstuvwxyz0123456789"),
)
def test_pay_v2_signs_match_wechatpy(params, key):
    params = {k: v for k, v in params.items() if k != "sign"}
    assume(any(params.values()))  # a request with no fields at all is degenerate; the SDKs differ on "&key="
    assert v2_sign(params, key=key, sign_type="MD5") == calculate_signature(params, key)
    assert v2_sign(params, key=key, sign_type="HMAC-SHA256") == calculate_signature_hmac(params, key)


@settings(max_examples=50, deadline=None)
@given(
    path=st.from_regex(r"/v3/[a-z/_-]{1,40}", fullmatch=True),
    body=st.text(max_size=200),
    nonce=st.text(alphabet="ABCDEF0123456789", min_size=32, max_size=32),
)
def test_pay_v3_request_signature_matches_wechatpayv3(path, body, nonce):
    message = v3_request_message(method="POST", url_path=path, timestamp="1700000000", nonce=nonce, body=body)
    ours = v3_sign_message(private_key_pem=PRIVATE_PEM, message=message)
    assert ours == rsa_sign(load_private_key(PRIVATE_PEM), message)  # PKCS#1 v1.5 is deterministic
    assert v3_verify(
        public_key_pem=PUBLIC_PEM,
        timestamp="1700000000",
        nonce=nonce,
        body=body,
        signature=rsa_sign(load_private_key(PRIVATE_PEM), f"1700000000\n{nonce}\n{body}\n"),
    )


@settings(max_examples=100, deadline=None)
@given(
    plaintext=st.text(max_size=300),
    associated=st.text(alphabet="abcdefgh", max_size=20),
    nonce=st.text(alphabet="abcdefghijkl0123456789", min_size=12, max_size=12),
)
def test_pay_v3_resource_encryption_is_what_wechatpayv3_decrypts(plaintext, associated, nonce):
    key = "0123456789abcdef0123456789abcdef"
    sealed = v3_aead_encrypt(api_v3_key=key, nonce=nonce, associated_data=associated, plaintext=plaintext)
    assert aes_decrypt(nonce, sealed, associated, key) == plaintext


@settings(max_examples=100, deadline=None)
@given(xml_text=st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=200))
def test_oa_safe_mode_round_trips_through_wechatpy(xml_text):
    aes_key = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    ours = OACrypto(token="tok", encoding_aes_key=aes_key, appid="wx1234567890abcdef")
    theirs = WeChatCrypto("tok", aes_key, "wx1234567890abcdef")
    message = f"<xml><Content><![CDATA[{xml_text.replace(']]>', '')}]]></Content></xml>"
    encrypt, signature = ours.encrypt(message, nonce="n1", timestamp="1700000000")
    wrapped = f"<xml><ToUserName><![CDATA[gh]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    assert theirs.decrypt_message(wrapped, signature, "1700000000", "n1") == message
    reply = theirs.encrypt_message(message, "n2", "1700000001")
    from wechat.xmlutil import parse_xml

    fields = parse_xml(reply)
    assert (
        ours.decrypt(
            encrypt=fields["Encrypt"], msg_signature=fields["MsgSignature"], timestamp="1700000001", nonce="n2"
        )
        == message
    )
