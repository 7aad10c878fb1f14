"""Write overhead of the activity trigger: row-level (007) vs statement-level with transition tables (009).

Same server, same run: a Baserow-like user table, bulk INSERT of N rows (one statement), bulk
UPDATE and DELETE of those rows, and single-row INSERTs (one statement each, as the web app
writes), each with no trigger, the row-level trigger, and the statement-level triggers. The
activity log has its foreign keys; the rounds run first without the log's indexes (the trigger
mechanism alone), then with them (the state after the migration). Reports the median of
--repeat runs and checks that both trigger kinds log the same entries.

    .venv/bin/python -m benchmarks.trigger_overhead [--rows 10000] [--repeat 5] [--install-tables 2000] [--pg system]

(run as a module from the repository root: it borrows the user-table builder of tests/phase_support.py)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from tests.phase_support import apply_schema_phase, many_user_tables_sql, run_context

from bxbatch.devtools.embedded import start_server
from bxbatch.ledger import runs as ledger
from bxbatch.observe.log import configure
from bxbatch.phases import indexes, schema, triggers
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

BASE_SCHEMA = (Path(__file__).resolve().parents[1] / "tests" / "base_schema.sql").read_text()
TABLE_ID = 7
USER_TABLE = f"database_table_{TABLE_ID}"

SETUP = f"""
INSERT INTO auth_user (id, username) VALUES (1, 'ada');
INSERT INTO database_workspace (id, name) VALUES (1, 'w');
INSERT INTO database_database (id, workspace_id) VALUES (1, 1);
INSERT INTO database_table (id, database_id) VALUES ({TABLE_ID}, 1);
CREATE TABLE {USER_TABLE} (
    id serial PRIMARY KEY,
    created_on timestamptz NOT NULL DEFAULT now(),
    updated_on timestamptz,
    trashed boolean NOT NULL DEFAULT false,
    "order" numeric(40, 20),
    field_1 text,
    field_2 numeric(50, 2),
    field_3 boolean,
    field_4 date,
    field_5 jsonb
);
"""

BULK_INSERT = f"""
INSERT INTO {USER_TABLE} ("order", field_1, field_2, field_3, field_4, field_5)
SELECT g, 'row ' || g || ' ' || md5(g::text), g * 1.5, g % 2 = 0, date '2024-01-01' + g % 365,
       jsonb_build_object('k', g)
FROM generate_series(1, $1::int) g
"""
BULK_UPDATE = f"UPDATE {USER_TABLE} SET field_1 = field_1 || ' (edited)', updated_on = now()"
BULK_DELETE = f"DELETE FROM {USER_TABLE}"
SINGLE_INSERTS = f"""
DO $$
BEGIN
    FOR i IN 1..%d LOOP
        INSERT INTO {USER_TABLE} ("order", field_1, field_2, field_3)
        VALUES (i, 'single ' || i, i, true);
    END LOOP;
END
$$
"""

ROW_TRIGGER = (
    f"CREATE TRIGGER bench_row AFTER INSERT OR UPDATE OR DELETE ON {USER_TABLE} "
    f"FOR EACH ROW EXECUTE FUNCTION public.log_table_activity('{TABLE_ID}')"
)
STATEMENT_TRIGGERS = [
    f"CREATE TRIGGER bench_ins AFTER INSERT ON {USER_TABLE} REFERENCING NEW TABLE AS bxbatch_new "
    f"FOR EACH STATEMENT EXECUTE FUNCTION public.log_table_activity_stmt('{TABLE_ID}')",
    f"CREATE TRIGGER bench_upd AFTER UPDATE ON {USER_TABLE} REFERENCING OLD TABLE AS bxbatch_old "
    f"NEW TABLE AS bxbatch_new FOR EACH STATEMENT EXECUTE FUNCTION public.log_table_activity_stmt('{TABLE_ID}')",
    f"CREATE TRIGGER bench_del AFTER DELETE ON {USER_TABLE} REFERENCING OLD TABLE AS bxbatch_old "
    f"FOR EACH STATEMENT EXECUTE FUNCTION public.log_table_activity_stmt('{TABLE_ID}')",
]
DROP_TRIGGERS = [
    f"DROP TRIGGER IF EXISTS {t} ON {USER_TABLE}" for t in ("bench_row", "bench_ins", "bench_upd", "bench_del")
]

LOG_ENTRIES = """
SELECT user_id, table_id, row_id, action_type,
       details - 'row_data' - 'old_data' - 'new_data' AS rest,
       (details->'row_data') - 'created_on' - 'updated_on' AS row_data,
       (details->'old_data') - 'created_on' - 'updated_on' AS old_data,
       (details->'new_data') - 'created_on' - 'updated_on' AS new_data
