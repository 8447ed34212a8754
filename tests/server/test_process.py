"""The real entry point: `python -m server` starts, migrates, seeds, serves, and starts again on the same data."""

from __future__ import annotations

import httpx
import pytest

from tests.server.live import free_port, server_env, start, stop, wait_healthy


@pytest.fixture
async def process_env(settings, tmp_path) -> dict[str, str]:
    return await server_env(settings, tmp_path, database_suffix="_proc")


def test_server_starts_twice_on_the_same_database_and_serves_the_api(process_env, settings, tmp_path):
    workers = 2 if settings.database.url.startswith("mysql://") else 1
    for run in range(2):
        port = free_port()
        env = {**process_env, "HUIYUAN_SERVER__PORT": str(port)}
        log = tmp_path / f"server-{run}.log"
        proc = start(env, port, workers, log)
        try:
            wait_healthy(proc, port, log=log, workers=workers)
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
            output = stop(proc, log)
        assert "Admin login: username 'admin', password 'huiyuan-demo'" in output, output
