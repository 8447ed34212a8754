"""The merchant's WeChat accounts (official account, mini-program, WeChat Pay): owner-only, secrets never returned."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field
from sanic import Blueprint
from sanic.request import Request

from models.tenancy import merchants as tenancy
from models.tenancy import wechat_setup
from server.api import Out, Schema, endpoint, ok

bp = Blueprint("wechat_accounts", url_prefix="/api/wechat-accounts")
OWNER = ("owner",)
PEM_MAX = 16384


class AccountOut(Out):
    kind: str
    appid: str = Field(description="official account / mini-program appid ('' for pay)")
    mch_id: str = Field(description="WeChat Pay merchant id ('' for apps)")
    api_base: str
    api_version: str = Field(description="pay only: v3 or v2")
    message_mode: str = Field(description="official account only: plaintext, compatible or safe ('' otherwise)")
    updated_at: datetime
    secrets_set: dict[str, bool] = Field(description="which secret fields are stored; their values are never shown")


class AccountList(Out):
    items: list[AccountOut]


class OfficialIn(Schema):
    appid: str = Field(min_length=18, max_length=18, description="wx + 16 letters/digits")
    secret: str = Field(min_length=1, max_length=64, description="AppSecret")
    token: str = Field(min_length=3, max_length=32, description="message Token set in the console")
    encoding_aes_key: str = Field(min_length=43, max_length=43, description="EncodingAESKey")
    message_mode: Literal["plaintext", "compatible", "safe"] = Field(
        "safe",
        description="the message mode (消息加解密方式) chosen in the WeChat console: plaintext pushes are refused "
        "unless it is plaintext",
    )
    api_base: str = Field("", max_length=255, description="default https://api.weixin.qq.com")


class MiniprogramIn(Schema):
    appid: str = Field(min_length=18, max_length=18)
    secret: str = Field(min_length=1, max_length=64, description="AppSecret")
    api_base: str = Field("", max_length=255, description="default https://api.weixin.qq.com")


class PayIn(Schema):
    mch_id: str = Field(min_length=8, max_length=12)
    api_version: Literal["v3", "v2"] = "v3"
    api_key: str = Field("", max_length=64, description="API v2 key (32 chars; required for v2)")
    api_v3_key: str = Field("", max_length=64, description="API v3 key (32 bytes)")
    cert_serial_no: str = Field("", max_length=40, description="serial number of the merchant API certificate")
    private_key: str = Field("", max_length=PEM_MAX, description="apiclient_key.pem, as a string")
    platform_public_key_id: str = Field("", max_length=80, description="WeChat Pay public key id (PUB_KEY_ID_...)")
    platform_public_key: str = Field("", max_length=PEM_MAX, description="WeChat Pay public key PEM (pub_key.pem)")
    platform_certificate: str = Field(
        "", max_length=PEM_MAX, description="or: a WeChat Pay platform certificate PEM instead of the public key"
    )
    api_base: str = Field("", max_length=255, description="default https://api.mch.weixin.qq.com")


def _out(account: wechat_setup.AccountView) -> AccountOut:
    return AccountOut.model_validate(account)


async def _put(request: Request, kind: str, body: Schema):
    settings = request.app.ctx.settings
    creds = wechat_setup.check_credentials(
        kind,
        body.model_dump(),
        allow_emulator=not settings.is_production,
        default_to_emulator=settings.wechat.emulator.enabled,
    )
    merchant = await tenancy.get_merchant(merchant_id=request.ctx.principal.merchant_id)
    account = await wechat_setup.set_wechat_account(request.app.ctx.wechat, merchant=merchant, creds=creds)
    return ok(_out(wechat_setup.view(account)))


PUT_DESCRIPTION = (
    "Checks the fields' formats, then makes one test call with them ({call}); a refusal is 422 "
    "`wechat.credentials_rejected` with WeChat's errcode/errmsg and nothing is saved. Secrets are stored encrypted "
    "and never returned. An appid/mch_id of another merchant, or a second account of this kind, is 409."
)


@bp.get("")
@endpoint(summary="List the merchant's WeChat accounts", tag="wechat", roles=OWNER, response=AccountList)
async def list_accounts(request: Request):
    accounts = await wechat_setup.list_accounts(merchant_id=request.ctx.principal.merchant_id)
    return ok(AccountList(items=[_out(a) for a in accounts]))


@bp.put("/official")
@endpoint(
    summary="Set the official account",
    tag="wechat",
    roles=OWNER,
    body=OfficialIn,
    response=AccountOut,
    errors=(409, 503),
    description=PUT_DESCRIPTION.format(call="a stable access token"),
)
async def put_official(request: Request, body: OfficialIn):
    return await _put(request, "official", body)


@bp.put("/miniprogram")
@endpoint(
    summary="Set the mini-program",
    tag="wechat",
    roles=OWNER,
    body=MiniprogramIn,
    response=AccountOut,
    errors=(409, 503),
    description=PUT_DESCRIPTION.format(call="a stable access token"),
)
async def put_miniprogram(request: Request, body: MiniprogramIn):
    return await _put(request, "miniprogram", body)


@bp.put("/pay")
@endpoint(
    summary="Set the WeChat Pay merchant",
    tag="wechat",
    roles=OWNER,
    body=PayIn,
    response=AccountOut,
    errors=(409, 503),
    description=PUT_DESCRIPTION.format(
        call="API v3: GET /v3/certificates signed with the private key and serial, its answer verified with the "
        "platform public key or certificate; API v2 has no such call"
    ),
)
async def put_pay(request: Request, body: PayIn):
    return await _put(request, "pay", body)
