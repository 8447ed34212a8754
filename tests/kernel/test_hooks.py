"""Domain hooks: the wiring table installs every listener, and a hook nobody installed refuses to run."""

from __future__ import annotations

import pytest

from models.kernel.hooks import Hook, StatementHook
from models.ledger import books
from models.points import rules
from models.tiers import standing
from server import wiring


async def test_a_hook_nobody_installed_raises_instead_of_doing_nothing():
    with pytest.raises(RuntimeError, match="server.wiring.install"):
        await Hook("test.never_installed").emit("points", None)
    with pytest.raises(RuntimeError, match="server.wiring.install"):
        await StatementHook("test.never_installed").collect("points", None)


def test_every_process_gets_the_listeners_of_the_wiring_table():
    wiring.install()
    assert books.ENTRY_WRITTEN.listeners == tuple(listener for listener, _ in wiring.LEDGER_ENTRY_WRITTEN)
    # every ledger listener has its batched form, in the same order, so a batched write does the same work
    assert books.ENTRY_STATEMENTS._listeners == tuple(batched for _, batched in wiring.LEDGER_ENTRY_WRITTEN)
    for listener, batched in wiring.LEDGER_ENTRY_WRITTEN:
        assert listener.__module__ == batched.__module__
    assert standing.TIER_CHANGED.listeners == wiring.TIER_CHANGED
    assert rules.RULES_CHANGED.listeners == wiring.POINTS_RULES_CHANGED
