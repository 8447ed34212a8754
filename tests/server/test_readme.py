"""README.md's walk-through, pasted in order into one bash shell against a live server, works as written."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from tests.server.live import ROOT, free_port, server_env, start, stop, wait_healthy

MARKER = "<!-- walkthrough -->"
BLOCK = re.compile(re.escape(MARKER) + r"\s*```bash\n(.*?)```", re.DOTALL)
# Lines a newcomer types in the first terminal: the test starts the server itself.
SKIPPED = ("./run.sh", "./test.sh")
# Answers the README quotes in its comments; each must be in the README and in what the server really said.
QUOTED = (
    '"status":"ok","database":"ok","redis":"ok"',
    '"balance":100}',
    '"store_id":1',
    '"points":100',
    '"balance":140}',
    '"bonus": 140',
    '"balance":392',
    '"next_settlement"',
    '"streak":1,"points":5',
    '{"balance":12000,"principal":10000,"bonus":2000,',
    '{"balance":0,"principal":0,"bonus":0,',
    "0 points lots expired",
    "1 rows, created 1",
    '"points":30',
    '"due":4440,',
    '"points_back":174,',
    '"unknown":[{"line":3,',
    '{"count":2}',
)
# Every curl fails the script on an HTTP error (the README's `curl -s` would print the error body and go on).
PREAMBLE = 'curl() { command curl -sS --fail-with-body "$@"; }\n'


def walkthrough_blocks(readme: str) -> list[str]:
    """The ```bash blocks marked as walk-through, in order, without the lines that start the server."""
    blocks = []
    for block in BLOCK.findall(readme):
        lines = [line for line in block.splitlines() if not line.lstrip().startswith(SKIPPED)]
        blocks.append("\n".join(lines) + "\n")
    return blocks


def test_every_marked_block_is_a_bash_block_and_quotes_what_the_test_checks():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = walkthrough_blocks(readme)
    assert len(blocks) == readme.count(MARKER) >= 6
    text = "".join(blocks)
    assert [quote for quote in QUOTED if quote not in text] == []


@pytest.fixture
async def readme_env(settings, tmp_path) -> dict[str, str]:
    env = await server_env(settings, tmp_path, database_suffix="_readme")
    del env["HUIYUAN_CONFIG"]  # the repository's config.yaml, as after a fresh clone
    return env


def test_readme_walkthrough_runs_against_a_live_server(readme_env, tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    port = free_port()
    script = PREAMBLE + "".join(walkthrough_blocks(readme))
    script = script.replace("localhost:8000", f"127.0.0.1:{port}")
    # the emulator CLI's --server default is the README's server, http://127.0.0.1:8000
    script = script.replace("-m wechat.emulator", f"-m wechat.emulator --server http://127.0.0.1:{port}")
    if not (ROOT / ".venv" / "bin" / "python").exists():
        script = script.replace(".venv/bin/python ", shlex.quote(sys.executable) + " ")
    env = {
        **readme_env,
        "HUIYUAN_SERVER__PORT": str(port),
        "HUIYUAN_JOBS__OUTBOX_IDLE_SECONDS": "0.2",  # the README allows the outbox "a second or two"
    }
    log = tmp_path / "server.log"
    proc = start(env, port, 1, log)
    try:
        wait_healthy(proc, port, log=log)
        walk = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,  # a loaded CI machine; about 15 s on an idle one
        )
    finally:
        output = stop(proc, log)
    report = f"{walk.stdout[-3000:]}\n--- stderr\n{walk.stderr[-3000:]}\n--- server\n{output[-3000:]}"
    assert walk.returncode == 0, report
    missing = [quote for quote in QUOTED if quote not in walk.stdout]
    assert missing == [], walk.stdout
