"""Async WeChat API client: shared access tokens in Redis, errcode handling, emulator-aware base URLs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, cast

import httpx
import redis.asyncio as aioredis

from server.config import EMULATOR, Settings
from server.redis import Keys
from wechat.errors import WeChatAPIError, WeChatError, WeChatUnavailable
from wechat.pay import PayV2Client, PayV3Client

log = logging.getLogger("huiyuan.wechat")

TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
RETRY_ERRCODES = frozenset({-1, 45009})
REFRESH_MARGIN = 300  # seconds before WeChat's expiry that we fetch a new token


@dataclass(frozen=True)
class AppCredentials:
    """What a client needs for one official account or mini-program."""

    appid: str
    secret: str
    api_base: str


class WeChatGateway:
    """Per-process entry point: one HTTP connection pool, clients per account."""

    def __init__(
        self, *, settings: Settings, redis: aioredis.Redis, keys: Keys, transport: Any = None, self_url: str
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.self_url = self_url.rstrip("/")
        self.http = httpx.AsyncClient(transport=transport, timeout=settings.wechat.http_timeout)
        self.retry_delays = (0.2, 0.5, 1.0)

    def resolve_base(self, api_base: str) -> str:
        """'emulator' means the emulator mounted in this server; anything else is scheme://host[/prefix]."""
        if api_base == EMULATOR:
            return self.self_url + self.settings.wechat.emulator.mount
        return api_base.rstrip("/")

    def app_client(self, credentials: AppCredentials) -> AppClient:
        return AppClient(gateway=self, credentials=credentials)

    async def official_client(self, appid: str | None = None) -> AppClient:
        """Client of an official account stored for a merchant (the default merchant's when appid is None)."""
        return await self._client("official", appid)

    async def miniprogram_client(self, appid: str | None = None) -> AppClient:
        return await self._client("miniprogram", appid)

    async def pay_client(self, mch_id: str | None = None, *, version: str | None = None) -> PayV2Client | PayV3Client:
        """Pay client of a merchant id (the default merchant's when None), in its configured API version."""
        from models.tenancy.merchants import find_wechat_account

        account = await find_wechat_account(kind="pay", key=mch_id)
        if account is None:
            raise WeChatError(f"no pay account {mch_id or '(default)'} is configured")
        keys = account.secrets()
        base = self.resolve_base(account.api_base)
        if (version or keys.get("api_version", "v3")) == "v2":
            return PayV2Client(http=self.http, base=base, mch_id=account.mch_id, api_key=keys["api_key"])
        return PayV3Client(
            http=self.http,
            base=base,
            mch_id=account.mch_id,
            serial_no=keys["cert_serial_no"],
            private_key_pem=keys["private_key"],
            platform_public_key_pem=keys["platform_public_key"],
        )

    async def _client(self, kind: str, appid: str | None) -> AppClient:
        from models.tenancy.merchants import find_wechat_account

        account = await find_wechat_account(kind=kind, key=appid)
        if account is None:
            raise WeChatError(f"no {kind} account {appid or '(default)'} is configured")
        credentials = AppCredentials(appid=account.appid, secret=account.secrets()["secret"], api_base=account.api_base)
        return self.app_client(credentials)

    async def aclose(self) -> None:
        await self.http.aclose()


class AppClient:
    """Calls for one appid (official account or mini-program) with the shared access token."""

    def __init__(self, *, gateway: WeChatGateway, credentials: AppCredentials) -> None:
        self.gateway = gateway
        self.credentials = credentials
        self.base = gateway.resolve_base(credentials.api_base)
        self._token_key = gateway.keys("wx", "{" + credentials.appid + "}", "token")
        self._lock_key = gateway.keys("wx", "{" + credentials.appid + "}", "token-lock")

    async def access_token(self, *, stale: str | None = None) -> str:
        """The shared token; refetched once under a Redis lock when missing or equal to `stale`."""
        redis = self.gateway.redis
        token = await redis.get(self._token_key)
        if token and token != stale:
            return cast(str, token)  # the client decodes responses
        async with redis.lock(self._lock_key, timeout=15, blocking_timeout=15):
            token = await redis.get(self._token_key)
            if token and token != stale:
                return cast(str, token)  # the client decodes responses
            data = await self._request(
                "POST",
                "/cgi-bin/stable_token",
                json={
                    "grant_type": "client_credential",
                    "appid": self.credentials.appid,
                    "secret": self.credentials.secret,
                    "force_refresh": False,
                },
            )
            token = data["access_token"]
            ttl = max(60, int(data.get("expires_in", 7200)) - REFRESH_MARGIN)
            await redis.set(self._token_key, token, ex=ttl)
            log.info("refreshed access token for %s (ttl %ss)", self.credentials.appid, ttl)
            return token

    async def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None, raw: bool = False
    ) -> Any:
        """Call an API that takes access_token; refreshes once on 40001/42001, backs off on -1/45009."""
        token = await self.access_token()
        refreshed = False
        attempt = 0
        while True:
            try:
                return await self._request(
                    method, path, params={**(params or {}), "access_token": token}, json=json, raw=raw
                )
            except WeChatAPIError as exc:
                if exc.errcode in TOKEN_ERRCODES and not refreshed:
                    refreshed = True
                    token = await self.access_token(stale=token)
                    continue
                if exc.errcode in RETRY_ERRCODES and attempt < len(self.gateway.retry_delays):
                    await asyncio.sleep(self.gateway.retry_delays[attempt])
                    attempt += 1
                    continue
                raise

    async def call_public(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None
    ) -> Any:
        """Call an API authenticated by appid/secret in the query (jscode2session)."""
        return await self._request(method, path, params=params, json=json)

    async def _request(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None, raw: bool = False
    ) -> Any:
        url = self.base + path
        delays = self.gateway.retry_delays
        for attempt in range(len(delays) + 1):
            try:
                response = await self.gateway.http.request(method, url, params=params, json=json)
            except httpx.TransportError as exc:
                if attempt == len(delays):
                    raise WeChatUnavailable(f"{path}: {type(exc).__name__}") from exc
                await asyncio.sleep(delays[attempt])
                continue
            if response.status_code >= 500 and attempt < len(delays):
                await asyncio.sleep(delays[attempt])
                continue
            break
        if response.status_code >= 400:
            raise WeChatUnavailable(f"{path}: HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "")
        if raw and not content_type.startswith(("application/json", "text/plain")):
            return response.content
        try:
            data = response.json()
        except ValueError as exc:
            raise WeChatUnavailable(f"{path}: answer is not JSON") from exc
        errcode = int(data.get("errcode", 0) or 0) if isinstance(data, dict) else 0
        if errcode != 0:
            raise WeChatAPIError(errcode, str(data.get("errmsg", "")))
        return data
