"""WeChat Pay signatures and payload crypto, API v2 (MD5 / HMAC-SHA256) and v3 (RSA, AES-GCM).

Unlike wechatpy 1.8.18, v2 verification honours sign_type=HMAC-SHA256 instead of always using MD5.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from functools import lru_cache

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509 import load_pem_x509_certificate

from wechat.crypto import b64decode_strict, constant_time_equals, pkcs7_pad, pkcs7_unpad
from wechat.errors import WeChatCryptoError

V2_SIGN_TYPES = ("MD5", "HMAC-SHA256")


def v2_string_a(params: Mapping[str, object]) -> str:
    """Return stringA: non-empty params except `sign`, ASCII-sorted by key, as k=v joined by &."""
    pairs = (
        f"{key}={value}" for key, value in sorted(params.items()) if key != "sign" and value is not None and value != ""
    )
    return "&".join(pairs)


def v2_sign(params: Mapping[str, object], *, key: str, sign_type: str = "MD5") -> str:
    """Return the v2 sign (upper hex) of params: MD5 or HMAC-SHA256 over stringA&key=KEY."""
    message = f"{v2_string_a(params)}&key={key}".encode()
    if sign_type == "MD5":
        return hashlib.md5(message).hexdigest().upper()  # noqa: S324  # WeChat Pay v2 default
    if sign_type == "HMAC-SHA256":
        return hmac.new(key.encode(), message, hashlib.sha256).hexdigest().upper()
    raise ValueError(f"unsupported v2 sign_type: {sign_type!r}")


def v2_verify(params: Mapping[str, object], *, key: str, sign_type: str | None = None) -> bool:
    """Return whether params' `sign` is valid, using sign_type (else params' sign_type, else MD5)."""
    given = params.get("sign")
    chosen = sign_type or str(params.get("sign_type") or "MD5")
    if not isinstance(given, str) or not given or chosen not in V2_SIGN_TYPES:
        return False
    return constant_time_equals(v2_sign(params, key=key, sign_type=chosen), given.upper())


def v2_jsapi_pay_params(
    *,
    appid: str,
    prepay_id: str,
    key: str,
    sign_type: str = "MD5",
    nonce_str: str,
    timestamp: str,
) -> dict[str, str]:
    """Return the wx.requestPayment / WeixinJSBridge parameters for a v2 prepay_id."""
    pay_params = {
        "appId": appid,
        "timeStamp": timestamp,
        "nonceStr": nonce_str,
        "package": f"prepay_id={prepay_id}",
        "signType": sign_type,
    }
    pay_params["paySign"] = v2_sign(pay_params, key=key, sign_type=sign_type)
    return pay_params


def _refund_cipher(api_key: str) -> Cipher[modes.ECB]:
    """Return AES-256-ECB keyed with the ASCII of lowercase md5(api_key) hex."""
    # Both MD5-derived key and ECB are fixed by WeChat's refund-notify protocol.
    key = hashlib.md5(api_key.encode("ascii")).hexdigest().lower().encode("ascii")  # noqa: S324
    return Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305


def v2_decrypt_req_info(req_info: str, *, api_key: str) -> str:
    """Decrypt a refund notification's req_info to its <root> XML string."""
    ciphertext = b64decode_strict(req_info, "req_info")
    if not ciphertext or len(ciphertext) % 16:
        raise WeChatCryptoError("req_info length is not a positive multiple of 16")
    decryptor = _refund_cipher(api_key).decryptor()
    plain = pkcs7_unpad(decryptor.update(ciphertext) + decryptor.finalize(), 16)
    try:
        return plain.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WeChatCryptoError("req_info is not UTF-8") from exc


def v2_encrypt_req_info(xml: str, *, api_key: str) -> str:
    """Encrypt a <root> XML string as a refund notification's req_info (emulator side)."""
    encryptor = _refund_cipher(api_key).encryptor()
    padded = pkcs7_pad(xml.encode("utf-8"), 16)
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def _pem_bytes(pem: str | bytes) -> bytes:
    """Return a PEM as bytes."""
    return pem.encode("ascii") if isinstance(pem, str) else pem


@lru_cache(maxsize=32)
def _load_private_key(pem: bytes) -> RSAPrivateKey:
    """Load an unencrypted RSA private key (PKCS#8 or PKCS#1 PEM)."""
    private_key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private_key, RSAPrivateKey):
        raise TypeError("WeChat Pay v3 needs an RSA private key")
    return private_key


