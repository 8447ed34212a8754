"""Local stand-in for api.weixin.qq.com and api.mch.weixin.qq.com (development and tests only)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

KEYS_DIR = Path(__file__).parent / "keys"
PLATFORM_PUBLIC_KEY_ID = "PUB_KEY_ID_0119000001092026010100000000000001"
MERCHANT_SERIAL_NO = "207CC076A5969227CD0EBBAE132FCE0B0A134FCD"


@lru_cache(maxsize=8)
def _read_key(name: str) -> bytes:
    """Read one PEM from keys/ (test keys committed to the repository)."""
    return (KEYS_DIR / name).read_bytes()


def platform_private_key_pem() -> bytes:
    """Return the emulator platform's private key (signs v3 responses and notifies)."""
    return _read_key("platform_private_key.pem")


def platform_public_key_pem() -> bytes:
    """Return the emulator platform's public key (the server verifies Wechatpay-Signature with it)."""
    return _read_key("platform_public_key.pem")


def merchant_private_key_pem() -> bytes:
    """Return the dev merchant's private key (the server signs v3 requests with it)."""
    return _read_key("merchant_private_key.pem")


def merchant_public_key_pem() -> bytes:
    """Return the dev merchant's public key (the emulator verifies v3 Authorization with it)."""
    return _read_key("merchant_public_key.pem")
