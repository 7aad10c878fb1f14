"""``bxbatch plan``: every phase of a run, what it would do and how long it should take, without changing anything.

Estimates come from planner statistics (``EXPLAIN`` of each backfill's query, ``pg_class.reltuples``
of the user tables) and per-row costs. With ``sample`` a few real chunks of every backfill run
inside one transaction that is rolled back (with the schema phase's pending files applied in it
first, so foreign-key checks are paid as in a real run), and their measured cost replaces the
defaults. The backfill jobs, their chunk SQL
and the key walk are the engine's own (migrations/jobs.py, backfill/planner.py): nothing is restated.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
from pglast import parse_sql
from pglast.stream import RawStream

from bxbatch.backfill.engine import MAX_SEGMENTS
from bxbatch.backfill.planner import PartCursor, TableKeySource, plan_chunks
from bxbatch.db.locks import LockBudget, lock_budget
from bxbatch.db.render import Fragment, set_local_timeouts, union_all
from bxbatch.db.render import render as render_sql
from bxbatch.db.session import connect, qualified
from bxbatch.db.sqlfiles import queries
from bxbatch.ledger import installs
from bxbatch.ledger import runs as ledger
from bxbatch.ledger.observations import has_estimate, save_estimate
from bxbatch.migrations.jobs import Job, render_segments
from bxbatch.migrations.loader import Migration, load_migration
from bxbatch.migrations.profile import Profile
from bxbatch.phases import PHASE_ORDER, preflight
from bxbatch.phases.preflight_server import local_data_directory
from bxbatch.phases.schema import pending_files
from bxbatch.phases.triggers import user_tables
from bxbatch.settings import Settings

Q = queries("plan")
ESTIMATE_TIMEOUT_S = 30.0  # a run waits at most this long for its plan estimate (the report's)

# Default costs, microseconds per row written by one worker, measured on the reference machine
# (PG 18, 2 cores; DESIGN.md): used when --sample is not given.
FALLBACK_US_PER_ROW = 20.0
CHUNK_OVERHEAD_S = 0.002  # claim + ledger row + commit, per chunk
POOL_CONNECT_S = 0.06  # per worker connection, once per backfill phase
TRIGGER_INSTALL_S = 0.005  # one short transaction per user table
INDEX_US_PER_ROW = {"btree": 1.5, "gin": 10.0}
VALIDATE_US_PER_ROW = 0.5


@dataclass
class BackfillEstimate:
    job: str
    target: str
    source: str
    est_rows: int
    chunk_rows: int
    est_chunks: int
    us_per_row: float
    est_seconds: float
    sampled: bool = False
    sample: dict[str, Any] = field(default_factory=dict)


def _select_of(insert_sql: str) -> str:
    """The SELECT feeding an INSERT ... SELECT (the planner can estimate it before the target exists)."""
    stmt: Any = parse_sql(insert_sql)[0].stmt
    return str(RawStream()(stmt.selectStmt))


async def _explain_rows(conn: asyncpg.Connection, sql: str, *args: object) -> int:
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    plan = json.loads(raw) if isinstance(raw, str) else raw
    return int(plan[0]["Plan"]["Plan Rows"])


async def _per_table(
    conn: asyncpg.Connection, profile: Profile, relnames: list[str], expr: str, budget: LockBudget
) -> dict[str, int]:
    """``expr`` (an aggregate over ``id``) of each table, a lock group per statement (its own transaction).

    A table dropped meanwhile is left out (its group is read again without it).
    """
    out: dict[str, int] = {}
    for group in budget.groups(relnames):
        while group:
            sql = union_all(
                "SELECT {n}::int AS i, {expr} AS v FROM {table}",
                ({"n": n, "expr": Fragment(expr), "table": (profile.schema, rel)} for n, rel in enumerate(group)),
            )
            try:
                out.update({group[int(r["i"])]: int(r["v"] or 0) for r in await conn.fetch(sql)})
                break
            except asyncpg.UndefinedTableError:
                names = [qualified(profile.schema, rel) for rel in group]
                present = await conn.fetch(
                    "SELECT n FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL", names
                )
                kept = {str(r["n"]) for r in present}
                group = [rel for rel, name in zip(group, names, strict=True) if name in kept]
    return out


async def _user_table_rows(
    conn: asyncpg.Connection, profile: Profile, budget: LockBudget, *, max_ids: bool
) -> list[tuple[int, str, int, int]]:
    """(table id, relname, estimated rows, max id) of every user table; exact count where never analyzed.

    Two catalog statements for all tables; the counts of never-analyzed tables (and, for a sample,
    the max ids) one statement per lock group, never a round trip per table.
    """
    tables = await user_tables(conn, profile)
    est = {
        str(r["relname"]): int(r["est"])
        for r in await conn.fetch(Q["reltuples"], profile.schema, [rel for _tid, rel in tables])
    }
    unknown = [rel for _tid, rel in tables if est.get(rel, -1) < 0]
    est.update(await _per_table(conn, profile, unknown, "count(*)", budget))
    his = await _per_table(conn, profile, [rel for _tid, rel in tables], "max(id)", budget) if max_ids else {}
    return [(tid, rel, est[rel], his.get(rel, 0)) for tid, rel in tables if rel in est]


def _speedup(settings: Settings, chunks: int, local_cpus: int | None) -> float:
    """Parallel speedup of the chunk workers: sublinear, since they insert into the same table and WAL.

    sqrt(min(workers, cpus)): measured on the reference machine (2 cores), 4 workers seeded the
    activity log 1.23x faster than 1 worker; a server of unknown size counts as one core per worker.
    """
    workers = max(1, min(settings.concurrency, chunks))
    return math.sqrt(min(workers, local_cpus) if local_cpus else workers)


async def _local_cpus(conn: asyncpg.Connection) -> int | None:
    """CPU count of the server when it runs on this machine (as preflight's disk check proves it)."""
    try:
        local = await local_data_directory(conn)
    except asyncpg.PostgresError:
        return None
    return os.cpu_count() if local is not None else None


async def _apply_pending_schema(conn: asyncpg.Connection, migration: Migration) -> int:
    """Inside the caller's transaction: the schema phase's pending files, as the run would apply them.

    The backfills then pay what they pay in a real run (the foreign keys are checked on every
    insert). Same locks as the schema phase, under the caller's lock_timeout, released by the
    rollback. A statement that cannot run in a transaction (``CREATE INDEX CONCURRENTLY``: the
    activity log's partial indexes, which no seeded row enters) is left out of the sample.
    """
    applied = 0
    for f in await pending_files(conn, migration, phase="schema"):
        for stmt in f.statements:
            if not stmt.concurrent:
                await conn.execute(stmt.sql)
        applied += 1
    return applied


async def _sample_table_job(
    conn: asyncpg.Connection, job: Job, profile: Profile, size: int, n: int
) -> tuple[int, float, int]:
    assert job.key_table is not None and job.key_column is not None
    source = TableKeySource(conn, profile.schema, job.key_table, job.key_column)
    hi = int(await conn.fetchval(job.sql("main_bound")))
    lo_key = await conn.fetchval(
        render_sql("SELECT min({key}) FROM {table}", key=job.key_column, table=(profile.schema, job.key_table))
    )
    if lo_key is None or hi <= 0:
        return 0, 0.0, 0
    start = int(lo_key) - 1
    rows, seconds, chunks = 0, 0.0, 0
    for i in range(n):
        lo = start + (hi - start) * i // n
        part = PartCursor(part=0, relname=None, lo=lo, hi=hi, upto=lo)
        for chunk in await plan_chunks([part], source, size, 1):
            seg = chunk.segments[0]
            t0 = time.monotonic()
            status = await conn.execute(job.sql("chunk"), seg.lo, seg.hi, *job.extra_args(profile))
            seconds += time.monotonic() - t0
            rows += int(status.rsplit(" ", 1)[-1])
            chunks += 1
    return rows, seconds, chunks


async def _sample_user_tables_job(
    conn: asyncpg.Connection,
    job: Job,
    profile: Profile,
    tables: list[tuple[int, str, int, int]],
    size: int,
    n: int,
    segments: int,
) -> tuple[int, float, int]:
    """``n`` chunks of up to ``segments`` user tables (the lock group), spread over the tables by rows."""
    source = TableKeySource(conn, profile.schema)
    total = sum(t[2] for t in tables)
    if not tables or total <= 0:
        return 0, 0.0, 0
    rows, seconds, chunks = 0, 0.0, 0
    cumulative, starts = 0, []
    marks = [total * (i + 0.5) / n for i in range(n)]
    for index, (_tid, _rel, est, _hi) in enumerate(tables):
        cumulative += est
        while marks and marks[0] <= cumulative:
            marks.pop(0)
            if index not in starts:
                starts.append(index)
    for index in starts:
        parts = [PartCursor(part=tid, relname=rel, lo=0, hi=hi, upto=0) for tid, rel, _est, hi in tables[index:]]
        for chunk in await plan_chunks(parts, source, size, 1, segments):
            by_id = {t[0]: t[1] for t in tables}
            relnames = [by_id[s.part] for s in chunk.segments]
            sql = render_segments(job, relnames, profile.schema)
            t0 = time.monotonic()
            status = await conn.execute(
                sql,
                [s.part for s in chunk.segments],
                [s.lo for s in chunk.segments],
                [s.hi for s in chunk.segments],
            )
            seconds += time.monotonic() - t0
            rows += int(status.rsplit(" ", 1)[-1])
            chunks += 1
    return rows, seconds, chunks


async def estimate_backfills(
    conn: asyncpg.Connection, settings: Settings, migration: Migration, *, sample: bool, sample_chunks: int = 3
) -> list[BackfillEstimate]:
    jobs, profile = list(migration.jobs), migration.profile
    budget = await lock_budget(conn, settings, profile.schema)
    segments = min(MAX_SEGMENTS, budget.group_size)  # as the engine cuts them
    tables = await _user_table_rows(conn, profile, budget, max_ids=sample)
    cpus = await _local_cpus(conn)
    estimates: list[BackfillEstimate] = []
    for job in jobs:
        if job.per_user_table:
            est_rows = sum(t[2] for t in tables)
        else:
            est_rows = await _explain_rows(conn, _select_of(job.sql("set_based")), *job.extra_args(profile))
        us = migration.us_per_row.get(job.name, FALLBACK_US_PER_ROW)
        estimates.append(
            BackfillEstimate(job.name, job.target, job.source, est_rows, settings.initial_chunk_rows, 0, us, 0.0)
        )
    if sample:
        tx = conn.transaction()
        await tx.start()
        try:
            await set_local_timeouts(conn, lock=settings.lock_timeout_ms, statement=settings.statement_timeout_ms)
            created = await _apply_pending_schema(conn, migration)
            for job, est in zip(jobs, estimates, strict=True):
                if job.per_user_table:
                    got = await _sample_user_tables_job(
                        conn, job, profile, tables, settings.initial_chunk_rows, sample_chunks, segments
                    )
                else:
                    got = await _sample_table_job(conn, job, profile, settings.initial_chunk_rows, sample_chunks)
                rows, seconds, chunks = got
                est.sample = {"rows": rows, "seconds": round(seconds, 4), "chunks": chunks, "ddl_applied": created}
                if rows > 0:
                    est.us_per_row = round(seconds * 1e6 / rows, 2)
                    est.sampled = True
        finally:
            await tx.rollback()  # the sample changes nothing
    for job, est in zip(jobs, estimates, strict=True):
        at_target = settings.target_chunk_ms * 1000.0 / max(est.us_per_row, 0.01)
        est.chunk_rows = int(max(settings.min_chunk_rows, min(settings.max_chunk_rows, at_target)))
        est.est_chunks = max(1, math.ceil(est.est_rows / est.chunk_rows)) if est.est_rows else 0
        if job.per_user_table:
            est.est_chunks = max(est.est_chunks, math.ceil(len(tables) / segments))
        speedup = _speedup(settings, est.est_chunks, cpus)
        est.est_seconds = round((est.est_rows * est.us_per_row / 1e6 + est.est_chunks * CHUNK_OVERHEAD_S) / speedup, 3)
    return estimates


async def _index_plan(
    conn: asyncpg.Connection, migration: Migration, rows_after: dict[str, int]
) -> list[dict[str, Any]]:
    exp = migration.expected
    state = {r["name"]: r["valid"] for r in await conn.fetch(Q["index_validity"], migration.schema, list(exp.indexes))}
    out = []
    for ix in exp.indexes.values():
        rows = rows_after.get(ix.table, 0)
        kind = "gin" if "using gin" in ix.sql.lower() else "btree"
        status = "pending" if ix.name not in state else ("built" if state[ix.name] else "invalid: rebuilt")
        out.append(
            {
                "index": ix.name,
                "table": ix.table,
                "file": ix.file,
                "status": status,
                "est_rows": rows,
                "est_seconds": round(rows * INDEX_US_PER_ROW[kind] / 1e6, 3) if status != "built" else 0.0,
                "sql": ix.sql,
            }
        )
    return out


async def _constraint_plan(
    conn: asyncpg.Connection, migration: Migration, rows_after: dict[str, int]
) -> list[dict[str, Any]]:
    exp = migration.expected
    state = {
        r["conname"]: r["convalidated"]
        for r in await conn.fetch(Q["constraint_validity"], migration.schema, [c.name for c in exp.foreign_keys])
    }
    out = []
    for con in exp.foreign_keys:
        status = "validated" if state.get(con.name) else ("not valid: validate" if con.name in state else "pending")
        rows = rows_after.get(con.table, 0)
        out.append(
            {
                "constraint": con.name,
                "table": con.table,
                "references": con.ref_table,
                "status": status,
                "est_seconds": round(rows * VALIDATE_US_PER_ROW / 1e6, 3) if status != "validated" else 0.0,
            }
        )
    return out


async def build_plan(settings: Settings, *, sample: bool = False, sample_chunks: int = 3) -> dict[str, Any]:
    """The plan of a run against this database. Reads only (a sample's writes are rolled back)."""
    conn = await connect(settings, role="plan")
    try:
        migration = load_migration(settings.migration)
        await preflight.check_essentials(conn, settings, everything=False)
        has_ledger = await ledger.ledger_exists(conn)
        done: dict[str, str] = {}
        if has_ledger:
            run = await ledger.last_run(conn)  # its phases: done ones cost nothing more
            if run is not None:
                done = await ledger.phase_states(conn, run["id"])
        pending = await pending_files(conn, migration)
        ddl = [
            {
                "file": f.name,
                "phase": f.phase,
                "transactional": f.transactional,
                "statements": [s.sql for s in f.statements],
            }
            for f in pending
        ]
        tables = await user_tables(conn, migration.profile)
        installed = 0
        if has_ledger:
            installed = await installs.installed_count(conn)
        backfills = await estimate_backfills(conn, settings, migration, sample=sample, sample_chunks=sample_chunks)
        rows_after = {b.target: b.est_rows for b in backfills}
        indexes = await _index_plan(conn, migration, rows_after)
        constraints = await _constraint_plan(conn, migration, rows_after)
    finally:
        await conn.close()
    seconds = {
        "schema": round(0.05 * len(ddl), 3),
        "triggers": round(max(0, len(tables) - installed) * TRIGGER_INSTALL_S, 3),
        "backfill": round(sum(b.est_seconds for b in backfills) + settings.concurrency * POOL_CONNECT_S, 3),
        "indexes": round(sum(i["est_seconds"] for i in indexes), 3),
        "constraints": round(sum(c["est_seconds"] for c in constraints), 3),
    }
    for name, state in done.items():
        if state == "done" and name in seconds:
            seconds[name] = 0.0
    phases = [
        {"phase": name, "status": done.get(name, "pending"), "est_seconds": seconds.get(name)} for name in PHASE_ORDER
    ]
    return {
        "phases": phases,
        "pending_ddl": ddl,
        "triggers": {
            "user_tables": len(tables),
            "installed": installed,
            "pending": max(0, len(tables) - installed) if migration.trigger is not None else 0,
            "label": migration.trigger.label if migration.trigger is not None else None,
        },
        "backfills": [vars(b) for b in backfills],
        "indexes": indexes,
        "constraints": constraints,
        "sampled": sample,
        "concurrency": settings.concurrency,
        "est_seconds": round(sum(v for v in seconds.values()), 3),
    }


def render(plan: dict[str, Any], *, sql: bool = False) -> str:
    lines = [f"plan: about {plan['est_seconds']:.1f}s of work at concurrency {plan['concurrency']}"]
    for p in plan["phases"]:
        est = f"~{p['est_seconds']:.1f}s" if p["est_seconds"] is not None else ""
        lines.append(f"  {p['phase']:<12} {p['status']:<8} {est}")
    lines.append("schema:" if plan["pending_ddl"] else "schema: every DDL file is applied")
    for item in plan["pending_ddl"]:
        mode = "one transaction" if item["transactional"] else "statement by statement, outside a transaction"
        lines.append(f"  {item['file']}  phase={item['phase']}  {len(item['statements'])} statements, {mode}")
        if sql:
            lines.extend("      " + s.replace("\n", "\n      ") + ";" for s in item["statements"])
    t = plan["triggers"]
    if t.get("label"):
        lines.append(f"triggers: {t['pending']} of {t['user_tables']} user tables to equip with the {t['label']}")
    lines.append("backfills" + (" (sampled: chunks timed in a rolled-back transaction):" if plan["sampled"] else ":"))
    for b in plan["backfills"]:
        how = "sampled" if b["sampled"] else "default cost"
        lines.append(
            f"  {b['job']:<16} -> {b['target']:<28} ~{b['est_rows']:>10,} rows  {b['est_chunks']:>6} chunks "
            f"of ~{b['chunk_rows']:,}  {b['us_per_row']:.1f} us/row ({how})  ~{b['est_seconds']:.1f}s"
        )
    todo = [i for i in plan["indexes"] if i["status"] != "built"]
    lines.append(f"indexes: {len(todo)} of {len(plan['indexes'])} to build (CONCURRENTLY)")
    for i in todo:
        lines.append(f"  {i['index']:<36} on {i['table']:<28} ~{i['est_rows']:,} rows  ~{i['est_seconds']:.1f}s")
        if sql:
            lines.append("      " + i["sql"].replace("\n", "\n      ") + ";")
    pending_fk = [c for c in plan["constraints"] if c["status"] != "validated"]
    lines.append(f"constraints: {len(pending_fk)} of {len(plan['constraints'])} foreign keys to add/validate")
    for c in pending_fk:
        lines.append(f"  {c['constraint']:<40} {c['table']} -> {c['references']}  ({c['status']})")
    return "\n".join(lines)


async def record_estimate(conn: asyncpg.Connection, settings: Any, run_id: int, log: Any) -> None:
    """At the start of a run: what `bxbatch plan` estimates, kept for the report (best effort, bounded)."""
    if await has_estimate(conn, run_id):
        return
    try:
        with anyio.fail_after(ESTIMATE_TIMEOUT_S):
            plan = await build_plan(settings)
    except Exception as exc:  # the report then shows no estimate; the run is not delayed or stopped
        log.warning("plan_estimate_skipped", error=f"{type(exc).__name__}: {exc}"[:200])
        return
    keep = {
        "phases": plan["phases"],
        "backfills": [
            {k: b[k] for k in ("job", "est_rows", "est_chunks", "est_seconds", "us_per_row")} for b in plan["backfills"]
        ],
        "indexes": [{k: i.get(k) for k in ("index", "table", "est_rows", "est_seconds")} for i in plan["indexes"]],
        "est_seconds": plan["est_seconds"],
        "concurrency": plan["concurrency"],
    }
    await save_estimate(conn, run_id, keep)
