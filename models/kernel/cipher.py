"""Field encryption (AES-GCM) and blind indexes for sensitive member data."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class DataCipher:
    """Encrypts small strings with AES-256-GCM; blind_index gives an HMAC for exact lookups."""

    VERSION = "v1"

    def __init__(self, data_key_b64: str) -> None:
        try:
            master = base64.b64decode(data_key_b64, validate=True)
        except ValueError as exc:
            raise ValueError("security.data_key must be base64") from exc
        if len(master) != 32:
            raise ValueError("security.data_key must decode to 32 bytes")
        self._enc_key = hmac.new(master, b"huiyuan/encrypt", hashlib.sha256).digest()
        self._idx_key = hmac.new(master, b"huiyuan/blind-index", hashlib.sha256).digest()
        self._aes = AESGCM(self._enc_key)

    def encrypt(self, plaintext: str, *, context: str = "") -> str:
        nonce = os.urandom(12)
        sealed = self._aes.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.VERSION}:" + base64.b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, *, context: str = "") -> str:
        version, _, body = token.partition(":")
        if version != self.VERSION:
            raise ValueError("unknown ciphertext version")
        raw = base64.b64decode(body)
        return self._aes.decrypt(raw[:12], raw[12:], context.encode()).decode()

    def blind_index(self, value: str, *, context: str = "") -> str:
        normalized = value.strip().upper()
        return hmac.new(self._idx_key, f"{context}|{normalized}".encode(), hashlib.sha256).hexdigest()


_cipher: DataCipher | None = None


def set_cipher(cipher: DataCipher) -> None:
    global _cipher
    _cipher = cipher


def cipher() -> DataCipher:
    if _cipher is None:
        raise RuntimeError("DataCipher not configured (server not started)")
    return _cipher
