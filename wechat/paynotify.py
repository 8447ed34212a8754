"""WeChat Pay notifies (v2 XML, v3 JSON): verification and decryption into a PayNotify."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from wechat.errors import WeChatCryptoError, WeChatError, WeChatSignatureError
from wechat.paysign import (
    v2_decrypt_req_info,
    v2_verify,
    v3_aead_decrypt,
    v3_timestamp_is_fresh,
    v3_verify,
)
from wechat.xmlutil import parse_xml

log = logging.getLogger("huiyuan.wechat.paynotify")

V3_MAX_SKEW_SECONDS = 300  # the SDKs' window; older signed notifies are treated as replays
_V3_EVENT_TYPE = re.compile(r"^([A-Z][A-Z0-9_]*)\.[A-Z0-9_.]+$")


class NotifyRejected(WeChatError):
    """A notify is authentic-looking but not acceptable (wrong merchant, appid, shape or event)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotifyNotProcessed(WeChatError):
    """Raised by a handler that could not process a verified notify; WeChat is asked to retry."""


@dataclass(frozen=True)
class PayNotify:
    """One verified, decrypted pay notify of a merchant's pay account."""

    merchant_id: int
    mch_id: str
    version: Literal["v2", "v3"]
    kind: str  # "transaction" | "refund" (v3 notifies of other products: their lowercased event prefix)
    fields: dict[str, Any]
    raw_id: str  # v3 notify id; v2 transaction_id (payments) or refund_id (refunds)


Handler = Callable[[PayNotify], Awaitable[None]]  # the routes are the table in server/wiring.py


def _v2_payment_sign_ok(fields: Mapping[str, str], api_key: str) -> bool:
    """Check the sign with the body's sign_type, or MD5 then HMAC-SHA256 when none is given."""
    sign_type = fields.get("sign_type")
    if sign_type:
        return v2_verify(fields, key=api_key, sign_type=sign_type)
    # Both algorithms are keyed with the merchant key, so a forger needs the key either way:
    # accepting either when sign_type is absent adds no attack surface.
    return v2_verify(fields, key=api_key, sign_type="MD5") or v2_verify(fields, key=api_key, sign_type="HMAC-SHA256")


def verify_v2(body: bytes, *, mch_id: str, api_key: str, appids: AbstractSet[str]) -> tuple[str, dict[str, str]]:
    """Verify a v2 pay or refund notify of mch_id; return ("transaction" | "refund", fields)."""
    if not api_key:
        raise ValueError("api_key is required to verify a v2 notify")
    outer = parse_xml(body)
    if outer.get("return_code") != "SUCCESS":
        raise NotifyRejected("return_code is not SUCCESS")
    if outer.get("mch_id") != mch_id:
        raise NotifyRejected("mch_id does not match the merchant")
    if "req_info" in outer:
        # Refund notifies carry no sign: decrypting req_info with our key is what authenticates them.
        inner = parse_xml(v2_decrypt_req_info(outer["req_info"], api_key=api_key))
        if not inner.get("out_refund_no") or not inner.get("refund_id"):
            raise WeChatCryptoError("req_info has no out_refund_no/refund_id")
        return "refund", {"appid": outer.get("appid", ""), "mch_id": outer["mch_id"], **inner}
    if not _v2_payment_sign_ok(outer, api_key):
        raise WeChatSignatureError("pay notify sign does not verify")
    if outer.get("appid") not in appids:
        raise NotifyRejected("appid is not one of the merchant's accounts")
    return "transaction", outer


def _header(headers: Mapping[str, str], name: str) -> str:
    """Return a header case-insensitively ("" when absent)."""
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), "")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object or raise NotifyRejected."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotifyRejected(f"{what} is not JSON") from exc
    if not isinstance(parsed, dict):
        raise NotifyRejected(f"{what} is not a JSON object")
    return parsed


def _v3_kind(event_type: object) -> str:
    """Return "transaction" for TRANSACTION.*, "refund" for REFUND.*, else the lowercased prefix."""
    match = _V3_EVENT_TYPE.match(event_type) if isinstance(event_type, str) else None
    if match is None:
        raise NotifyRejected("event_type is missing or malformed")
    return match.group(1).lower()


def verify_v3(
    body: bytes,
    headers: Mapping[str, str],
    *,
    mch_id: str,
    api_v3_key: str,
    platform_public_key_pem: str,
    platform_public_key_id: str,
    appids: AbstractSet[str],
    now: datetime,
) -> tuple[str, dict[str, Any], str]:
    """Verify and decrypt a v3 notify of mch_id; return (kind, resource, notify id)."""
    if not (api_v3_key and platform_public_key_pem and platform_public_key_id):
        raise ValueError("api_v3_key and the platform public key (and its id) are required")
    if _header(headers, "Wechatpay-Serial") != platform_public_key_id:
        raise WeChatSignatureError("Wechatpay-Serial is not the configured platform public key id")
    timestamp = _header(headers, "Wechatpay-Timestamp")
    if not v3_timestamp_is_fresh(timestamp, now=now.timestamp(), max_skew_seconds=V3_MAX_SKEW_SECONDS):
        raise WeChatSignatureError("Wechatpay-Timestamp is missing or stale")
    if not v3_verify(
        public_key_pem=platform_public_key_pem,
        timestamp=timestamp,
        nonce=_header(headers, "Wechatpay-Nonce"),
        body=body,
        signature=_header(headers, "Wechatpay-Signature"),
    ):
        raise WeChatSignatureError("Wechatpay-Signature does not verify")
    envelope = _json_object(body, "body")
    kind = _v3_kind(envelope.get("event_type"))
    notify_id, resource = envelope.get("id"), envelope.get("resource")
    if not isinstance(notify_id, str) or not notify_id or not isinstance(resource, dict):
        raise NotifyRejected("notify has no id or resource")
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise NotifyRejected("resource.algorithm is not AEAD_AES_256_GCM")
    parts = [resource.get(name, "") for name in ("nonce", "associated_data", "ciphertext")]
    if not all(isinstance(part, str) for part in parts):
        raise NotifyRejected("resource nonce/associated_data/ciphertext must be strings")
    nonce, associated_data, ciphertext = parts
    plaintext = v3_aead_decrypt(
        api_v3_key=api_v3_key, nonce=nonce, associated_data=associated_data, ciphertext=ciphertext
    )
    try:
        fields = _json_object(plaintext, "resource")
    except NotifyRejected as exc:
        raise WeChatCryptoError(exc.reason) from None
    if fields.get("mchid") != mch_id:
        raise NotifyRejected("resource mchid does not match the merchant")
    appid = fields.get("appid")
    if kind == "transaction" and not (isinstance(appid, str) and appid in appids):
        raise NotifyRejected("appid is not one of the merchant's accounts")
    return kind, fields, notify_id
