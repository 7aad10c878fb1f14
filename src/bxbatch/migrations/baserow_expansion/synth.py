"""Synthetic Baserow installs: the pre-expansion base schema plus awkward data, built in an empty database.

``build_install`` fills an empty database, set-based and deterministic: every pseudo-random choice is
``hashint8extended(key, seed_key + tag)`` on the server, so one scale + seed gives byte-identical
tables on every build (timestamps included: nothing reads ``now()``). ``generate`` is the entry point
the migration's manifest names (``[demo] generator``); live writes are ``synth_live.mutate_once``.

Layout at scale 1: ~8,000 users, ~3,000 workspaces, ~5,000 databases, ~20,000 ``database_table``
rows, ~300 physical ``database_table_<id>`` tables holding ~1,000,000 rows, one of them holding
``giant_share`` of the rows. Deliberate traps: id gaps from deleted rows everywhere, trashed rows,
NULLs, unicode/quotes/backslashes in names and values, empty and single-row user tables, workspaces
without members, users in several workspaces, tables without views, and decoy tables that look like
user tables but are not (``database_tablewebhook``, ``database_table_backup``,
``database_table_<id>_old`` and one orphan ``database_table_<id>`` whose id is not in
``database_table``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from bxbatch.db.idents import quote_ident
from bxbatch.errors import UsageError
from bxbatch.migrations.baserow_expansion.synth_base import (
    Plan,
    SynthSpec,
    base_ddl,
    existing_base_tables,
    fill_base,
    fill_big_workspaces,
    plan_for,
)
from bxbatch.migrations.baserow_expansion.synth_sql import (
    CTX,
    DATABASE,
    FIELD,
    FIELD_COLUMN_TYPES,
    GRID_VIEW_TYPE,
    ROW_TAG,
    TABLE,
    USER,
    VIEW,
    WORDS,
    WORKSPACE,
    WORKSPACE_USER,
    h,
    hb,
    q,
    ts,
    user_table_ddl,
    user_table_name,
    w,
)


@dataclass(frozen=True)
class SynthReport:
    users: int
    workspaces: int
    members: int
    databases: int
    tables: int
    user_tables: int  # physical database_table_<id> whose id is in database_table (orphan excluded)
    fields: int
    views: int
    grid_views: int
    user_rows: int  # rows in those user tables (orphan and decoys excluded)
    seconds: float
    giant_table_id: int | None = None
    giant_rows: int = 0
    empty_user_tables: tuple[int, ...] = ()
    single_row_user_tables: tuple[int, ...] = ()
    orphan_user_table: str | None = None  # database_table_<id> with no database_table row
    decoy_tables: tuple[str, ...] = ()  # tables that must never be treated as user tables
    seed: int = 42
    scale: float = 1.0

    def summary(self) -> str:
        """What was built, in words (the demo's header line)."""
        return (
            f"{self.user_rows:,} user rows in {self.user_tables} user tables, {self.tables:,} tables, "
            f"{self.views:,} views"
        )


def _row_counts(table_ids: Sequence[int], plan: Plan, spec: SynthSpec) -> dict[int, int]:
    """Rows to insert per physical user table; ``table_ids[0]`` is the giant one."""
    n = len(table_ids)
    if n == 0:
        return {}
    rng = random.Random(spec.seed * 7919 + 17)
    giant_rows = round(plan.rows * spec.giant_share) if n > 1 else plan.rows
    rest = table_ids[1:]
    n_empty = max(1, round(0.08 * len(rest))) if rest else 0
    n_single = max(1, round(0.08 * len(rest))) if len(rest) > 1 else 0
    counts = {table_ids[0]: giant_rows}
    counts.update(dict.fromkeys(rest[:n_empty], 0))
    counts.update(dict.fromkeys(rest[n_empty : n_empty + n_single], 1))
    normal = rest[n_empty + n_single :]
    remaining = plan.rows - giant_rows - n_single
    if normal:
        weights = [rng.paretovariate(1.3) for _ in normal]
        total = sum(weights)
        cap = max(2, giant_rows // 2)
        for tid, weight in zip(normal, weights, strict=True):
            counts[tid] = min(cap, max(2, round(remaining * weight / total)))
    elif n > 1:
        counts[table_ids[0]] += max(0, remaining)
    # Tables of >= 20 rows lose 1/20 of them to deletions (id gaps): insert that much more.
    return {tid: round(c * 20 / 19) if c >= 20 else c for tid, c in counts.items()}


def _field_value_sql(fid: int, ftype: str) -> str:
    hv = h("g", int(fid))
    if ftype == "text":
        value = f"{w(f'{hv} >> 8')} || ' ' || g"
    elif ftype == "long_text":
        words = f"{w(f'{hv} >> 8')} || E'\\n' || {w(f'{hv} >> 16')}"
        value = f"{words} || ' ' || repeat('lorem ipsum ', (({hv} >> 24) % 12)::int)"
    elif ftype == "number":
        value = f"(((({hv} >> 8) % 2000000) - 1000000) / 100.0)::numeric(50,2)"
    elif ftype == "boolean":
        value = f"(({hv} >> 8) % 2 = 0)"
    elif ftype == "date":
        value = f"DATE '1990-01-01' + (({hv} >> 8) % 15000)::int"
    elif ftype == "json":
        value = (
            f"CASE WHEN ({hv} >> 8) % 3 = 0 THEN jsonb_build_array(({hv} >> 16) % 100, {w(f'{hv} >> 24')}) "
            f"ELSE jsonb_build_object('id', ({hv} >> 16) % 1000, 'value', {w(f'{hv} >> 24')}) END"
        )
    else:  # pragma: no cover - FIELD_COLUMN_TYPES is closed
        raise ValueError(ftype)
    return f"CASE WHEN {hv} % 10 = 0 THEN NULL ELSE {value} END"


def _user_table_fill(tid: int, rows: int, fields: Sequence[tuple[int, str]]) -> str:
    """INSERT the rows of one user table, delete ~5% (id gaps), then add Baserow's order index."""
    name = q(user_table_name(tid))
    if rows <= 0:
        return f'CREATE INDEX {quote_ident(f"tbl_order_id_{int(tid)}_idx")} ON {name} ("order", id);'
    rh = h("g", ROW_TAG + int(tid))
    cols = ", ".join(f"field_{int(fid)}" for fid, _ in fields)
    vals = ", ".join(_field_value_sql(fid, ftype) for fid, ftype in fields)
    sql = f"""INSERT INTO {name} (created_on, updated_on, trashed, "order"{", " if cols else ""}{cols})
SELECT CASE WHEN {rh} % 40 = 0 THEN NULL ELSE {ts(f"{rh} >> 4")} END,
       CASE WHEN {rh} % 40 = 1 THEN NULL ELSE {ts(f"{rh} >> 4")} + (({rh} >> 36) % 100000) * interval '1 second' END,
       {rh} % 33 = 5,
       g::numeric(40,20){", " if vals else ""}{vals}
FROM generate_series(1, {int(rows)}) AS g;
"""
    if rows >= 20:
        sql += f"DELETE FROM {name} WHERE {h('id', ROW_TAG + int(tid))} % 20 = 7;\n"
    sql += f'CREATE INDEX {quote_ident(f"tbl_order_id_{int(tid)}_idx")} ON {name} ("order", id);'
    return sql


async def _build_user_tables(conn: asyncpg.Connection, plan: Plan, spec: SynthSpec) -> tuple[list[int], dict[int, int]]:
    tb, fd = q(TABLE), q(FIELD)
    chosen = [
        int(r["id"])
        for r in await conn.fetch(f"SELECT id FROM {tb} ORDER BY {hb('id', 80)}, id LIMIT $1::int", plan.user_tables)
    ]
    if not chosen:
        return [], {}
    # The giant table gets one extra field of each type, so every column type is big somewhere.
    await conn.execute(
        f"""INSERT INTO {fd} (table_id, name, type, "order", "primary")
        SELECT $1::int, {w(hb("$1::int * 16 + x.i", 81))} || ' ' || x.t, x.t, 100 + x.i, false
        FROM unnest($2::text[]) WITH ORDINALITY AS x(t, i) ORDER BY x.i""",
        chosen[0],
        list(FIELD_COLUMN_TYPES),
    )
    fields: dict[int, list[tuple[int, str]]] = {tid: [] for tid in chosen}
    for r in await conn.fetch(
        f'SELECT table_id, id, type FROM {fd} WHERE table_id = ANY($1::int[]) ORDER BY table_id, "order", id',
        chosen,
    ):
        fields[int(r["table_id"])].append((int(r["id"]), str(r["type"])))
    counts = _row_counts(chosen, plan, spec)

    batch: list[str] = []
    batch_tables = 0
    batch_rows = 0
    for tid in sorted(chosen):
        batch.append(user_table_ddl(tid, fields[tid]))
        batch.append(_user_table_fill(tid, counts[tid], fields[tid]))
        batch_tables += 1
        batch_rows += counts[tid]
        if batch_tables >= 60 or batch_rows >= 150_000:
            await conn.execute("\n".join(batch))
            batch, batch_tables, batch_rows = [], 0, 0
    if batch:
        await conn.execute("\n".join(batch))
    return chosen, counts


async def _build_decoys(
    conn: asyncpg.Connection, chosen: Sequence[int], counts: dict[int, int]
) -> tuple[str | None, list[str]]:
    """Tables that look like user tables but are not. Returns (orphan name, all decoy names)."""
    tb = q(TABLE)
    decoys: list[str] = []
    webhook = f"{TABLE}webhook"
    await conn.execute(
        f"""CREATE TABLE {q(webhook)} (
            id serial PRIMARY KEY,
            table_id int NOT NULL REFERENCES {tb}(id) ON DELETE CASCADE,
            url varchar(2000) NOT NULL,
            active boolean NOT NULL DEFAULT true,
            created_on timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX {quote_ident(webhook + "_table_id_idx")} ON {q(webhook)} (table_id);"""
    )
    await conn.execute(
        f"""INSERT INTO {q(webhook)} (table_id, url, active, created_on)
        SELECT t.id, 'https://hooks.example.com/' || t.id || '?q=' || {w(hb("t.id", 90))},
               t.id % 3 <> 0, {ts(hb("t.id", 91))}
        FROM {tb} t ORDER BY t.id LIMIT 12"""
    )
    decoys.append(webhook)

    backup = f"{TABLE}_backup"
    await conn.execute(f"CREATE TABLE {q(backup)} AS SELECT * FROM {tb} WHERE id <= 25 ORDER BY id")
    decoys.append(backup)

    with_rows = sorted(tid for tid in chosen[1:] if counts.get(tid, 0) >= 5) or list(chosen[:1])
    old_source = with_rows[len(with_rows) // 2] if with_rows else None
    if old_source is not None:
        old = f"{user_table_name(old_source)}_old"
        await conn.execute(
            f"CREATE TABLE {q(old)} AS SELECT * FROM {q(user_table_name(old_source))} ORDER BY id LIMIT 5"
        )
        decoys.append(old)

    # Orphan: a physical table whose database_table row was deleted (a gap id: serial never reuses it).
    orphan_id = await conn.fetchval(
        f"SELECT min(g) FROM generate_series(1, (SELECT max(id) FROM {tb})) AS g "
        f"WHERE NOT EXISTS (SELECT 1 FROM {tb} t WHERE t.id = g)"
    )
    orphan: str | None = None
    if orphan_id is not None:
        orphan = user_table_name(int(orphan_id))
        await conn.execute(
            user_table_ddl(int(orphan_id), [])
            + f'\nINSERT INTO {q(orphan)} (created_on, updated_on, trashed, "order") '
            f"SELECT {ts(hb('g', 92))}, NULL, g = 2, g FROM generate_series(1, 3) AS g;"
        )
        decoys.append(orphan)
    return orphan, decoys


async def _count_rows(conn: asyncpg.Connection, table_ids: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    ids = sorted(table_ids)
    for start in range(0, len(ids), 400):
        part = ids[start : start + 400]
        sql = " UNION ALL ".join(
            f"SELECT {int(tid)} AS tid, count(*) AS n FROM {q(user_table_name(tid))}" for tid in part
        )
        counts.update({int(r["tid"]): int(r["n"]) for r in await conn.fetch(sql)})
    return counts


async def build_install(conn: asyncpg.Connection, spec: SynthSpec | None = None) -> SynthReport:
    """Create the pre-expansion base schema and data in an empty database; deterministic per spec."""
    spec = spec or SynthSpec()
    started = time.monotonic()
    plan = plan_for(spec)
    existing = await existing_base_tables(conn)
    if existing:
        raise UsageError(
            f"database already has base tables ({', '.join(existing)}): synth builds only into an empty database",
            hint="create a new database for the synthetic install",
        )
    await conn.execute(f"DROP TABLE IF EXISTS {CTX}")
    await conn.execute(f"CREATE TEMP TABLE {CTX} (k bigint NOT NULL, words text[] NOT NULL)")
    try:
        await conn.execute(
            f"INSERT INTO {CTX} (k, words) VALUES (hashint8extended($1::bigint, 0) & $2::bigint, $3::text[])",
            spec.seed % (1 << 63),
            (1 << 61) - 1,
            list(WORDS),
        )
        await conn.execute(base_ddl())
        await fill_base(conn, plan)
        await fill_big_workspaces(conn, spec)
        chosen, planned = await _build_user_tables(conn, plan, spec)
        orphan, decoys = await _build_decoys(conn, chosen, planned)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {CTX}")
    await conn.execute("ANALYZE")

    rows = await _count_rows(conn, chosen)
    giant = chosen[0] if chosen else None
    c = await conn.fetchrow(
        f"""SELECT (SELECT count(*) FROM {q(USER)}) AS users,
                   (SELECT count(*) FROM {q(WORKSPACE)}) AS workspaces,
                   (SELECT count(*) FROM {q(WORKSPACE_USER)}) AS members,
                   (SELECT count(*) FROM {q(DATABASE)}) AS databases,
                   (SELECT count(*) FROM {q(TABLE)}) AS tables,
                   (SELECT count(*) FROM {q(FIELD)}) AS fields,
                   (SELECT count(*) FROM {q(VIEW)}) AS views,
                   (SELECT count(*) FROM {q(VIEW)} WHERE type = $1) AS grid_views""",
        GRID_VIEW_TYPE,
    )
    assert c is not None
    return SynthReport(
        users=int(c["users"]),
        workspaces=int(c["workspaces"]),
        members=int(c["members"]),
        databases=int(c["databases"]),
        tables=int(c["tables"]),
        user_tables=len(chosen),
        fields=int(c["fields"]),
        views=int(c["views"]),
        grid_views=int(c["grid_views"]),
        user_rows=sum(rows.values()),
        seconds=round(time.monotonic() - started, 3),
        giant_table_id=giant,
        giant_rows=rows.get(giant, 0) if giant is not None else 0,
        empty_user_tables=tuple(sorted(t for t, n in rows.items() if n == 0)),
        single_row_user_tables=tuple(sorted(t for t, n in rows.items() if n == 1)),
        orphan_user_table=orphan,
        decoy_tables=tuple(decoys),
        seed=spec.seed,
        scale=spec.scale,
    )


async def generate(
    conn: asyncpg.Connection, *, scale: float, seed: int = 42, user_tables: int | None = None
) -> SynthReport:
    """The manifest's entry point (``[demo] generator``): ``build_install`` at this scale and seed."""
    return await build_install(conn, SynthSpec(scale=scale, seed=seed, user_tables=user_tables))
