"""The member's dynamic QR code for the cashier's scanner: a compact HMAC-signed token valid for 60 seconds."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct

from models.kernel import clock
from models.kernel.errors import Unauthorized

MEMBER_QR_TTL = 60
MEMBER_QR_REFRESH = 50  # the page fetches a new token before the shown one expires
MEMBER_QR_PREFIX = "HYM"
_MEMBER_QR_BODY = struct.Struct(">IIII")  # merchant id, member id, expiry (epoch s), nonce
_MEMBER_QR_MAC_LEN = 12
_MEMBER_QR_CHARS = len(base64.b32encode(b"\0" * (_MEMBER_QR_BODY.size + _MEMBER_QR_MAC_LEN)).rstrip(b"="))


def _member_qr_mac(secret: str, body: bytes) -> bytes:
    # a key derived for this purpose only, so a QR MAC can never be replayed as anything else
    key = hmac.new(secret.encode(), b"huiyuan/member-qr", hashlib.sha256).digest()
    return hmac.new(key, body, hashlib.sha256).digest()[:_MEMBER_QR_MAC_LEN]


def sign_member_qr(*, secret: str, member_id: int, merchant_id: int, ttl: int = MEMBER_QR_TTL) -> tuple[str, int]:
    """A compact HMAC-SHA256-signed member token for the cashier's scanner (QR alphanumeric, 48 chars)."""
    expires = int(clock.now().timestamp()) + ttl
    body = _MEMBER_QR_BODY.pack(merchant_id, member_id, expires, secrets.randbits(32))
    raw = body + _member_qr_mac(secret, body)
    return MEMBER_QR_PREFIX + base64.b32encode(raw).decode("ascii").rstrip("="), ttl


def verify_member_qr(token: str, *, secret: str) -> tuple[int, int]:
    """(merchant_id, member_id) of an unexpired member QR token; anything else is 401 member_qr.invalid."""
    invalid = Unauthorized("member QR code is invalid or expired", code="member_qr.invalid")
    text = token.strip()
    if not text.startswith(MEMBER_QR_PREFIX) or len(text) != len(MEMBER_QR_PREFIX) + _MEMBER_QR_CHARS:
        raise invalid
    encoded = text[len(MEMBER_QR_PREFIX) :]
    try:
        raw = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    except (binascii.Error, ValueError):
        raise invalid from None
    if base64.b32encode(raw).decode("ascii").rstrip("=") != encoded:  # the last character has spare bits
        raise invalid
    body, mac = raw[: _MEMBER_QR_BODY.size], raw[_MEMBER_QR_BODY.size :]
    if not hmac.compare_digest(_member_qr_mac(secret, body), mac):
        raise invalid
    merchant_id, member_id, expires, _nonce = _MEMBER_QR_BODY.unpack(body)
    if expires <= clock.now().timestamp():
        raise invalid
    return merchant_id, member_id
