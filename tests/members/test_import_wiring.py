"""An import run by the CLI process does exactly what the HTTP import does: the wiring, not the imports, decides."""

from __future__ import annotations

import asyncio

from models.ledger.balance_lots import BalanceLot
from models.members.members import Member
from models.points.lots import PointsLot
from tests.members.test_import import _server, start, wait_done


async def _lots(phone: str) -> tuple[list[tuple[int, int, str]], list[tuple[int, int]]]:
    member = await Member.get(phone=phone)
    points = await PointsLot.filter(member_id=member.id).values_list("amount", "remaining", "status")
    balance = await BalanceLot.filter(member_id=member.id).values_list("principal", "bonus")
    return [tuple(row) for row in points], [tuple(row) for row in balance]


async def test_opening_points_imported_by_the_cli_open_the_same_lots_as_over_http(
    client, admin, demo, settings, tmp_path
):
    over_http = await start(client, admin, b"phone,name,points,balance\n13700000001,Http,120,500\n")
    assert (await wait_done(client, admin, over_http))["created"] == 1
    path = tmp_path / "members.csv"
    path.write_bytes(b"phone,name,points,balance\n13700000002,Cli,120,500\n")
    run = await asyncio.to_thread(_server, settings, "import-members", str(path), "--merchant", demo.merchant.code)
    assert run.returncode == 0, run.stdout + run.stderr
    http_lots, cli_lots = await _lots("13700000001"), await _lots("13700000002")
    assert http_lots == cli_lots
    assert cli_lots[0] == [(120, 120, "open")]
    check = await asyncio.to_thread(_server, settings, "check-ledgers")
    assert check.returncode == 0 and "0 mismatches" in check.stdout, check.stdout + check.stderr
