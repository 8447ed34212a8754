"""Setting a merchant's WeChat accounts: credential checks per kind, a test call to WeChat, then the encrypted upsert.

Used by the owner API (PUT /api/wechat-accounts/<kind>) and `python -m server set-wechat-account`. Nothing is
saved unless the test call succeeds: an official account or mini-program must get a stable access token with its
AppSecret, a pay merchant (API v3) must download /v3/certificates with a request signed by its private key and an
answer that verifies with the uploaded WeChat Pay public key (or platform certificate).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.x509 import load_pem_x509_certificate

from models.kernel.errors import Conflict, Unprocessable, wechat_failure
from models.tenancy.merchants import ACCOUNT_KINDS, MESSAGE_MODES, Merchant, WechatAccount, upsert_wechat_account
from wechat.errors import WeChatAPIError, WeChatError, WeChatPayError, WeChatSignatureError
from wechat.gateway import EMULATOR, AppCredentials
from wechat.pay import PayV3Client

APPID = re.compile(r"^wx[0-9A-Za-z]{16}$")
MCH_ID = re.compile(r"^[0-9]{8,12}$")
SERIAL_NO = re.compile(r"^[0-9A-Fa-f]{8,40}$")
PUBLIC_KEY_ID = re.compile(r"^PUB_KEY_ID_[0-9A-Za-z_]{1,64}$")
TOKEN = re.compile(r"^[A-Za-z0-9]{3,32}$")  # WeChat's rule for the message Token
AES_KEY = re.compile(r"^[A-Za-z0-9]{43}$")
DEFAULT_BASES = {
    "official": "https://api.weixin.qq.com",
    "miniprogram": "https://api.weixin.qq.com",
    "pay": "https://api.mch.weixin.qq.com",
}
# The secret fields each kind stores (GET /api/wechat-accounts says which are set, never their values).
SECRET_FIELDS = {
    "official": ("secret", "token", "encoding_aes_key"),
    "miniprogram": ("secret",),
    "pay": (
        "api_key",
        "api_v3_key",
        "cert_serial_no",
        "private_key",
        "platform_public_key_id",
        "platform_public_key",
    ),
}
PAY_TEST_PATH = "/v3/certificates"


@dataclass(frozen=True)
class Credentials:
    """A checked credential set, ready for the test call and the upsert."""

    kind: str
    appid: str
    mch_id: str
    api_base: str
    secrets: dict[str, str] = field(repr=False)
    message_mode: str = ""  # official accounts: plaintext | compatible | safe, as set in the WeChat console

    @property
    def key(self) -> str:
        return self.mch_id if self.kind == "pay" else self.appid


@dataclass(frozen=True)
class AccountView:
    """What may be shown of a stored account: no secret values, only whether each is set."""

    kind: str
    appid: str
    mch_id: str
    api_base: str
    api_version: str
    message_mode: str
    updated_at: datetime
    secrets_set: dict[str, bool]


def _bad(field_name: str, message: str) -> Unprocessable:
    return Unprocessable(message, code="wechat.credentials_invalid", field=field_name)


def _text(data: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = data.get(name, "")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _bad(name, f"{name} must be a string")
    value = value.strip()
    if required and not value:
        raise _bad(name, f"{name} is required")
    return value


def _api_base(data: dict[str, Any], kind: str, *, allow_emulator: bool, default_to_emulator: bool) -> str:
    # with the built-in emulator running (development), an account without api_base is checked against it:
    # a development server never calls real WeChat unless api_base names it
    base = _text(data, "api_base", required=False) or (EMULATOR if default_to_emulator else DEFAULT_BASES[kind])
    if base == EMULATOR:
        if not allow_emulator:
            raise _bad("api_base", "api_base 'emulator' is for development only")
        return base
    if not re.match(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[\w./-]*)?$", base) or len(base) > 255:
        raise _bad("api_base", "api_base must be an http(s) URL (https://api.weixin.qq.com) or 'emulator'")
    if base.startswith("http://") and not allow_emulator:
        raise _bad("api_base", "api_base must use https in production")
    return base.rstrip("/")


def _appid(data: dict[str, Any]) -> str:
    appid = _text(data, "appid")
    if not APPID.match(appid):
        raise _bad("appid", "appid must be 'wx' followed by 16 letters or digits")
    return appid


def _private_key(pem: str) -> str:
    try:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise _bad("private_key", "private_key is not an unencrypted PEM private key (apiclient_key.pem)") from exc
    if not isinstance(key, RSAPrivateKey) or key.key_size < 2048:
        raise _bad("private_key", "private_key must be an RSA key of at least 2048 bits")
    return pem.strip() + "\n"


def _public_key(pem: str, field_name: str) -> str:
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise _bad(field_name, f"{field_name} is not a PEM public key (pub_key.pem)") from exc
    if not isinstance(key, RSAPublicKey):
        raise _bad(field_name, f"{field_name} must be an RSA public key")
    return pem.strip() + "\n"


def _certificate(pem: str) -> tuple[str, str]:
    """The public key PEM and serial number (upper hex) of a WeChat Pay platform certificate."""
    try:
        cert = load_pem_x509_certificate(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise _bad("platform_certificate", "platform_certificate is not a PEM X.509 certificate") from exc
    key = cert.public_key()
    if not isinstance(key, RSAPublicKey):
        raise _bad("platform_certificate", "platform_certificate must hold an RSA key")
    public_pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return public_pem.decode("ascii"), format(cert.serial_number, "X")


def check_credentials(
    kind: str, data: dict[str, Any], *, allow_emulator: bool, default_to_emulator: bool = False
) -> Credentials:
    """The credential set of one account, checked for presence and format (422 naming the field otherwise)."""
    if kind not in ACCOUNT_KINDS:
        raise Unprocessable(f"unknown account kind {kind!r}", code="wechat.account_kind", field="kind")
    api_base = _api_base(
        data, kind, allow_emulator=allow_emulator, default_to_emulator=allow_emulator and default_to_emulator
    )
    if kind == "official":
        token, aes_key = _text(data, "token"), _text(data, "encoding_aes_key")
        if not TOKEN.match(token):
            raise _bad("token", "token must be 3-32 letters or digits (the Token set in the WeChat console)")
        if not AES_KEY.match(aes_key):
            raise _bad("encoding_aes_key", "encoding_aes_key must be 43 letters or digits")
        try:
            base64.b64decode(aes_key + "=", validate=True)
        except binascii.Error as exc:
            raise _bad("encoding_aes_key", "encoding_aes_key is not valid") from exc
        secrets = {"secret": _text(data, "secret"), "token": token, "encoding_aes_key": aes_key}
        mode = _text(data, "message_mode", required=False) or "safe"
        if mode not in MESSAGE_MODES:
            raise _bad("message_mode", f"message_mode must be one of {', '.join(MESSAGE_MODES)}")
        return Credentials(kind, _appid(data), "", api_base, secrets, message_mode=mode)
    if kind == "miniprogram":
        return Credentials(kind, _appid(data), "", api_base, {"secret": _text(data, "secret")})
    mch_id = _text(data, "mch_id")
    if not MCH_ID.match(mch_id):
        raise _bad("mch_id", "mch_id must be the 8-12 digit WeChat Pay merchant id")
    version = _text(data, "api_version", required=False) or "v3"
    if version not in ("v2", "v3"):
        raise _bad("api_version", "api_version must be v3 or v2")
    api_key = _text(data, "api_key", required=version == "v2")
    if api_key and len(api_key.encode()) != 32:
        raise _bad("api_key", "api_key (API v2 key) must be 32 characters")
    secrets = {"api_version": version, "api_key": api_key}
    if version == "v3" or _text(data, "api_v3_key", required=False):
        api_v3_key = _text(data, "api_v3_key")
        if len(api_v3_key.encode()) != 32:
            raise _bad("api_v3_key", "api_v3_key must be 32 bytes")
        serial = _text(data, "cert_serial_no")
        if not SERIAL_NO.match(serial):
            raise _bad("cert_serial_no", "cert_serial_no must be the merchant API certificate's hex serial number")
        certificate = _text(data, "platform_certificate", required=False)
        if certificate:
            platform_key, platform_id = _certificate(certificate)
        else:
            platform_id = _text(data, "platform_public_key_id")
            if not PUBLIC_KEY_ID.match(platform_id):
                raise _bad("platform_public_key_id", "platform_public_key_id must look like PUB_KEY_ID_...")
            platform_key = _public_key(_text(data, "platform_public_key"), "platform_public_key")
        secrets |= {
            "api_v3_key": api_v3_key,
            "cert_serial_no": serial.upper(),
            "private_key": _private_key(_text(data, "private_key")),
            "platform_public_key_id": platform_id,
            "platform_public_key": platform_key,
        }
    return Credentials(kind, "", mch_id, api_base, secrets)


def _rejected(creds: Credentials, exc: WeChatError) -> Unprocessable:
    what = f"{creds.kind} {creds.key}"
    if isinstance(exc, WeChatAPIError):
        return Unprocessable(
            f"WeChat refused the credentials of {what}: errcode {exc.errcode} {exc.errmsg}",
            code="wechat.credentials_rejected",
            errcode=exc.errcode,
            errmsg=exc.errmsg,
        )
    if isinstance(exc, WeChatPayError):
        return Unprocessable(
            f"WeChat Pay refused the credentials of {what}: {exc.code} {exc.message}",
            code="wechat.credentials_rejected",
            errcode=exc.code,
            errmsg=exc.message,
        )
    return Unprocessable(
        f"WeChat Pay's answer for {what} does not verify with the uploaded platform public key or certificate",
        code="wechat.credentials_rejected",
    )


async def verify_by_call(gateway: Any, creds: Credentials) -> None:
    """One real call with the credentials; 422 with WeChat's errcode/errmsg when refused, 503 when WeChat is away.

    The gateway's HTTP client is async (httpx), so nothing blocks the event loop.
    """
    try:
        base = gateway.resolve_base(creds.api_base)
        if creds.kind in ("official", "miniprogram"):
            client = gateway.app_client(
                AppCredentials(appid=creds.appid, secret=creds.secrets["secret"], api_base=creds.api_base)
            )
            # stable_token without force_refresh: the token of a live account stays valid for its other users
            await client.call_public(
                "POST",
                "/cgi-bin/stable_token",
                json={
                    "grant_type": "client_credential",
                    "appid": creds.appid,
                    "secret": creds.secrets["secret"],
                    "force_refresh": False,
                },
            )
            return
        if creds.secrets.get("api_version") == "v2":
            return  # API v2 has no side-effect-free signed call; its key is checked by the first order
        pay = PayV3Client(
            http=gateway.http,
            base=base,
            mch_id=creds.mch_id,
            serial_no=creds.secrets["cert_serial_no"],
            private_key_pem=creds.secrets["private_key"],
            platform_public_key_pem=creds.secrets["platform_public_key"],
        )
        await pay.call("GET", PAY_TEST_PATH)
    except (WeChatAPIError, WeChatPayError, WeChatSignatureError) as exc:
        raise _rejected(creds, exc) from exc
    except WeChatError as exc:
        raise wechat_failure(exc, action=f"checking {creds.kind} {creds.key}") from exc


async def _check_ownership(merchant: Merchant, creds: Credentials) -> None:
    """409 when the appid/mch_id is another merchant's, or the merchant already has another account of the kind.

    Changing a merchant's appid is refused: openids (and so members' WeChat identities) are per appid.
    """
    taken = await WechatAccount.get_or_none(lookup=f"{creds.kind}:{creds.key}")
    if taken is not None and taken.merchant_id != merchant.id:
        raise Conflict(f"{creds.kind} {creds.key} belongs to another merchant", code="wechat.account_taken")
    if taken is None:
        other = await WechatAccount.filter(merchant_id=merchant.id, kind=creds.kind).first()
        if other is not None:
            raise Conflict(
                f"the merchant already has {creds.kind} {other.mch_id or other.appid}; openids are per appid, "
                "so an account is not replaced by another one",
                code="wechat.account_exists",
            )


async def set_wechat_account(gateway: Any, *, merchant: Merchant, creds: Credentials) -> WechatAccount:
    """Check ownership, make the test call, then store the account (secrets encrypted). Nothing saved on failure."""
    await _check_ownership(merchant, creds)
    await verify_by_call(gateway, creds)
    return await upsert_wechat_account(
        merchant=merchant,
        kind=creds.kind,
        appid=creds.appid,
        mch_id=creds.mch_id,
        secrets=creds.secrets,
        api_base=creds.api_base,
        message_mode=creds.message_mode or None,
    )


def view(account: WechatAccount) -> AccountView:
    secrets = account.secrets()
    return AccountView(
        kind=account.kind,
        appid=account.appid,
        mch_id=account.mch_id,
        api_base=account.api_base,
        api_version=secrets.get("api_version", "v3") if account.kind == "pay" else "",
        message_mode=account.message_mode_of(secrets) if account.kind == "official" else "",
        updated_at=account.updated_at,
        secrets_set={name: bool(secrets.get(name)) for name in SECRET_FIELDS.get(account.kind, ())},
    )


async def list_accounts(*, merchant_id: int) -> list[AccountView]:
    """The merchant's WeChat accounts, without secret values."""
    accounts = await WechatAccount.filter(merchant_id=merchant_id).order_by("kind", "id")
    return [view(account) for account in accounts]
