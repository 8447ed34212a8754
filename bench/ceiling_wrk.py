"""wrk driver for bench/ceiling.py: the POST script with unique idempotency keys, and output parsing."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

POINTS_BODY = """'{"delta":1,"reason":"bench","kind":"adjust","idempotency_key":"'
  .. tag .. "-" .. tid .. "-" .. counter .. '"}'"""

LUA = """
local paths = {%(paths)s}
local bodies = {%(bodies)s}
local headers = {["Content-Type"] = "%(content_type)s"%(auth)s}
local tokens = {%(tokens)s}
local tag = "%(tag)s"
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end
local counter = 0
bad = {}
sample = ""
function request()
  counter = counter + 1
  local path = paths[(counter %% #paths) + 1]
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[(counter %% #tokens) + 1]
  end
  if "%(method)s" == "GET" then
    return wrk.format("GET", path, headers)
  end
  local body
  if #bodies > 0 then
    body = bodies[((tid - 1) * %(per_thread)d + counter - 1) %% #bodies + 1]
  else
    body = %(body)s
  end
  return wrk.format("%(method)s", path, headers, body)
end
function response(status, hdrs, body)
  if status >= 300 then
    bad[status] = (bad[status] or 0) + 1
    if sample == "" then sample = string.sub(body or "", 1, 200) end
  end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("bad")) do
      io.write(string.format("STATUS %%d %%d %%s\\n", status, n, string.gsub(t:get("sample"), "\\n", " ")))
    end
  end
end
"""


@dataclass
class Row:
    name: str
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non2xx: int = 0
    socket_errors: int = 0
    statuses: list[str] = field(default_factory=list)
    note: str = ""
    cpu_s: float = 0.0  # CPU seconds (user + system) of the server's process group during the measured run


def to_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(name: str, output: str) -> Row:
    row = Row(name)
    if match := re.search(r"Requests/sec:\s+([\d.]+)", output):
        row.rps = float(match.group(1))
    if match := re.search(r"^\s+50%\s+(\S+)", output, re.M):
        row.p50_ms = to_ms(match.group(1))
    if match := re.search(r"^\s+99%\s+(\S+)", output, re.M):
        row.p99_ms = to_ms(match.group(1))
    if match := re.search(r"(\d+) requests in", output):
        row.requests = int(match.group(1))
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        row.non2xx = int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        row.socket_errors = sum(int(n) for n in match.groups())
    row.statuses = [line[len("STATUS ") :] for line in output.splitlines() if line.startswith("STATUS ")]
    return row


def lua_script(
    tmp: Path,
    *,
    paths: list[str],
    token: str | None,
    tag: str,
    method: str = "POST",
    body: str = POINTS_BODY,
    bodies: list[str] | None = None,
    per_thread: int = 0,
    content_type: str = "application/json",
    tokens: list[str] | None = None,
) -> Path:
    """A wrk script over paths; the body is a Lua expression of tag/tid/counter, or taken in turn from bodies
    (thread t starts at t*per_thread, so threads do not replay each other's bodies); `tokens`, when given, are
    sent in turn as the bearer token (one per member for the member's own reads)."""
    path = tmp / f"{tag}.lua"
    path.write_text(
        LUA
        % {
            "paths": ", ".join(json.dumps(p) for p in paths),
            "bodies": ", ".join(json.dumps(b) for b in bodies or []),
            "auth": f', ["Authorization"] = "Bearer {token}"' if token else "",
            "tag": tag,
            "method": method,
            "body": body,
            "per_thread": per_thread,
            "content_type": content_type,
            "tokens": ", ".join(json.dumps(t) for t in tokens or []),
        }
    )
    return path


def wrk(name: str, url: str, args: argparse.Namespace, script: Path | None = None, seconds: int = 0) -> Row:
    duration = seconds or args.duration
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    cmd += ["-s", str(script)] if script else []
    done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(name, done.stdout)
