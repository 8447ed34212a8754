"""In-memory state of the WeChat emulator: accounts, stateless tokens, recorded calls, faults, orders."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TOKEN_TTL = 7200
MP_CODE_TTL = 300
_MAC_LEN = 16
_REDACTED = ("secret", "access_token")
_MAX_CALLS = 5000


@dataclass(frozen=True)
class AppAccount:
    """An official account or mini program the emulator answers for."""

    appid: str
    secret: str
    token: str = ""
    encoding_aes_key: str = ""
    original_id: str = ""
    message_mode: str = ""  # official accounts: plaintext | compatible | safe; "" = safe with an EncodingAESKey

    @property
    def mode(self) -> str:
        """The message mode pushes use unless a control call names one (the server's default rule)."""
        return self.message_mode or ("safe" if len(self.encoding_aes_key) == 43 else "plaintext")

    @property
    def gh_id(self) -> str:
        """Return the account's original id (gh_...), derived from the appid when not given."""
        return self.original_id or "gh_" + hashlib.sha256(self.appid.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class MerchantAccount:
    """A WeChat Pay merchant: v2 api_key, v3 api_v3_key and the public key its v3 requests are signed with."""

    mch_id: str
    api_key: str
    api_v3_key: str = ""
    merchant_public_key: str = ""  # PEM; empty means the dev merchant key in keys/
    verify_v3_signature: bool = True


@dataclass
class PayOrder:
    """An order the emulator saw in pay v2 unifiedorder or v3 jsapi."""

    version: int
    mch_id: str
    appid: str
    out_trade_no: str
    total_fee: int
    openid: str
    notify_url: str
    prepay_id: str
    sign_type: str = "MD5"
    trade_type: str = "JSAPI"
    description: str = ""
    attach: str = ""
    state: str = "NOTPAY"
    transaction_id: str = ""
    paid_at: float | None = None
    refunded_fee: int = 0


@dataclass
class PayRefund:
    """A refund the emulator accepted (v2 secapi/pay/refund or v3 domestic/refunds)."""

    version: int
    mch_id: str
    appid: str
    out_trade_no: str
    transaction_id: str
    out_refund_no: str
    refund_id: str
    refund_fee: int
    total_fee: int
    notify_url: str
    status: str = "PROCESSING"
    created_at: float = 0.0
    success_at: float | None = None


@dataclass
class Fault:
    """An injected failure for the next `times` calls to one path."""

    errcode: int | str
    errmsg: str
    status: int | None
    times: int
    unsigned: bool = False  # pay v3: answer without Wechatpay-* signature headers (as WeChat Pay's 401 SIGN_ERROR)
    raw: str | None = None  # answer this text/html body as is (a proxy's bare 502 page), not WeChat's format


def _b64url(raw: bytes) -> str:
    """Encode without padding, URL-safe."""
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64url_decode(text: str) -> bytes | None:
    """Decode unpadded URL-safe base64, or None when it is not."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def derive_key(secret: str, purpose: str) -> bytes:
    """Derive a purpose-bound key from an account secret, the same in every worker process."""
    return hmac.new(secret.encode("utf-8"), f"huiyuan-emulator/{purpose}".encode(), hashlib.sha256).digest()


def iso_now(epoch: float | None = None) -> str:
    """Return an ISO-8601 UTC timestamp with milliseconds."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, tz=UTC)
    return moment.isoformat(timespec="milliseconds")


def redact(data: Any) -> Any:
    """Drop secrets (secret, access_token) from a top-level mapping before recording it."""
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if key not in _REDACTED}
    return data


class EmulatorState:
    """Everything one emulator process remembers; tokens, tickets and codes are verifiable without it."""

    def __init__(
        self,
        *,
        apps: Iterable[AppAccount] = (),
        merchants: Iterable[MerchantAccount] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Start empty apart from the known accounts."""
        self.clock = clock
        self.apps: dict[str, AppAccount] = {app.appid: app for app in apps}
        self.merchants: dict[str, MerchantAccount] = {m.mch_id: m for m in merchants}
        self.reset()

    def reset(self) -> None:
        """Forget calls, faults, cards, codes and orders; keep the accounts."""
        self.calls: deque[dict[str, Any]] = deque(maxlen=_MAX_CALLS)
        self.faults: dict[str, Fault] = {}
        self.revoked_before: dict[str, int] = {}
        self.stable_tokens: dict[str, str] = {}
        self.used_mp_codes: set[str] = set()
        self.sessions: dict[tuple[str, str], str] = {}
        self.cards: dict[str, dict[str, Any]] = {}
        self.user_forms: dict[str, dict[str, Any]] = {}
        self.members: dict[tuple[str, str], dict[str, Any]] = {}
        self.activate_infos: dict[str, dict[str, Any]] = {}
        self.messages: list[dict[str, Any]] = []
        self.orders: dict[tuple[str, str], PayOrder] = {}
        self.refunds: dict[tuple[str, str], PayRefund] = {}

    def add_app(self, app: AppAccount) -> None:
        """Register (or replace) an official account / mini program."""
        self.apps[app.appid] = app

    def add_merchant(self, merchant: MerchantAccount) -> None:
        """Register (or replace) a pay merchant."""
        self.merchants[merchant.mch_id] = merchant

    def mint(self, appid: str, purpose: str, payload: dict[str, Any]) -> str:
        """Return an opaque value carrying payload, MAC'd with a key derived from the account secret."""
        body = json.dumps({"a": appid, **payload}, separators=(",", ":")).encode()
        mac = hmac.new(derive_key(self.apps[appid].secret, purpose), body, hashlib.sha256).digest()
        return _b64url(body + mac[:_MAC_LEN])

    def open(self, purpose: str, value: str) -> dict[str, Any] | None:
        """Return the payload of a value this emulator minted for `purpose`, or None if forged/unknown."""
        raw = _b64url_decode(value or "")
        if raw is None or len(raw) <= _MAC_LEN:
            return None
        body, mac = raw[:-_MAC_LEN], raw[-_MAC_LEN:]
        try:
            payload = json.loads(body)
        except ValueError:
            return None
        app = self.apps.get(payload.get("a", "")) if isinstance(payload, dict) else None
        if app is None:
            return None
        expected = hmac.new(derive_key(app.secret, purpose), body, hashlib.sha256).digest()[:_MAC_LEN]
        return payload if hmac.compare_digest(expected, mac) else None

    def mint_card_id(self, appid: str) -> str:
        """Return a new 28-character card_id ("p" + random + MAC) valid in every worker."""
        raw = secrets.token_bytes(12)
        mac = hmac.new(derive_key(self.apps[appid].secret, "card-id"), raw, hashlib.sha256).digest()[:8]
        return "p" + _b64url(raw + mac)

    def card_known(self, appid: str, card_id: str) -> bool:
        """Return whether card_id was created for appid (here, or by another worker)."""
        if card_id in self.cards:
            return self.cards[card_id]["appid"] == appid
        raw = _b64url_decode(card_id[1:]) if card_id.startswith("p") else None
        if raw is None or len(raw) != 20 or appid not in self.apps:
            return False
        mac = hmac.new(derive_key(self.apps[appid].secret, "card-id"), raw[:12], hashlib.sha256).digest()[:8]
        return hmac.compare_digest(mac, raw[12:])

    def issue_token(self, appid: str, kind: str) -> tuple[str, int]:
        """Issue a stateless access token (kind "token" or "stable"); return (token, expires_in)."""
        now = self.clock()
        payload = {"k": kind, "i": time.time_ns() // 1000, "e": int(now) + TOKEN_TTL, "n": secrets.token_hex(4)}
        return self.mint(appid, "access-token", payload), TOKEN_TTL

    def stable_token(self, appid: str, *, force_refresh: bool) -> tuple[str, int]:
        """Return this process's current stable token, or a new one (revoking older ones) when forced."""
        current = self.stable_tokens.get(appid)
        if current and not force_refresh:
            payload = self.open("access-token", current)
            if payload and self._token_error(payload) == 0:
                return current, int(payload["e"] - self.clock())
        token, ttl = self.issue_token(appid, "stable")
        if force_refresh:
            self.revoked_before[f"{appid}/stable"] = self.open("access-token", token)["i"] - 1  # type: ignore[index]
        self.stable_tokens[appid] = token
        return token, ttl

    def _token_error(self, payload: dict[str, Any]) -> int:
        """Return 0 for a usable token payload, else WeChat's errcode (42001 expired, 40001 revoked)."""
        if payload["e"] <= self.clock():
            return 42001
        for key in (payload["a"], f"{payload['a']}/{payload['k']}"):
            if payload["i"] <= self.revoked_before.get(key, -1):
                return 40001
        return 0

    def check_token(self, token: str | None) -> tuple[str | None, int]:
        """Return (appid, 0) for a valid access token, else (None, errcode)."""
        if not token:
            return None, 41001
        payload = self.open("access-token", token)
        if payload is None:
            return None, 40001
        errcode = self._token_error(payload)
        return (payload["a"], 0) if errcode == 0 else (None, errcode)

    def expire_tokens(self, appid: str) -> None:
        """Make every token of appid issued before now invalid in this process."""
        self.revoked_before[appid] = time.time_ns() // 1000
        self.stable_tokens.pop(appid, None)

    def mint_mp_code(self, appid: str, openid: str, unionid: str = "") -> str:
        """Return a single-use wx.login code for openid (valid 5 minutes)."""
        payload = {"o": openid, "u": unionid, "e": int(self.clock()) + MP_CODE_TTL, "n": secrets.token_hex(4)}
        return self.mint(appid, "mp-code", payload)

    def set_fault(self, path: str, fault: Fault) -> None:
        """Make the next fault.times calls to path fail."""
        self.faults[normalize_path(path)] = fault

    def take_fault(self, *paths: str) -> Fault | None:
        """Consume one injected failure for the first of paths that has one."""
        for path in paths:
            fault = self.faults.get(normalize_path(path))
            if fault is None:
                continue
            fault.times -= 1
            if fault.times <= 0:
                del self.faults[normalize_path(path)]
            return fault
        return None

    def record(self, *, method: str, path: str, query: dict[str, Any], body: Any) -> None:
        """Remember one API call, without secrets."""
        self.calls.append(
            {"method": method, "path": path, "query": redact(query), "body": redact(body), "at": iso_now()}
        )

    def calls_under(self, prefix: str = "") -> list[dict[str, Any]]:
        """Return recorded calls whose path starts with prefix, oldest first."""
        return [call for call in self.calls if call["path"].startswith(prefix)]

    def find_order(self, out_trade_no: str, mch_id: str | None = None) -> PayOrder | None:
        """Find an order by out_trade_no (optionally within one merchant)."""
        if mch_id:
            return self.orders.get((mch_id, out_trade_no))
        return next((o for (_, no), o in self.orders.items() if no == out_trade_no), None)

    def find_order_by_transaction(self, mch_id: str, transaction_id: str) -> PayOrder | None:
        """Find a merchant's order by WeChat's transaction_id."""
        return next(
            (o for (m, _), o in self.orders.items() if m == mch_id and o.transaction_id == transaction_id), None
        )

    def find_refund(self, out_refund_no: str, mch_id: str | None = None) -> PayRefund | None:
        """Find a refund by out_refund_no (optionally within one merchant)."""
        if mch_id:
            return self.refunds.get((mch_id, out_refund_no))
        return next((r for (_, no), r in self.refunds.items() if no == out_refund_no), None)


def normalize_path(path: str) -> str:
    """Return a WeChat API path with one leading slash and no trailing slash."""
    return "/" + path.strip().strip("/")


def new_digits(count: int) -> str:
    """Return a random decimal string of count digits (no leading zero)."""
    return str(secrets.randbelow(9) + 1) + "".join(str(secrets.randbelow(10)) for _ in range(count - 1))
