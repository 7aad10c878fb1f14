"""set_local_timeouts on a real server: what it sets, for how long, and what it leaves alone."""

from __future__ import annotations

from typing import Any

import pytest

from bxbatch.db.render import set_local_timeouts


async def test_local_timeouts_last_the_transaction(db_factory: Any, conn_to: Any) -> None:
    conn = await conn_to(await db_factory())
    await conn.execute("SET statement_timeout = '7s'")
    async with conn.transaction():
        await set_local_timeouts(conn, lock=1500, idle=0)
        assert await conn.fetchval("SHOW lock_timeout") == "1500ms"
        assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == "0"
        assert await conn.fetchval("SHOW statement_timeout") == "7s"  # None / absent: left alone
    assert await conn.fetchval("SHOW lock_timeout") == "0"


async def test_session_timeouts_stay(db_factory: Any, conn_to: Any) -> None:
    conn = await conn_to(await db_factory())
    await set_local_timeouts(conn, is_local=False, statement=2000)
    assert await conn.fetchval("SHOW statement_timeout") == "2s"
    with pytest.raises(ValueError, match="unknown"):
        await set_local_timeouts(conn, lockk=1)
