"""A real server process for tests: `python -m server` on a free port, in a process group of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.config import Settings
from tests.conftest import _fresh_mysql_database

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen:
    """The server in a process group of its own, its output in `log` (an unread pipe can stall it, and a pipe
    held open by an orphaned worker would hang the reader)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(port), "--workers", str(workers)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _output(proc: subprocess.Popen, log: Path | None) -> str:
    if log is not None:
        return log.read_text(errors="replace")
    return proc.stdout.read() if proc.stdout else ""


def wait_healthy(
    proc: subprocess.Popen, port: int, timeout: float = 120, *, log: Path | None = None, workers: int = 1
) -> None:
    """Until /healthz answers 200 and, with several workers, every worker said it is ready (stopping a worker
    half-way through its start is another test)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{_output(proc, log)}")
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            ready = workers == 1 or log is None or _output(proc, log).count("Worker ready") >= workers
            if answer.status_code == 200 and ready:
                return
            last = f"{answer.status_code} {answer.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    _kill_group(proc)
    raise AssertionError(
        f"server did not become healthy in {timeout:.0f} s (last: {last}):\n{_output(proc, log)[-4000:]}"
    )


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the server and whatever it started (workers, Sanic's manager process)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def stop(proc: subprocess.Popen, log: Path) -> str:
    """SIGINT, as an operator's Ctrl-C: the server must be gone within 30 s; its output."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise AssertionError(f"server did not stop on SIGINT within 30 s:\n{_output(proc, log)[-4000:]}") from None
    _kill_group(proc)  # nothing of it may outlive it
    return _output(proc, log)


async def server_env(settings: Settings, tmp_path: Path, *, database_suffix: str) -> dict[str, str]:
    """The environment of a server process on a fresh database of its own: SQLite under tmp_path, or on MariaDB
    the suite's database name + database_suffix (dropped and re-created) with the suite's Redis under a prefix
    of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIYUAN_")}
    env["HUIYUAN_CONFIG"] = str(tmp_path / "none.yaml")
    if settings.database.url.startswith("mysql://"):
        url = settings.database.url + database_suffix
        await _fresh_mysql_database(url)
        env.update(
            HUIYUAN_DATABASE__URL=url,
            HUIYUAN_REDIS__URL=settings.redis.url,
            HUIYUAN_REDIS__KEY_PREFIX=f"hy{database_suffix.strip('_')}:{os.getpid()}:",
        )
    else:
        env.update(HUIYUAN_DATABASE__URL=f"sqlite://{tmp_path / 'data' / 'huiyuan.sqlite3'}")
    return env
