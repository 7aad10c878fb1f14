"""A second migration, not Baserow (tests/migrations/orders), through the real CLI: run, SIGKILL, resume, validate,
rollback, with the same rows as an uninterrupted run and the catalog as it was before."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bxbatch.errors import ExitCode
from bxbatch.migrations.loader import load_migration
from tests.e2e.clirun import BXBATCH, cli_env, run_cli

ORDERS = Path(__file__).resolve().parents[1] / "migrations" / "orders"
SCALE = 0.02  # 400 customers, 4,000 orders: a few hundred chunks of the sizes below
CHUNK_ARGS = (
    "--concurrency",
    "2",
    "--target-chunk-ms",
    "10",
    "--initial-chunk-rows",
    "20",
    "--min-chunk-rows",
    "10",
    "--max-chunk-rows",
    "40",
    "--no-progress",
    "--log-format",
    "json",
)


async def _template(pg_server: Any) -> str:
    async def build(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await load_migration(ORDERS).generator_module().generate(conn, scale=SCALE, seed=5)
        finally:
            await conn.close()

    return str(await pg_server.template(("orders", SCALE), build))


ORDERS_SQL = "SELECT id, customer_id, customer_country FROM orders ORDER BY 1"
TOTALS_SQL = "SELECT customer_id, orders, total_cents FROM customer_totals ORDER BY 1"
DONE_CHUNKS_SQL = "SELECT count(*) FROM bxbatch.chunk WHERE job = 'order_country' AND status = 'done'"


async def _rows(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "orders": [tuple(r) for r in await conn.fetch(ORDERS_SQL)],
        "totals": [tuple(r) for r in await conn.fetch(TOTALS_SQL)],
    }


async def _catalog(conn: asyncpg.Connection) -> dict[str, Any]:
    """Every relation, column, constraint, index and trigger outside the system schemas."""

    async def rows(sql: str) -> list[tuple[Any, ...]]:
        return sorted(tuple(r) for r in await conn.fetch(sql))

    where = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE 'pg_temp%'"
    return {
        "relations": await rows(
            f"SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE {where} AND n.nspname <> 'bxbatch_history'"
        ),
        "columns": await rows(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            f"JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE {where} AND n.nspname <> 'bxbatch_history' AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        "constraints": await rows("SELECT conname, convalidated FROM pg_constraint"),
        "triggers": await rows("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"),
        "schemas": await rows(f"SELECT n.nspname FROM pg_namespace n WHERE {where} AND n.nspname <> 'bxbatch_history'"),
    }


def _spawn(dsn: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [BXBATCH, "run", "--dsn", dsn, *CHUNK_ARGS, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(BXBATCH_MIGRATION=str(ORDERS)),
        )


async def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, timeout=300, **env)


@pytest.mark.slow
async def test_orders_migration_run_kill_resume_validate_rollback(
    pg_server: Any, db_factory: Any, tmp_path: Path
) -> None:
    template = await _template(pg_server)
    reference, killed = await db_factory(template=template), await db_factory(template=template)

    done = await _cli("run", "--dsn", reference, "--migration", str(ORDERS), *CHUNK_ARGS)
    assert done.returncode == 0, done.stderr[-3000:]
    ref = await asyncpg.connect(reference)
    conn = await asyncpg.connect(killed)
    try:
        before = await _catalog(conn)
        expected = await _rows(ref)
        assert sum(1 for _id, _c, country in expected["orders"] if country is not None) > 3000
        assert len(expected["totals"]) == await ref.fetchval("SELECT count(*) FROM customers")
        assert await ref.fetchval("SELECT count(*) FROM bxbatch.chunk") > 100
        run = await ref.fetchrow("SELECT settings FROM bxbatch.run")
        assert json.loads(run["settings"])["migration_name"] == "orders_totals"

        # the same migration, killed in the middle of its first backfill job, then resumed
        proc = _spawn(killed, tmp_path / "killed.log", "--max-rows-per-second", "2000")
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the backfill never got going"
            if await conn.fetchval("SELECT to_regclass('bxbatch.chunk') IS NOT NULL") and (
                await conn.fetchval(DONE_CHUNKS_SQL) >= 20
            ):
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert await conn.fetchval("SELECT status FROM bxbatch.job WHERE name = 'order_country'") != "done"
        partial = sum(1 for r in (await _rows(conn))["orders"] if r[2] is not None)
        assert 0 < partial < sum(1 for r in expected["orders"] if r[2] is not None)

        # another migration may not continue this run: refused in one line, exit 2, nothing changed
        other = tmp_path / "renamed"
        shutil.copytree(ORDERS, other, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = other / "migration.toml"
        manifest.write_text(manifest.read_text().replace('name = "orders_totals"', 'name = "orders_other"'))
        refused = await _cli("resume", "--dsn", killed, "--migration", str(other), "--log-format", "json")
        assert refused.returncode == ExitCode.USAGE, refused.stderr[-2000:]
        assert "orders_totals" in refused.stderr and "orders_other" in refused.stderr

        for _attempt in range(5):  # the killed process's backend may still hold the run for a moment
            resumed = await _cli("resume", "--dsn", killed, *CHUNK_ARGS, BXBATCH_MIGRATION=str(ORDERS))
            if resumed.returncode != ExitCode.BUSY:
                break
            await asyncio.sleep(1.0)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert await _rows(conn) == expected  # row for row, as the uninterrupted run left them
        runs = await conn.fetch("SELECT status FROM bxbatch.run")
        assert [r["status"] for r in runs] == ["completed"]
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.chunk WHERE status <> 'done'") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                                   "WHERE c.relname = 'idx_orders_customer_country' AND i.indisvalid") == 1  # fmt: skip
        assert await conn.fetchval(
            "SELECT bool_and(convalidated) AND count(*) = 2 FROM pg_constraint WHERE conname LIKE 'fk\\_%'"
        )

        checked = await _cli("validate", "--dsn", killed, "--migration", str(ORDERS), "--json")
        assert checked.returncode == 0, checked.stdout[-3000:]
        report = json.loads(checked.stdout)
        by_check = {c["check"]: c for c in report["checks"]}
        assert report["ok"] and {"backfill:order_country", "backfill:customer_totals", "orphans"} <= set(by_check)
        assert by_check["columns"]["checked"] >= 5  # customer_totals' four and orders.customer_country

        # validation fails when a row is wrong (the checks can fail)
        await conn.execute("UPDATE orders SET customer_country = 'XX' WHERE id = (SELECT min(id) FROM orders "
                           "WHERE customer_country IS NOT NULL)")  # fmt: skip
        wrong = await _cli("validate", "--dsn", killed, "--json", BXBATCH_MIGRATION=str(ORDERS))
        assert wrong.returncode == ExitCode.VALIDATION
        assert "backfill:order_country" in {p["check"] for p in json.loads(wrong.stdout)["problems"]}
        await conn.execute("UPDATE orders AS o SET customer_country = c.country FROM customers AS c "
                           "WHERE c.id = o.customer_id AND o.customer_country = 'XX'")  # fmt: skip

        rolled = await _cli("rollback", "--dsn", killed, "--migration", str(ORDERS), "--yes", "--drop-history")
        assert rolled.returncode == 0, rolled.stderr[-3000:]
        assert await _catalog(conn) == before  # the column, the table, the index and the keys are gone
    finally:
        await ref.close()
        await conn.close()


async def test_a_bad_migration_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = await _cli("plan", "--dsn", "postgresql://nobody@127.0.0.1:1/x", "--migration", str(tmp_path / "nope"))
    assert missing.returncode == ExitCode.USAGE
    assert "does not exist" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "ddl").mkdir()
    (tmp_path / "migration.toml").write_text("name = [\n")
    bad = await _cli("validate", "--dsn", "postgresql://nobody@127.0.0.1:1/x", BXBATCH_MIGRATION=str(tmp_path))
    assert bad.returncode == ExitCode.USAGE
    assert "migration.toml" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
