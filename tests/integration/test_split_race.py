"""Bisection against a real ledger: a worker whose failing attempt is overtaken by another worker's split
must not record a key of the smaller range it never ran (seen in CI as a phantom failed key)."""

from __future__ import annotations

import asyncpg.exceptions as pgexc

from bxbatch.backfill.split import split_or_fail
from bxbatch.ledger import runs as ledger


async def test_a_stale_failure_does_not_split_or_record_the_new_range(fresh_db, conn_to) -> None:  # type: ignore[no-untyped-def]
    conn = await conn_to(fresh_db)
    await ledger.ensure_schema(conn)
    run_id = await conn.fetchval("INSERT INTO bxbatch.run (command) VALUES ('test') RETURNING id")
    await conn.execute(
        "INSERT INTO bxbatch.job (run_id, name, ord, file_sha256) VALUES ($1, 'permissions', 20, 'x');".replace(
            "$1", str(int(run_id))
        )
    )
    await conn.execute(
        "INSERT INTO bxbatch.pass (run_id, job, seq, kind) VALUES ($1, 'permissions', 0, 'main')", run_id
    )
    chunk_id = await conn.fetchval(
        "INSERT INTO bxbatch.chunk (run_id, job, seq, parts, los, his, planned_rows) "
        "VALUES ($1, 'permissions', 0, '{0}', '{11}', '{13}', 10) RETURNING id",
        run_id,
    )
    error = pgexc.CheckViolationError("new row violates check constraint refuse_one")
    ran = ([0], [11], [13])

    # Worker A failed on (11, 13] and splits it: (11, 12] stays in the row, (12, 13] is new.
    first = await split_or_fail(conn, chunk_id, error, "worker-a", ran)
    assert first.action == "split"
    assert await conn.fetchrow("SELECT los, his FROM bxbatch.chunk WHERE id = $1", chunk_id) == ([11], [12])

    # Worker B had claimed the same chunk before A's split and failed on (11, 13] too: its error
    # says nothing about (11, 12], so nothing is split or recorded.
    second = await split_or_fail(conn, chunk_id, error, "worker-b", ran)
    assert second.action == "gone"
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.failed_key") == 0
    assert await conn.fetchval("SELECT status FROM bxbatch.chunk WHERE id = $1", chunk_id) == "pending"

    # A failure of the one-key range itself is still recorded, with its key.
    third = await split_or_fail(conn, first.new_chunk, error, "worker-b", ([0], [12], [13]))
    assert (third.action, third.key) == ("failed_key", 13)
    assert await conn.fetchval("SELECT key FROM bxbatch.failed_key") == 13
