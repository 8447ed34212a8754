"""Shared plumbing for emulated WeChat endpoints: call recording, fault injection, auth, wire replies."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sanic import Blueprint, HTTPResponse
from sanic.request import Request

from wechat.emulator.state import EmulatorState, Fault, MerchantAccount, normalize_path
from wechat.errors import WeChatXMLError
from wechat.xmlutil import parse_xml, to_xml

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40029: "invalid code",
    40125: "invalid appsecret",
    40163: "code been used",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41008: "missing code",
    42001: "access_token expired",
    47001: "data format error",
}


@dataclass
class Call:
    """One emulated API call as a handler sees it."""

    request: Request
    state: EmulatorState
    path: str
    body: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    appid: str = ""
    merchant: MerchantAccount | None = None

    def arg(self, name: str) -> str:
        """Return one query-string value ('' when absent)."""
        return self.request.args.get(name) or ""


Handler = Callable[[Call], Awaitable[HTTPResponse]]
Authorizer = Callable[[Call], Awaitable[HTTPResponse | None]]


def dump_json(data: Any) -> bytes:
    """Serialize as WeChat does: compact UTF-8 JSON."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def wx_json(data: dict[str, Any], status: int = 200) -> HTTPResponse:
    """Answer with a WeChat JSON body."""
    return HTTPResponse(dump_json(data), status=status, content_type="application/json; charset=utf-8")


def wx_ok(**fields: Any) -> HTTPResponse:
    """Answer errcode 0 with extra fields."""
    return wx_json({"errcode": 0, "errmsg": "ok", **fields})


def wx_error(errcode: int, errmsg: str | None = None) -> HTTPResponse:
    """Answer a WeChat error (HTTP 200 with errcode/errmsg, like WeChat)."""
    message = errmsg or ERRMSG.get(errcode, "invalid request")
    return wx_json({"errcode": errcode, "errmsg": f"{message} rid: emulator"})


def xml_reply(fields: dict[str, Any]) -> HTTPResponse:
    """Answer a pay v2 XML body."""
    return HTTPResponse(to_xml(fields), content_type="text/xml; charset=utf-8")


def v2_fail(return_msg: str, err_code: str | None = None) -> HTTPResponse:
    """Answer a pay v2 communication failure (return_code FAIL)."""
    fields: dict[str, Any] = {"return_code": "FAIL", "return_msg": return_msg}
    if err_code:
        fields["err_code"] = err_code
    return xml_reply(fields)


def _parse_body(request: Request, kind: str) -> dict[str, Any] | None:
    """Parse the request body as JSON or XML; {} for GET, None when malformed."""
    if kind == "none" or (request.method == "GET" and not request.body):
        return {}
    if kind == "xml":
        try:
            return dict(parse_xml(request.body))
        except WeChatXMLError:
            return None
    if not request.body:
        return None
    try:
        data = json.loads(request.body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def fault_reply(fault: Fault, kind: str, signer: Callable[[int, Any], HTTPResponse] | None) -> HTTPResponse:
    """Render an injected failure in the endpoint's own wire format (or as a bare page, or unsigned)."""
    if fault.raw is not None:
        return HTTPResponse(fault.raw, status=fault.status or 502, content_type="text/html")
    if kind == "v3" and fault.unsigned:
        code = fault.errcode if isinstance(fault.errcode, str) else "SIGN_ERROR"
        answer = json.dumps({"code": code, "message": fault.errmsg or "签名错误"}, ensure_ascii=False)
        return HTTPResponse(answer, status=fault.status or 401, content_type="application/json")
    if kind == "xml":
        return v2_fail(fault.errmsg or str(fault.errcode), str(fault.errcode))
    if kind == "v3" and signer is not None:
        code = fault.errcode if isinstance(fault.errcode, str) else "SYSTEM_ERROR"
        return signer(fault.status or 500, {"code": code, "message": fault.errmsg or "injected failure"})
    errcode = fault.errcode if isinstance(fault.errcode, int) else -1
    response = wx_error(errcode, fault.errmsg or None)
    response.status = fault.status or 200
    return response


class Api:
    """Registers emulated WeChat endpoints on the blueprint with recording, faults and auth."""

    def __init__(self, bp: Blueprint, state: EmulatorState) -> None:
        """Bind to one blueprint and one state."""
        self.bp = bp
        self.state = state
        self.v3_signer: Callable[[int, Any], HTTPResponse] | None = None
        self.v3_authorizer: Authorizer | None = None

    def route(
        self, path: str, method: str = "POST", *, kind: str = "json", auth: str = "token"
    ) -> Callable[[Handler], Handler]:
        """Register handler for a WeChat path; kind is json|xml|none|v3, auth is token|none|v3."""

        def register(handler: Handler) -> Handler:
            async def endpoint(request: Request, **params: str) -> HTTPResponse:
                return await self._serve(request, path, kind, auth, handler, params)

            name = method.lower() + "_" + re.sub(r"[^0-9A-Za-z]+", "_", path).strip("_")
            self.bp.add_route(endpoint, path, methods=[method], name=name)
            return handler

        return register

    async def _serve(
        self, request: Request, template: str, kind: str, auth: str, handler: Handler, params: dict[str, str]
    ) -> HTTPResponse:
        """Record the call, apply an injected failure, authenticate, then run the handler."""
        mount = self.bp.url_prefix or ""
        path = request.path[len(mount) :] if request.path.startswith(mount) else request.path
        body = _parse_body(request, "json" if kind == "v3" else kind)
        query = {key: request.args.get(key) for key in request.args}
        self.state.record(
            method=request.method,
            path=path,
            query=query,
            body=body if body is not None else request.body.decode("utf-8", "replace"),
        )
        fault = self.state.take_fault(path, template)
        if fault is not None:
            return fault_reply(fault, kind, self.v3_signer)
        call = Call(request=request, state=self.state, path=path, body=body or {}, params=params)
        if auth == "token":
            appid, errcode = self.state.check_token(request.args.get("access_token"))
            if appid is None:
                return wx_error(errcode)
            call.appid = appid
        elif auth == "v3" and self.v3_authorizer is not None:
            denied = await self.v3_authorizer(call)
            if denied is not None:
                return denied
        if body is None:
            if kind == "xml":
                return v2_fail("XML格式错误 (invalid XML)")
            if kind == "v3" and self.v3_signer is not None:
                return self.v3_signer(400, {"code": "PARAM_ERROR", "message": "body is not a JSON object"})
            return wx_error(47001)
        return await handler(call)


def strip_mount(path: str, mount: str) -> str:
    """Return a WeChat path without the emulator mount prefix."""
    if mount and path.startswith(mount):
        path = path[len(mount) :]
    return normalize_path(path)