FROM database_activitylog ORDER BY action_type, row_id
"""


async def _timed(conn: asyncpg.Connection, sql: str, *args: object) -> float:
    t0 = time.perf_counter()
    await conn.execute(sql, *args)
    return time.perf_counter() - t0


async def one_round(conn: asyncpg.Connection, kind: str, rows: int, singles: int) -> dict[str, float]:
    for sql in DROP_TRIGGERS:
        await conn.execute(sql)
    await conn.execute(f"TRUNCATE {USER_TABLE} RESTART IDENTITY; TRUNCATE database_activitylog RESTART IDENTITY")
    if kind == "row":
        await conn.execute(ROW_TRIGGER)
    elif kind == "statement":
        for sql in STATEMENT_TRIGGERS:
            await conn.execute(sql)
    await conn.execute("CHECKPOINT")
    return {
        "bulk_insert": await _timed(conn, BULK_INSERT, rows),
        "bulk_update": await _timed(conn, BULK_UPDATE),
        "bulk_delete": await _timed(conn, BULK_DELETE),
        "single_inserts": await _timed(conn, SINGLE_INSERTS % singles),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=2_000, help="single-row INSERT statements")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", default="embedded", choices=["embedded", "system"])
    parser.add_argument(
        "--install-tables", type=int, default=2000, help="user tables for the trigger-phase timing (0: skip it)"
    )
    args = parser.parse_args()
    configure("console")
    log = structlog.get_logger("bench")

    server = start_server(args.pg)
    try:
        admin = await asyncpg.connect(server.dsn())
        version = await admin.fetchval("SHOW server_version")
        await admin.execute("CREATE DATABASE bench")
        await admin.close()
        dsn = server.dsn("bench")
        conn = await asyncpg.connect(dsn)
        settings = Settings(dsn=dsn, progress=False)
        await conn.execute(BASE_SCHEMA)
        await conn.execute(SETUP)
        await ledger.ensure_schema(conn)
        await schema.apply_phase(conn, settings, None, log, phase="schema")
        # Same entries? One round of each trigger kind, compare the logs.
        logs = {}
        for kind in ("row", "statement"):
            await one_round(conn, kind, 500, 50)
            logs[kind] = [tuple(r) for r in await conn.fetch(LOG_ENTRIES)]
        same = logs["row"] == logs["statement"]

        # First with the bare log (the trigger mechanism alone, as during the migration before the
        # index phase), then with the log's indexes built (the state after the migration).
        by_state: dict[str, dict[str, dict[str, list[float]]]] = {}
        for state in ("log without its indexes", "log with its indexes (after the migration)"):
            if state.startswith("log with"):
                record = await ledger.start_or_continue_run(conn, settings, "bench")
                await indexes.run(RunContext(settings=settings, conn=conn, run_id=record.id, log=log))
            results: dict[str, dict[str, list[float]]] = {k: {} for k in ("none", "row", "statement")}
            for _ in range(args.repeat):
                for kind in ("none", "row", "statement"):
                    for op, seconds in (await one_round(conn, kind, args.rows, args.singles)).items():
                        results[kind].setdefault(op, []).append(seconds)
            by_state[state] = results
        await conn.close()
        installs = await install_phase_timings(server, args.install_tables) if args.install_tables else []
    finally:
        server.close()

    print(
        f"\nactivity trigger overhead, PostgreSQL {version} ({args.pg}), {args.rows} rows per bulk statement, "
        f"{args.singles} single-row INSERTs, median of {args.repeat}"
    )
    print(f"same log entries from both trigger kinds: {same} ({len(logs['row'])} entries compared)")
    for state, results in by_state.items():
        print(f"\n{state}:")
        header = (
            f"{'operation':<16}{'no trigger':>12}{'row-level':>12}{'statement':>12}{'row/none':>10}{'stmt/none':>10}"
        )
        print(header)
        print("-" * len(header))
        for op in ("bulk_insert", "bulk_update", "bulk_delete", "single_inserts"):
            med = {k: statistics.median(results[k][op]) * 1000 for k in results}
            print(
                f"{op:<16}{med['none']:>10.1f}ms{med['row']:>10.1f}ms{med['statement']:>10.1f}ms"
                f"{med['row'] / med['none']:>9.2f}x{med['statement'] / med['none']:>9.2f}x"
            )
        ins = {k: statistics.median(results[k]["bulk_insert"]) for k in results}
        per_row = {k: (ins[k] - ins["none"]) / args.rows * 1e6 for k in ("row", "statement")}
        print(
            f"bulk insert overhead per row: row-level {per_row['row']:.1f} us, statement-level "
            f"{per_row['statement']:.1f} us"
        )

    if installs:
        print(f"\ntrigger phase on {args.install_tables} user tables (one transaction per group):")
        for group, seconds in installs:
            print(
                f"  group of {group:>3}: {seconds:6.2f}s = {seconds / args.install_tables * 1000:.2f} ms/table, "
                f"{-(-args.install_tables // group)} transactions"
            )


async def install_phase_timings(server: Any, tables: int) -> list[tuple[int, float]]:
    """The trigger phase on ``tables`` fresh user tables, at several group sizes (one clone each)."""
    admin = await asyncpg.connect(server.dsn())
    try:
        await admin.execute("CREATE DATABASE install_src")
        await apply_schema_phase(server.dsn("install_src"), many_user_tables_sql(tables))
        out = []
        for group in (1, 10, 50):
            name = f"install_{group}"
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE install_src")
            conn = await asyncpg.connect(server.dsn(name))
            try:
                ctx = await run_context(conn, Settings(dsn=server.dsn(name), trigger_group_size=group, progress=False))
                t0 = time.perf_counter()
                await triggers.run(ctx)
                out.append((group, time.perf_counter() - t0))
            finally:
                await conn.close()
        return out
    finally:
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