@lru_cache(maxsize=32)
def _load_public_key(pem: bytes) -> RSAPublicKey:
    """Load an RSA public key from a public-key PEM or an X.509 certificate PEM."""
    public_key: PublicKeyTypes
    if b"-----BEGIN CERTIFICATE-----" in pem:
        public_key = load_pem_x509_certificate(pem).public_key()
    else:
        public_key = serialization.load_pem_public_key(pem)
    if not isinstance(public_key, RSAPublicKey):
        raise TypeError("WeChat Pay v3 needs an RSA public key")
    return public_key


def v3_sign_message(*, private_key_pem: str | bytes, message: str) -> str:
    """Return base64 RSA-SHA256 (PKCS#1 v1.5) of message with the merchant private key."""
    private_key = _load_private_key(_pem_bytes(private_key_pem))
    signature = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode("ascii")


def v3_response_message(*, timestamp: str, nonce: str, body: bytes | str) -> bytes:
    """Return the bytes WeChat signs for a notification/response: ts\\nnonce\\nbody\\n."""
    raw_body = body.encode("utf-8") if isinstance(body, str) else body
    return f"{timestamp}\n{nonce}\n".encode() + raw_body + b"\n"


def v3_verify(
    *,
    public_key_pem: str | bytes,
    timestamp: str,
    nonce: str,
    body: bytes | str,
    signature: str,
) -> bool:
    """Return whether Wechatpay-Signature is valid for the exact body (platform key or cert PEM)."""
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    public_key = _load_public_key(_pem_bytes(public_key_pem))
    message = v3_response_message(timestamp=timestamp, nonce=nonce, body=body)
    try:
        public_key.verify(raw_signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def v3_timestamp_is_fresh(timestamp: str, *, now: float, max_skew_seconds: int = 300) -> bool:
    """Return whether a Wechatpay-Timestamp is within max_skew_seconds of `now` (replay guard)."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    return abs(int(timestamp) - now) <= max_skew_seconds


def v3_request_message(*, method: str, url_path: str, timestamp: str, nonce: str, body: str = "") -> str:
    """Return the v3 request-signing string METHOD\\nPATH?QUERY\\nts\\nnonce\\nbody\\n."""
    return f"{method.upper()}\n{url_path}\n{timestamp}\n{nonce}\n{body}\n"


def _aesgcm(api_v3_key: str) -> AESGCM:
    """Return AES-GCM keyed with the APIv3 key's ASCII bytes (32 in production)."""
    try:
        return AESGCM(api_v3_key.encode("ascii"))
    except ValueError as exc:
        raise ValueError("APIv3 key must be 16, 24 or 32 ASCII characters") from exc


def v3_aead_decrypt(*, api_v3_key: str, nonce: str, associated_data: str, ciphertext: str) -> bytes:
    """Decrypt an AEAD_AES_256_GCM resource (base64 ciphertext||tag) and authenticate it."""
    aesgcm = _aesgcm(api_v3_key)
    data = b64decode_strict(ciphertext, "ciphertext")
    try:
        return aesgcm.decrypt(nonce.encode("utf-8"), data, associated_data.encode("utf-8"))
    except (InvalidTag, ValueError) as exc:  # ValueError: empty nonce or truncated data
        raise WeChatCryptoError("AES-GCM authentication failed") from exc


def v3_aead_encrypt(*, api_v3_key: str, nonce: str, associated_data: str, plaintext: bytes | str) -> str:
    """Encrypt a resource as WeChat does: base64(ciphertext||tag) (emulator side)."""
    data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
    sealed = _aesgcm(api_v3_key).encrypt(nonce.encode("utf-8"), data, associated_data.encode("utf-8"))
    return base64.b64encode(sealed).decode("ascii")


def v3_jsapi_pay_params(
    *,
    appid: str,
    prepay_id: str,
    private_key_pem: str | bytes,
    nonce_str: str,
    timestamp: str,
) -> dict[str, str]:
    """Return the wx.requestPayment parameters for a v3 prepay_id (signType RSA)."""
    package = f"prepay_id={prepay_id}"
    message = f"{appid}\n{timestamp}\n{nonce_str}\n{package}\n"
    return {
        "appId": appid,
        "timeStamp": timestamp,
        "nonceStr": nonce_str,
        "package": package,
        "signType": "RSA",
        "paySign": v3_sign_message(private_key_pem=private_key_pem, message=message),
    }
