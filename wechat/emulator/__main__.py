"""CLI for a running server's emulator: python -m wechat.emulator [--server URL] <command> ..."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

DEFAULT_SERVER = os.environ.get("HY_EMULATOR_SERVER", "http://127.0.0.1:8000")
HINT = "is the server running? start it with ./run.sh"


class CliError(Exception):
    """A failure to report on stderr with a non-zero exit."""


def _parser() -> argparse.ArgumentParser:
    """Build the argument parser (global options also accepted after the command)."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument(
        "--server", default=argparse.SUPPRESS, help=f"server URL (default {DEFAULT_SERVER}; env HY_EMULATOR_SERVER)"
    )
    common.add_argument("--mount", default=argparse.SUPPRESS, help="emulator mount (default /_emulator)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    common.add_argument("--appid", default=argparse.SUPPRESS, help="account appid (default: the configured one)")
    parser = argparse.ArgumentParser(
        prog="python -m wechat.emulator", parents=[common], description=__doc__, allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    firing = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    firing.add_argument("--repeat", type=int, default=1, help="deliver the same callback N times")
    firing.add_argument("--concurrent", action="store_true", help="deliver the repeats concurrently")

    scan = sub.add_parser("scan", allow_abbrev=False, parents=[common, firing], help="scan a store QR code")
    scan.add_argument("--store", required=True)
    scan.add_argument("--openid", required=True)
    scan.add_argument("--subscribed", action="store_true", help="user already follows: SCAN instead of subscribe")
    scan.add_argument(
        "--mode", choices=("plaintext", "compatible", "safe"), help="message mode (default: the account's)"
    )
    scan.add_argument("--plain", action="store_true", help="same as --mode plaintext")

    event = sub.add_parser(
        "event", allow_abbrev=False, parents=[common, firing], help="push any OA event; extra --Field value pairs"
    )
    event.add_argument("--openid", required=True)
    event.add_argument("--event", required=True, help="subscribe, SCAN, user_get_card, ...")
    event.add_argument("--event-key", dest="event_key")
    event.add_argument("--card-id", dest="card_id")
    event.add_argument("--code")
    event.add_argument("--outer-str", dest="outer_str", help="user_get_card: the claim code's outer_str (store code)")
    event.add_argument("--mobile", help="submit_membercard_user_info: the phone the member typed in")
    event.add_argument("--name", help="submit_membercard_user_info: the name the member typed in")
    event.add_argument(
        "--mode", choices=("plaintext", "compatible", "safe"), help="message mode (default: the account's)"
    )
    event.add_argument("--plain", action="store_true", help="same as --mode plaintext")

    mp_code = sub.add_parser("mp-code", allow_abbrev=False, parents=[common], help="make a wx.login code for an openid")
    mp_code.add_argument("--openid", required=True)
    mp_code.add_argument("--unionid")

    pay = sub.add_parser(
        "pay-success", allow_abbrev=False, parents=[common, firing], help="pay an order and send its notify"
    )
    pay.add_argument("--out-trade-no", dest="out_trade_no", required=True)
    refund = sub.add_parser(
        "refund-success", allow_abbrev=False, parents=[common, firing], help="finish a refund and send its notify"
    )
    refund.add_argument("--out-refund-no", dest="out_refund_no", required=True)

    calls = sub.add_parser("calls", allow_abbrev=False, parents=[common], help="list recorded WeChat API calls")
    calls.add_argument("--path", default="", help="path prefix, e.g. /card")
    sub.add_parser("expire-tokens", allow_abbrev=False, parents=[common], help="invalidate the account's access tokens")

    fail = sub.add_parser("fail-next", allow_abbrev=False, parents=[common], help="make the next calls to a path fail")
    fail.add_argument("--path", required=True)
    fail.add_argument("--errcode", default="-1")
    fail.add_argument("--times", type=int, default=1)
    return parser


def _extra_fields(pairs: list[str]) -> dict[str, str]:
    """Turn leftover ["--Field", "value", ...] into {"Field": "value"}."""
    if len(pairs) % 2 or any(not key.startswith("--") for key in pairs[::2]):
        raise CliError(f"extra event fields must be --Field value pairs, got: {' '.join(pairs)}")
    return {key[2:]: value for key, value in zip(pairs[::2], pairs[1::2], strict=True)}


def _mode(args: argparse.Namespace) -> dict[str, str]:
    """The push's message mode, when one is asked for (else the emulator uses the account's)."""
    if args.plain and args.mode not in (None, "plaintext"):
        raise CliError("--plain and --mode disagree")
    mode = "plaintext" if args.plain else args.mode
    return {"mode": mode} if mode else {}


def _request(args: argparse.Namespace, extra: dict[str, str]) -> tuple[str, str, dict[str, Any] | None]:
    """Return (method, control path, JSON body) for the parsed command."""
    base = {"appid": args.appid} if getattr(args, "appid", None) else {}
    firing = {"repeat": getattr(args, "repeat", 1), "concurrent": getattr(args, "concurrent", False)}
    command = args.command
    if command == "scan":
        body = {"store": args.store, "openid": args.openid, "subscribed": args.subscribed, **_mode(args)}
        return "POST", "scan", {**base, **firing, **body}
    if command == "event":
        body = {"openid": args.openid, "event": args.event, "extra": extra, **_mode(args)}
        body.update({k: getattr(args, k) for k in ("event_key", "card_id", "code", "outer_str") if getattr(args, k)})
        form = [("USER_FORM_INFO_FLAG_MOBILE", args.mobile), ("USER_FORM_INFO_FLAG_NAME", args.name)]
        if any(value for _, value in form):
            body["info"] = {
                "common_field_list": [{"name": k, "value": v} for k, v in form if v],
                "custom_field_list": [],
            }
        return "POST", "oa-event", {**base, **firing, **body}
    if command == "mp-code":
        return "POST", "mp-code", {**base, "openid": args.openid, **({"unionid": args.unionid} if args.unionid else {})}
    if command == "pay-success":
        return "POST", "pay-success", {**firing, "out_trade_no": args.out_trade_no}
    if command == "refund-success":
        return "POST", "refund-success", {**firing, "out_refund_no": args.out_refund_no}
    if command == "calls":
        return "GET", "calls" + (f"?path={args.path}" if args.path else ""), None
    if command == "expire-tokens":
        return "POST", "expire-tokens", base
    errcode: int | str = int(args.errcode) if args.errcode.lstrip("-").isdigit() else args.errcode
    return "POST", "fail-next", {"path": args.path, "errcode": errcode, "times": args.times}


def summarize(command: str, answer: dict[str, Any]) -> list[str]:
    """Return readable lines for an answer: one per delivery, else one for the result."""
    if "deliveries" in answer:
        total = len(answer["deliveries"])
        head = {k: v for k, v in answer.items() if k in ("event", "out_trade_no", "out_refund_no", "code", "card_id")}
        label = " ".join(f"{k}={v}" for k, v in head.items())
        lines = []
        for index, item in enumerate(answer["deliveries"], 1):
            reply = item.get("reply") or {}
            shown = f"reply: {reply.get('Content') or reply.get('MsgType')}" if reply else item.get("body", "")
            outcome = item.get("error") or " ".join(str(shown).split())[:160] or "(empty body)"
            lines.append(f"delivery {index}/{total} {label} -> {item.get('status') or 'FAILED'} {outcome}")
        return lines
    if command == "calls":
        calls = answer.get("calls", [])
        return [
            f"{c['at']} {c['method']} {c['path']} {json.dumps(c['body'] or c['query'], ensure_ascii=False)[:100]}"
            for c in calls
        ] or ["no calls recorded"]
    return [" ".join(f"{k}={v}" for k, v in answer.items())]


def main(argv: list[str] | None = None, *, transport: httpx.BaseTransport | None = None) -> int:
    """Run one command against the server's emulator; return the exit code."""
    args, leftovers = _parser().parse_known_args(argv)
    server = getattr(args, "server", DEFAULT_SERVER).rstrip("/")
    mount = "/" + getattr(args, "mount", "/_emulator").strip("/")
    try:
        extra = _extra_fields(leftovers) if args.command == "event" else {}
        if leftovers and args.command != "event":
            raise CliError(f"unrecognized arguments: {' '.join(leftovers)}")
        method, path, body = _request(args, extra)
        url = f"{server}{mount}/control/{path}"
        with httpx.Client(transport=transport, timeout=30.0) as client:
            try:
                response = client.request(method, url, json=body)
            except httpx.TransportError as exc:
                raise CliError(f"cannot reach {server} ({type(exc).__name__}): {HINT}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        failure = answer.get("error") if isinstance(answer, dict) else None
        if response.status_code == 404 and not (
            isinstance(failure, dict) and failure.get("code") == "emulator.bad_request"
        ):
            raise CliError(
                f"{url} not found: is the emulator enabled (wechat.emulator.enabled) and mounted at {mount}?"
            )
        if not isinstance(answer, dict):
            raise CliError(f"{url} answered {response.status_code} with non-JSON: {response.text[:200]}")
        if response.status_code >= 400:
            message = failure.get("message") if isinstance(failure, dict) else answer
            raise CliError(f"emulator refused ({response.status_code}): {message}")
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if HINT in str(error) else 1
    print(
        json.dumps(answer, ensure_ascii=False, indent=2)
        if getattr(args, "json", False)
        else "\n".join(summarize(args.command, answer))
    )
    failed = [d for d in answer.get("deliveries", []) if not d.get("status") or d["status"] >= 400]
    if failed:
        print(f"error: the server rejected {len(failed)} of {len(answer['deliveries'])} deliveries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
