"""Async WeChat API client: shared access tokens in Redis, errcode handling, emulator-aware base URLs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import httpx
import redis.asyncio as aioredis

from wechat.errors import WeChatAPIError, WeChatError, WeChatUnavailable
from wechat.pay import PayV2Client, PayV3Client

log = logging.getLogger("huiyuan.wechat")

TOKEN_ERRCODES = frozenset({40001, 40014, 42001})
RETRY_ERRCODES = frozenset({-1})  # system busy; 45009 is a daily quota, not a rate: retrying cannot help
REFRESH_MARGIN = 300  # seconds before WeChat's expiry that we fetch a new token
EMULATOR = "emulator"  # the api_base meaning "the emulator mounted in this server"


class WeChatAccount(Protocol):
    """What the gateway reads of a stored account (an official account, mini-program or pay merchant)."""

    @property
    def appid(self) -> str: ...

    @property
    def mch_id(self) -> str: ...

    @property
    def api_base(self) -> str: ...

    def secrets(self) -> dict[str, str]: ...


class FindAccount(Protocol):
    """The credential lookup: the account of kind official/miniprogram/pay for an appid or mch_id (None: default)."""

    def __call__(self, *, kind: str, key: str | None) -> Awaitable[WeChatAccount | None]: ...


@dataclass(frozen=True)
class AppCredentials:
    """What a client needs for one official account or mini-program."""

    appid: str
    secret: str
    api_base: str


class WeChatGateway:
    """Per-process entry point: one HTTP connection pool, clients per account."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        keys: Callable[..., str],
        find_account: FindAccount,
        self_url: str,
        emulator_base: str = "",
        http_timeout: float = 5.0,
        transport: Any = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.find_account = find_account
        self.self_url = self_url.rstrip("/")
        self.emulator_base = emulator_base.rstrip("/")
        self.http = httpx.AsyncClient(transport=transport, timeout=http_timeout)
        self.retry_delays = (0.2, 0.5, 1.0)

    def resolve_base(self, api_base: str) -> str:
        """'emulator' means the emulator mounted in this server; anything else is scheme://host[/prefix]."""
        if api_base == EMULATOR:
            if not self.emulator_base:
                raise WeChatError("an account points at the emulator, but no emulator is mounted")
            return self.emulator_base
        return api_base.rstrip("/")

    def app_client(self, credentials: AppCredentials) -> AppClient:
        return AppClient(gateway=self, credentials=credentials)

    def account_client(self, account: WeChatAccount) -> AppClient:
        """Client of a stored official account or mini-program."""
        return self.app_client(
            AppCredentials(appid=account.appid, secret=account.secrets()["secret"], api_base=account.api_base)
        )

    async def official_client(self, appid: str | None = None) -> AppClient:
        """Client of an official account stored for a merchant (the default merchant's when appid is None)."""
        return await self._client("official", appid)

    async def miniprogram_client(self, appid: str | None = None) -> AppClient:
        return await self._client("miniprogram", appid)

    async def pay_client(self, mch_id: str | None = None, *, version: str | None = None) -> PayV2Client | PayV3Client:
        """Pay client of a merchant id (the default merchant's when None), in its configured API version."""
        account = await self.find_account(kind="pay", key=mch_id)
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
        account = await self.find_account(kind=kind, key=appid)
        if account is None:
            raise WeChatError(f"no {kind} account {appid or '(default)'} is configured")
        return self.account_client(account)

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
