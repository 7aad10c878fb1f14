"""``db.locks.cancel_autovacuum``: the autovacuum a load started on a table is cancelled before bxbatch alters or
builds on it (PostgreSQL would cancel it itself, after ``deadlock_timeout``), and only that table's.

A server of its own, with ``autovacuum_naptime`` 1 s, so a worker starts on cue; each table slows its worker down
(``autovacuum_vacuum_cost_delay`` 100 ms per page) so it is still there when the test looks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anyio
import asyncpg
import pytest
from tests.conftest import Cluster

from bxbatch.db.locks import cancel_autovacuum
from bxbatch.devtools.embedded import start_server

SLOW_AUTOVACUUM = (
    "autovacuum_vacuum_insert_threshold = 100, autovacuum_vacuum_insert_scale_factor = 0, "
    "autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1"
)
WORKER_ON = """SELECT a.pid FROM pg_stat_activity AS a
               WHERE a.backend_type = 'autovacuum worker'
                 AND EXISTS (SELECT 1 FROM pg_locks AS l
                             WHERE l.pid = a.pid AND l.locktype = 'relation' AND l.relation = to_regclass($1))"""


@pytest.fixture(scope="module")
def av_server(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    server = start_server(request.config.getoption("--pg"), settings={"autovacuum_naptime": "1"})
    try:
        yield Cluster(admin_dsn=server.dsn(), server=server)
    finally:
        server.close()


async def _worker_on(conn: asyncpg.Connection, table: str, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = await conn.fetchval(WORKER_ON, table)
        if pid is not None:
            return int(pid)
        await anyio.sleep(0.1)
    return None


async def test_the_worker_on_that_table_is_cancelled_and_no_other(av_server: Cluster) -> None:
    name = await av_server.create_database()
    conn = await asyncpg.connect(av_server.dsn(name))
    try:
        for table in ("filled", "other"):
            await conn.execute(f"CREATE TABLE {table} (id int) WITH ({SLOW_AUTOVACUUM})")
            await conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 50000)")
        await conn.execute("CREATE TABLE quiet (id int) WITH (autovacuum_enabled = false)")
        filled = await _worker_on(conn, "filled", 60)
        other = await _worker_on(conn, "other", 60)
        assert filled is not None and other is not None, "autovacuum started on both tables"

        assert await cancel_autovacuum(conn, "public", "quiet") == 0, "no worker there"
        # a role that may not signal autovacuum workers leaves it to PostgreSQL (no error)
        await conn.execute("CREATE ROLE bx_plain LOGIN")
        await conn.execute(f'GRANT ALL ON DATABASE "{name}" TO bx_plain')
        plain = await asyncpg.connect(av_server.dsn(name), user="bx_plain")
        try:
            assert await cancel_autovacuum(plain, "public", "filled") == 0
        finally:
            await plain.close()
        assert await conn.fetchval(WORKER_ON, "filled") == filled, "the plain role cancelled nothing"

        assert await cancel_autovacuum(conn, "public", "filled") == 1
        deadline = time.monotonic() + 5
        while filled in [r["pid"] for r in await conn.fetch(WORKER_ON, "filled")]:
            assert time.monotonic() < deadline, "the cancelled worker still holds the table"
            await anyio.sleep(0.05)
        # the other table's worker goes on (its slowed-down vacuum takes about 20 s)
        assert await conn.fetchval(WORKER_ON, "other") == other
    finally:
        await conn.close()
        await av_server.drop_database(name)
