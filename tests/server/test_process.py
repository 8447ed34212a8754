"""The real entry point: `python -m server` starts, migrates, seeds, serves, and starts again on the same data."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import _fresh_mysql_database

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen:
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


def _wait_healthy(
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


def _stop(proc: subprocess.Popen, log: Path) -> str:
    """SIGINT, as an operator's Ctrl-C: the server must be gone within 30 s; its output."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise AssertionError(f"server did not stop on SIGINT within 30 s:\n{_output(proc, log)[-4000:]}") from None
    _kill_group(proc)  # nothing of it may outlive it
    return _output(proc, log)


@pytest.fixture
async def process_env(settings, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUIYUAN_")}
    env["HUIYUAN_CONFIG"] = str(tmp_path / "none.yaml")
    if settings.database.url.startswith("mysql://"):
        url = settings.database.url + "_proc"
        await _fresh_mysql_database(url)
        env.update(
            HUIYUAN_DATABASE__URL=url,
            HUIYUAN_REDIS__URL=settings.redis.url,
            HUIYUAN_REDIS__KEY_PREFIX=f"hyproc:{os.getpid()}:",
        )
    else:
        env.update(HUIYUAN_DATABASE__URL=f"sqlite://{tmp_path / 'data' / 'huiyuan.sqlite3'}")
    return env


def test_server_starts_twice_on_the_same_database_and_serves_the_api(process_env, settings, tmp_path):
    workers = 2 if settings.database.url.startswith("mysql://") else 1
    for run in range(2):
        port = _free_port()
        env = {**process_env, "HUIYUAN_SERVER__PORT": str(port)}
        log = tmp_path / f"server-{run}.log"
        proc = _start(env, port, workers, log)
        try:
            _wait_healthy(proc, port, log=log, workers=workers)
            base = f"http://127.0.0.1:{port}"
            login = httpx.post(f"{base}/api/auth/login", json={"username": "admin", "password": "huiyuan-demo"})
            assert login.status_code == 200, login.text
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            created = httpx.post(f"{base}/api/members/", json={"name": f"run {run}"}, headers=headers)
            assert created.status_code == 201, created.text
            listed = httpx.get(f"{base}/api/members/", headers=headers).json()
            assert listed["total"] == run + 1
            assert httpx.get(f"{base}/docs/openapi.json").status_code == 200
            metrics = httpx.get(f"{base}/metrics").text
            assert "huiyuan_http_requests_total" in metrics
        finally:
            output = _stop(proc, log)
        assert "Admin login: username 'admin', password 'huiyuan-demo'" in output, output
