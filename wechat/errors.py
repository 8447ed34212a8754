"""Errors raised by the WeChat layer."""

from __future__ import annotations


class WeChatError(Exception):
    """Base class for every error raised by the WeChat layer."""


class WeChatSignatureError(WeChatError):
    """A signature (msg_signature, pay sign, RSA signature) did not verify."""


class WeChatCryptoError(WeChatError):
    """A payload could not be decrypted or its decrypted content is invalid."""


class WeChatXMLError(WeChatError, ValueError):
    """An XML payload is malformed or uses forbidden constructs (DTD, entities)."""


class WeChatAPIError(WeChatError):
    """WeChat answered an API call with a non-zero errcode."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errcode, errmsg)
        self.errcode = errcode
        self.errmsg = errmsg

    def __str__(self) -> str:
        return f"WeChat API error {self.errcode}: {self.errmsg}"


class WeChatPayError(WeChatError):
    """WeChat Pay refused a call (return_code/err_code for v2, code/message for v3)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"WeChat Pay error {self.code}: {self.message}"


class WeChatUnavailable(WeChatError):
    """WeChat did not answer (network error, 5xx) after retries."""
