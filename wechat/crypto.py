"""Official-account and mini-program signatures and message crypto (no network, no state).

OA safe mode follows WXBizMsgCrypt: AES-256-CBC with IV = key[:16], PKCS#7 padding to a
multiple of **32** bytes, plaintext = random(16) + len(4, big-endian, UTF-8 bytes) + msg + appid,
and msg_signature = SHA1 of the sorted (token, timestamp, nonce, Encrypt) strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from wechat.errors import WeChatCryptoError, WeChatSignatureError
from wechat.xmlutil import cdata, parse_xml, to_xml

_OA_BLOCK = 32
_AES_BLOCK = 16


def sha1_signature(*parts: str) -> str:
    """Return the lowercase SHA1 hex of the parts sorted and concatenated (WeChat's signature)."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()  # noqa: S324  # mandated by WeChat


def constant_time_equals(expected: str, given: str) -> bool:
    """Compare two strings in constant time (any text, not only ASCII)."""
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


def check_oa_signature(*, token: str, signature: str, timestamp: str, nonce: str) -> bool:
    """Return whether `signature` is the OA URL signature of (token, timestamp, nonce)."""
    return constant_time_equals(sha1_signature(token, timestamp, nonce), signature)


def b64decode_strict(value: str, what: str) -> bytes:
    """Decode strict base64 or raise WeChatCryptoError naming the field."""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WeChatCryptoError(f"{what} is not valid base64") from exc


def pkcs7_pad(data: bytes, block: int) -> bytes:
    """Pad with PKCS#7 to a multiple of `block` bytes (always adds 1..block bytes)."""
    count = block - len(data) % block
    return data + bytes([count]) * count


def pkcs7_unpad(data: bytes, block: int) -> bytes:
    """Strip PKCS#7 padding of block size `block`, rejecting malformed padding."""
    count = data[-1] if data else 0
    if not 1 <= count <= block or count > len(data) or data[-count:] != bytes([count]) * count:
        raise WeChatCryptoError("invalid PKCS#7 padding")
    return data[:-count]


def _aes_cbc(key: bytes, iv: bytes, data: bytes, *, encrypt: bool) -> bytes:
    """Run raw AES-CBC (no padding) over whole blocks."""
    if not data or len(data) % _AES_BLOCK:
        raise WeChatCryptoError("ciphertext length is not a positive multiple of 16")
    cipher = Cipher(algorithms.AES(key), modes.CBC(iv))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


class OACrypto:
    """WXBizMsgCrypt safe-mode crypto for one official account (also used by the emulator)."""

    def __init__(self, *, token: str, encoding_aes_key: str, appid: str) -> None:
        """Derive the AES key from the 43-character EncodingAESKey."""
        if len(encoding_aes_key) != 43:
            raise ValueError("EncodingAESKey must be 43 characters")
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("EncodingAESKey is not valid base64") from exc
        self.token = token
        self.appid = appid
        self._key = key

    def signature(self, *, timestamp: str, nonce: str, encrypt: str) -> str:
        """Return msg_signature for an <Encrypt> value."""
        return sha1_signature(self.token, timestamp, nonce, encrypt)

    def decrypt(self, *, encrypt: str, msg_signature: str, timestamp: str, nonce: str) -> str:
        """Verify msg_signature, decrypt <Encrypt> and return the message after checking the appid."""
        if not constant_time_equals(
            self.signature(timestamp=timestamp, nonce=nonce, encrypt=encrypt),
            msg_signature,
        ):
            raise WeChatSignatureError("msg_signature does not match")
        ciphertext = b64decode_strict(encrypt, "Encrypt")
        plain = pkcs7_unpad(_aes_cbc(self._key, self._key[:16], ciphertext, encrypt=False), _OA_BLOCK)
        if len(plain) < 20:
            raise WeChatCryptoError("decrypted payload too short")
        (msg_len,) = struct.unpack(">I", plain[16:20])
        msg_end = 20 + msg_len
        if msg_end > len(plain):
            raise WeChatCryptoError("message length exceeds payload")
        if not hmac.compare_digest(plain[msg_end:], self.appid.encode("utf-8")):
            raise WeChatCryptoError("appid in payload does not match")
        try:
            return plain[20:msg_end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WeChatCryptoError("message is not UTF-8") from exc

    def encrypt(self, xml: str, *, nonce: str, timestamp: str, random16: bytes | None = None) -> tuple[str, str]:
        """Encrypt a message; return (Encrypt base64, msg_signature)."""
        prefix = os.urandom(16) if random16 is None else random16
        if len(prefix) != 16:
            raise ValueError("random16 must be exactly 16 bytes")
        body = xml.encode("utf-8")
        plain = prefix + struct.pack(">I", len(body)) + body + self.appid.encode("utf-8")
        padded = pkcs7_pad(plain, _OA_BLOCK)
        encrypt_b64 = base64.b64encode(_aes_cbc(self._key, self._key[:16], padded, encrypt=True)).decode("ascii")
        return encrypt_b64, self.signature(timestamp=timestamp, nonce=nonce, encrypt=encrypt_b64)

    def encrypt_reply(self, xml: str, *, nonce: str, timestamp: str, random16: bytes | None = None) -> str:
        """Return the encrypted passive-reply XML (Encrypt, MsgSignature, TimeStamp, Nonce)."""
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise ValueError("timestamp must be decimal digits")
        encrypt_b64, msg_signature = self.encrypt(xml, nonce=nonce, timestamp=timestamp, random16=random16)
        return (
            "<xml>\n"
            f"<Encrypt>{cdata(encrypt_b64)}</Encrypt>\n"
            f"<MsgSignature>{cdata(msg_signature)}</MsgSignature>\n"
            f"<TimeStamp>{timestamp}</TimeStamp>\n"
            f"<Nonce>{cdata(nonce)}</Nonce>\n"
            "</xml>"
        )

    def build_encrypted_post(
        self, xml: str, *, nonce: str, timestamp: str, random16: bytes | None = None, compatible: bool = False
    ) -> tuple[str, dict[str, str]]:
        """Return the POST body and query params WeChat would send for a push in safe mode (ToUserName and
        Encrypt only) or, with compatible, in compatible mode (兼容模式: the plaintext fields and Encrypt)."""
        fields = parse_xml(xml)
        encrypt_b64, msg_signature = self.encrypt(xml, nonce=nonce, timestamp=timestamp, random16=random16)
        outer = {**fields, "Encrypt": encrypt_b64} if compatible else {"ToUserName": fields.get("ToUserName", "")}
        body = to_xml({**outer, "Encrypt": encrypt_b64})
        params = {
            "signature": sha1_signature(self.token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "encrypt_type": "aes",
            "msg_signature": msg_signature,
        }
        if fields.get("FromUserName"):
            params["openid"] = fields["FromUserName"]
        return body, params


def _wxa_key_iv(session_key: str, iv: str) -> tuple[bytes, bytes]:
    """Decode and check the mini-program session_key and iv (16 bytes each)."""
    key = b64decode_strict(session_key, "session_key")
    iv_bytes = b64decode_strict(iv, "iv")
    if len(key) != 16 or len(iv_bytes) != 16:
        raise WeChatCryptoError("session_key and iv must decode to 16 bytes")
    return key, iv_bytes


def wxa_decrypt(*, session_key: str, encrypted_data: str, iv: str, appid: str) -> dict[str, Any]:
    """Decrypt mini-program encryptedData to its JSON object, requiring watermark.appid == appid."""
    key, iv_bytes = _wxa_key_iv(session_key, iv)
    ciphertext = b64decode_strict(encrypted_data, "encryptedData")
    plain = pkcs7_unpad(_aes_cbc(key, iv_bytes, ciphertext, encrypt=False), _AES_BLOCK)
    try:
        payload = json.loads(plain.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeChatCryptoError("decrypted data is not UTF-8 JSON") from exc
    if not isinstance(payload, dict):
        raise WeChatCryptoError("decrypted data is not a JSON object")
    watermark = payload.get("watermark")
    if not isinstance(watermark, dict) or watermark.get("appid") != appid:
        raise WeChatCryptoError("watermark appid does not match")
    return payload


def wxa_encrypt(*, session_key: str, iv: str, data: str | dict[str, Any]) -> str:
    """Encrypt a JSON object (or an exact string) as mini-program encryptedData (emulator side)."""
    key, iv_bytes = _wxa_key_iv(session_key, iv)
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    padded = pkcs7_pad(text.encode("utf-8"), _AES_BLOCK)
    return base64.b64encode(_aes_cbc(key, iv_bytes, padded, encrypt=True)).decode("ascii")


def wxa_rawdata_signature(raw_data: str, session_key: str) -> str:
    """Return SHA1(rawData + session_key) hex, the mini-program getUserInfo signature."""
    return hashlib.sha1((raw_data + session_key).encode("utf-8")).hexdigest()  # noqa: S324  # mandated by WeChat


def check_wxa_rawdata_signature(*, raw_data: str, session_key: str, signature: str) -> bool:
    """Return whether `signature` is the rawData signature under session_key (constant time)."""
    return constant_time_equals(wxa_rawdata_signature(raw_data, session_key), signature)
