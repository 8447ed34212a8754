"""WeChat Pay clients: API v2 (signed XML) and API v3 (RSA-signed JSON), async, emulator-aware."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from wechat.errors import WeChatError, WeChatPayError, WeChatSignatureError, WeChatUnavailable
from wechat.paysign import v2_sign, v2_verify, v3_request_message, v3_sign_message, v3_verify
from wechat.xmlutil import parse_xml, to_xml

V3_AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"


class PayV2Client:
    """Calls like /pay/unifiedorder: signs the request, checks return/result codes and the answer's sign."""

    def __init__(self, *, http: httpx.AsyncClient, base: str, mch_id: str, api_key: str) -> None:
        self.http, self.base, self.mch_id, self.api_key = http, base, mch_id, api_key

    async def call(self, path: str, params: dict[str, Any], *, sign_type: str = "MD5") -> dict[str, str]:
        fields = {**params, "mch_id": self.mch_id, "nonce_str": secrets.token_hex(16)}
        if sign_type != "MD5":
            fields["sign_type"] = sign_type
        fields["sign"] = v2_sign(fields, key=self.api_key, sign_type=sign_type)
        response = await self.http.post(
            self.base + path, content=to_xml(fields).encode(), headers={"Content-Type": "application/xml"}
        )
        if response.status_code >= 500:
            raise WeChatUnavailable(f"{path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise WeChatPayError("HTTP_ERROR", f"{path}: HTTP {response.status_code}")
        answer = parse_xml(response.content)
        if answer.get("return_code") != "SUCCESS":
            raise WeChatPayError(answer.get("return_code", "FAIL"), answer.get("return_msg", ""))
        if not v2_verify(answer, key=self.api_key, sign_type=sign_type):
            raise WeChatSignatureError(f"{path}: answer sign does not verify")
        if answer.get("result_code") not in (None, "SUCCESS"):
            raise WeChatPayError(answer.get("err_code", "FAIL"), answer.get("err_code_des", ""))
        return answer


class PayV3Client:
    """Calls like /v3/pay/transactions/jsapi: Authorization signed with the merchant key, answers verified."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        base: str,
        mch_id: str,
        serial_no: str,
        private_key_pem: str,
        platform_public_key_pem: str,
    ) -> None:
        self.http, self.base, self.mch_id, self.serial_no = http, base, mch_id, serial_no
        self.private_key_pem, self.platform_public_key_pem = private_key_pem, platform_public_key_pem

    def authorization(self, method: str, url: str, body: str) -> str:
        parts = urlsplit(url)
        path = parts.path[len(urlsplit(self.base).path) :] if urlsplit(self.base).path else parts.path
        path = path + (f"?{parts.query}" if parts.query else "")
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        message = v3_request_message(method=method, url_path=path, timestamp=timestamp, nonce=nonce, body=body)
        signature = v3_sign_message(private_key_pem=self.private_key_pem, message=message)
        return (
            f'{V3_AUTH_SCHEME} mchid="{self.mch_id}",nonce_str="{nonce}",signature="{signature}",'
            f'timestamp="{timestamp}",serial_no="{self.serial_no}"'
        )

    async def call(
        self, method: str, path: str, *, json_body: dict[str, Any] | None = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        request = self.http.build_request(method, self.base + path, params=params)
        body = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False) if json_body is not None else ""
        headers = {"Accept": "application/json", "Authorization": self.authorization(method, str(request.url), body)}
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        response = await self.http.request(method, str(request.url), content=body.encode() or None, headers=headers)
        if response.status_code >= 300:
            raise _v3_refusal(path, response)  # only 2xx answers are signed (401 SIGN_ERROR never is)
        self._verify(response)
        return response.json() if response.content else {}

    def _verify(self, response: httpx.Response) -> None:
        headers = response.headers
        if not v3_verify(
            public_key_pem=self.platform_public_key_pem,
            timestamp=headers.get("Wechatpay-Timestamp", ""),
            nonce=headers.get("Wechatpay-Nonce", ""),
            body=response.content,
            signature=headers.get("Wechatpay-Signature", ""),
        ):
            raise WeChatSignatureError("WeChat Pay v3 answer signature does not verify")


def _v3_refusal(path: str, response: httpx.Response) -> WeChatError:
    """The error a non-2xx v3 answer means: WeChat Pay's own {code, message}, or unavailable when it is not JSON."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("code"), str):
        return WeChatUnavailable(f"{path}: HTTP {response.status_code} without a WeChat Pay answer")
    code, message = data["code"], str(data.get("message", ""))
    if response.status_code >= 500:
        return WeChatUnavailable(f"{path}: HTTP {response.status_code} {code}: {message}")
    if code == "SIGN_ERROR":
        message = f"WeChat Pay refused our request signature ({message}): check the merchant's key and serial number"
    return WeChatPayError(code, message)
