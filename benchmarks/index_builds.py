"""Index build times on the large generated tables, and what building them after the backfill saves.

One server, one run: a synthetic install at --scale, then `bxbatch run` up to the backfill (schema,
triggers, activity seeding, permissions, enhanced views) with no index of the index phase yet,
then the index phase with its monitor: per index the table's rows, build seconds, monitor samples,
index size. Then the activity log's indexes are dropped and rebuilt at a second
maintenance_work_mem, and (with --order) the activity seeding is timed on a clone of the install
with the index phase run *before* it, to show what the chosen order (indexes after backfills) saves.

    .venv/bin/python benchmarks/index_builds.py [--scale 1.0] [--mem 256MB --mem2 16MB] [--order] [--pg embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

import asyncpg
import structlog

from bxbatch.devtools.embedded import start_server
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install
from bxbatch.observe.log import configure
from bxbatch.ops import run as app
from bxbatch.phases import indexes
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

UP_TO_BACKFILL = ("preflight", "schema", "triggers", "backfill")


ALL_PHASES = list(app.PHASES)


def only(names: tuple[str, ...]) -> list[Any]:
    return [(n, fn) for n, fn in ALL_PHASES if n in names]


async def index_phase(dsn: str, mem: str, log: Any) -> tuple[float, list[asyncpg.Record]]:
    conn = await asyncpg.connect(dsn)
    try:
        settings = Settings(dsn=dsn, progress=False, maintenance_work_mem=mem, no_backup=True)
        record = await ledger.start_or_continue_run(conn, settings, "bench")
        run_id = record.id
        t0 = time.monotonic()
        await indexes.run(RunContext(settings=settings, conn=conn, run_id=run_id, log=log))
        seconds = time.monotonic() - t0
        rows = await conn.fetch(
            "SELECT b.index_name, b.table_name, b.table_rows_estimate, b.duration_ms, b.index_bytes "
            "FROM bxbatch.index_build b "
            "WHERE b.status = 'done' AND b.maintenance_work_mem = $1 ORDER BY b.duration_ms DESC",
            mem,
        )
        return seconds, rows
    finally:
        await conn.close()


async def run_phases(dsn: str, names: tuple[str, ...], concurrency: int) -> Any:
    app.PHASES[:] = only(names)
    try:
        return await app.run_migration(
            Settings(dsn=dsn, progress=False, no_backup=True, concurrency=concurrency), command="bench"
        )
    finally:
        app.PHASES[:] = ALL_PHASES


def print_builds(title: str, seconds: float, rows: list[asyncpg.Record]) -> None:
    print(f"\n{title}: index phase {seconds:.1f}s")
    print(f"  {'index':<38}{'table':<30}{'rows':>11}{'seconds':>9}{'MB':>8}")
    for r in rows:
        print(
            f"  {r['index_name']:<38}{r['table_name']:<30}{r['table_rows_estimate'] or 0:>11}"
            f"{(r['duration_ms'] or 0) / 1000:>9.2f}{(r['index_bytes'] or 0) / 1e6:>8.1f}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--mem", default="256MB", help="maintenance_work_mem of the first build")
    parser.add_argument("--mem2", default="16MB", help="maintenance_work_mem of the activity log rebuild")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--order", action="store_true", help="also time seeding with the indexes built first")
    parser.add_argument("--pg", default="embedded", choices=["embedded", "system"])
    args = parser.parse_args()
    configure("json")
    log = structlog.get_logger("bench")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    server = start_server(args.pg)
    try:
        admin = await asyncpg.connect(server.dsn())
        version = await admin.fetchval("SHOW server_version")
        await admin.execute("CREATE DATABASE synth")
        t0 = time.monotonic()
        conn = await asyncpg.connect(server.dsn("synth"))
        report = await build_install(conn, SynthSpec(scale=args.scale, seed=1))
        await conn.close()
        print(
            f"PostgreSQL {version} ({args.pg}); synthetic install scale {args.scale}: {report.user_rows} user rows "
            f"in {report.user_tables} user tables, built in {time.monotonic() - t0:.1f}s"
        )
        await admin.execute("CREATE DATABASE main TEMPLATE synth")
        if args.order:
            await admin.execute("CREATE DATABASE indexes_first TEMPLATE synth")

        dsn = server.dsn("main")
        summary = await run_phases(dsn, UP_TO_BACKFILL, args.concurrency)
        seed_after = summary.phases["backfill"]["seconds"]
        conn = await asyncpg.connect(dsn)
        sizes = {
            r["relname"]: r["n"]
            for r in await conn.fetch(
                "SELECT relname, n_live_tup AS n FROM pg_stat_user_tables "
                "WHERE relname IN ('database_activitylog', 'database_permission', 'database_tableview_enhanced')"
            )
        }
        await conn.execute("VACUUM ANALYZE database_activitylog, database_permission")
        await conn.close()
        print(f"backfill phase (no index of the index phase yet): {seed_after:.1f}s; rows {sizes}")

        seconds, rows = await index_phase(dsn, args.mem, log)
        print_builds(f"maintenance_work_mem={args.mem}", seconds, rows)

        # The activity log's indexes again at another maintenance_work_mem.
        conn = await asyncpg.connect(dsn)
        names = [r["index_name"] for r in rows if r["table_name"] == "database_activitylog"]
        for name in names:
            await conn.execute(f'DROP INDEX CONCURRENTLY "{name}"')
        await conn.execute("DELETE FROM bxbatch.ddl_file WHERE file = '110_activitylog_indexes.sql'")
        await conn.execute("DELETE FROM bxbatch.ddl_statement WHERE file = '110_activitylog_indexes.sql'")
        await conn.close()
        seconds2, rows2 = await index_phase(dsn, args.mem2, log)
        print_builds(f"activity log indexes again, maintenance_work_mem={args.mem2}", seconds2, rows2)

        if args.order:
            other = server.dsn("indexes_first")
            await run_phases(other, ("preflight", "schema", "triggers"), args.concurrency)
            t_idx, _ = await index_phase(other, args.mem, log)
            s2 = await run_phases(other, ("backfill",), args.concurrency)
            seed_before = s2.phases["backfill"]["seconds"]
            print(
                f"\norder: backfill with the indexes already built {seed_before:.1f}s (+ index phase on empty "
                f"tables {t_idx:.1f}s) vs backfill first {seed_after:.1f}s + index phase {seconds:.1f}s: "
                f"{seed_before + t_idx:.1f}s vs {seed_after + seconds:.1f}s"
            )
        await admin.close()
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
