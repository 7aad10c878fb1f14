"""A run belongs to its migration: the ledger records which, and only that migration continues or joins it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bxbatch.errors import ExitCode, UsageError
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.loader import load_migration
from bxbatch.settings import Settings

ORDERS = Path(__file__).resolve().parents[1] / "migrations" / "orders"


async def test_a_run_is_continued_or_joined_only_with_its_own_migration(fresh_db: str, conn_to: Any) -> None:
    owner, other = await conn_to(fresh_db), await conn_to(fresh_db)
    await ledger.ensure_schema(owner)
    orders = Settings(dsn=fresh_db, migration=str(ORDERS))
    record = await ledger.start_or_continue_run(owner, orders, "run")  # `owner` holds the run now
    stored = json.loads(await owner.fetchval("SELECT settings FROM bxbatch.run WHERE id = $1", record.id))
    assert stored["migration_name"] == "orders_totals"
    assert stored["migration_sha256"] == load_migration(ORDERS).sha256

    for join in (False, True):  # resume / run, and run --join, with the shipped migration: refused by name
        with pytest.raises(UsageError, match="applies migration orders_totals, not baserow_expansion") as info:
            await ledger.start_or_continue_run(other, Settings(dsn=fresh_db), "resume", join=join)
        assert info.value.exit_code == ExitCode.USAGE
    joined = await ledger.start_or_continue_run(other, orders, "run", join=True)
    assert joined.joined and joined.id == record.id
    assert ledger.joined_settings(joined.settings or {}, orders).migration == str(ORDERS)  # the local path
