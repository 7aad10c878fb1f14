"""Synthetic Baserow installs: builds the pre-expansion base schema plus awkward data, and live writes.

``build_install`` fills an empty database, set-based and deterministic: every pseudo-random choice is
``hashint8extended(key, seed_key + tag)`` on the server, so one scale + seed gives byte-identical
tables on every build (timestamps included: nothing reads ``now()``). ``mutate_once`` performs one
random write as the live application would, for tests that write while a migration runs.

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

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.session import qualified, quote_ident
from bxbatch.errors import UsageError
from bxbatch.migrations.profile import GUIDE, USER_TABLE_REGEX_SQL

# Field type (database_field.type) -> column type of field_<id> in the user data table.
FIELD_COLUMN_TYPES: dict[str, str] = {
    "text": "text",
    "long_text": "text",
    "number": "numeric(50,2)",
    "boolean": "boolean",
    "date": "date",
    "json": "jsonb",
}
VIEW_TYPES_OTHER: tuple[str, ...] = ("gallery", "form", "kanban", "calendar")

# Awkward strings used in names and text values (no NUL: PostgreSQL text cannot hold it).
WORDS: tuple[str, ...] = (
    "Café",
    "naïve façade",
    "Ünïcödé Straße",
    "Zürich",
    "Ñandú",
    "ÆØÅ æøå",
    "日本語テーブル",
    "中文字段",
    "한국어",
    "Ελληνικά",
    "Русский",
    "العربية",
    "עברית",
    "🚀 launch",
    "👩‍💻 dev",
    "🎉",
    "O'Brien",
    'say "hi"',
    'it\'s "both"',
    "back\\slash",
    "C:\\temp\\new",
    "semi;colon",
    "100% done",
    "under_score",
    "tab\there",
    "line\nbreak",
    "  padded  ",
    "",
    "NULL",
    "<b>bold</b>",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "plain",
)

_CTX = "pg_temp.bxbatch_synth_ctx"
_K = f"(SELECT k FROM {_CTX})"
_WORDS_SQL = f"((SELECT words FROM {_CTX}))"
_MASK = (1 << 63) - 1
_TS_BASE = 1546300800  # 2019-01-01T00:00:00Z
_TS_SPAN = 5 * 365 * 86400
_ROW_TAG = 1_000_000_000  # row hashes of user table <tid> use tag _ROW_TAG + tid; fields use tag <fid>
_BASE_TAG = 2_000_000_000  # base-table hashes use _BASE_TAG + n

_BASE_TABLES: tuple[str, ...] = (
    GUIDE.user,
    GUIDE.workspace,
    GUIDE.workspace_user,
    GUIDE.database,
    GUIDE.table,
    GUIDE.field,
    GUIDE.view,
)


def _q(name: str) -> str:
    """Schema-qualified, quoted name of a table in the profile's schema."""
    return qualified(GUIDE.schema, name)


def _h(key: str, tag: int) -> str:
    """SQL: a non-negative deterministic pseudo-random bigint for ``key`` (an SQL int expression)."""
    return f"(hashint8extended(({key})::bigint, {_K} + {int(tag)}) & {_MASK})"


def _hb(key: str, n: int) -> str:
    """Like ``_h`` for base tables (tag space separate from user-table fields)."""
    return _h(key, _BASE_TAG + n)


def _w(index_expr: str) -> str:
    """SQL: one of WORDS chosen by a non-negative int expression."""
    return f"{_WORDS_SQL}[1 + ({index_expr}) % {len(WORDS)}]"


def _name_word(id_expr: str, hash_expr: str, offset: str = "0") -> str:
    """SQL: a word for a name; ids up to 2 * len(WORDS) cycle through all WORDS (even at tiny scale)."""
    nw = len(WORDS)
    return (
        f"CASE WHEN ({id_expr}) <= {2 * nw} THEN {_WORDS_SQL}[1 + (({id_expr}) + ({offset})) % {nw}] "
        f"ELSE {_w(hash_expr)} END"
    )


def _uses_word(id_expr: str, hash_expr: str, one_in: int) -> str:
    """SQL condition: this name carries a word (always for small ids, else one in ``one_in``)."""
    return f"(({id_expr}) <= {2 * len(WORDS)} OR {hash_expr} % {int(one_in)} = 0)"


def _ts(hash_expr: str) -> str:
    return f"to_timestamp({_TS_BASE} + ({hash_expr}) % {_TS_SPAN})"


@dataclass(frozen=True)
class SynthSpec:
    scale: float = 1.0  # 1.0 = ~1,000,000 user-table rows, ~20,000 database_table rows
    seed: int = 42
    user_tables: int | None = None  # number of physical database_table_<id> tables (default ~300*scale)
    giant_share: float = 0.4  # share of all user rows in the one giant table


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


@dataclass(frozen=True)
class _Plan:
    users: int
    workspaces: int
    databases: int
    tables: int
    user_tables: int
    rows: int


def _plan(spec: SynthSpec) -> _Plan:
    if not (spec.scale > 0 and math.isfinite(spec.scale)):
        raise UsageError(f"synth scale must be a positive number, got {spec.scale!r}")
    if not 0.0 <= spec.giant_share < 1.0:
        raise UsageError(f"synth giant_share must be in [0, 1), got {spec.giant_share!r}", hint="e.g. 0.4")
    if spec.user_tables is not None and spec.user_tables < 0:
        raise UsageError(f"synth user_tables must be >= 0, got {spec.user_tables}")
    s = spec.scale
    user_tables = spec.user_tables if spec.user_tables is not None else max(10, round(300 * s))
    # ~4.5% of database_table rows are deleted (directly or by cascade): keep enough for user tables.
    tables = max(40, round(20_700 * s), math.ceil(user_tables * 1.25) + 20)
    return _Plan(
        users=max(30, round(8_000 * s)),
        workspaces=max(12, round(3_000 * s)),
        databases=max(15, round(5_000 * s)),
        tables=tables,
        user_tables=user_tables,
        rows=max(100, round(1_000_000 * s)),
    )


async def _existing_base_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) ORDER BY c.relname",
        GUIDE.schema,
        list(_BASE_TABLES),
    )
    return [str(r["relname"]) for r in rows]


def _base_ddl() -> str:
    u, ws, wu = _q(GUIDE.user), _q(GUIDE.workspace), _q(GUIDE.workspace_user)
    db, tb, fd, vw = _q(GUIDE.database), _q(GUIDE.table), _q(GUIDE.field), _q(GUIDE.view)

    def idx(table: str, column: str, suffix: str = "idx", opclass: str = "") -> str:
        name = quote_ident(f"{table}_{column}_{suffix}")
        return f"CREATE INDEX {name} ON {_q(table)} ({quote_ident(column)}{opclass});"

    return f"""
CREATE TABLE {u} (
    id serial PRIMARY KEY,
    username varchar(150) NOT NULL UNIQUE,
    email varchar(254),
    first_name varchar(150),
    is_active boolean NOT NULL DEFAULT true,
    date_joined timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {ws} (
    id serial PRIMARY KEY,
    name varchar(165) NOT NULL,
    created_on timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {wu} (
    id serial PRIMARY KEY,
    workspace_id int NOT NULL REFERENCES {ws}(id) ON DELETE CASCADE,
    user_id int NOT NULL REFERENCES {u}(id) ON DELETE CASCADE,
    permissions jsonb,
    created_on timestamptz DEFAULT now(),
    UNIQUE (workspace_id, user_id)
);
CREATE TABLE {db} (
    id serial PRIMARY KEY,
    workspace_id int NOT NULL REFERENCES {ws}(id) ON DELETE CASCADE,
    name varchar(255) NOT NULL
);
CREATE TABLE {tb} (
    id serial PRIMARY KEY,
    database_id int NOT NULL REFERENCES {db}(id) ON DELETE CASCADE,
    name varchar(255) NOT NULL,
    "order" int NOT NULL DEFAULT 0,
    created_by_id int NULL REFERENCES {u}(id) ON DELETE SET NULL,
    created_on timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {fd} (
    id serial PRIMARY KEY,
    table_id int NOT NULL REFERENCES {tb}(id) ON DELETE CASCADE,
    name varchar(255) NOT NULL,
    type varchar(32) NOT NULL,
    "order" int NOT NULL DEFAULT 0,
    "primary" boolean NOT NULL DEFAULT false
);
CREATE TABLE {vw} (
    id serial PRIMARY KEY,
    table_id int NOT NULL REFERENCES {tb}(id) ON DELETE CASCADE,
    name varchar(255) NOT NULL,
    type varchar(32) NOT NULL,
    "order" int NOT NULL DEFAULT 0,
    created_on timestamptz NOT NULL DEFAULT now()
);
{idx(GUIDE.user, "username", "like", " varchar_pattern_ops")}
{idx(GUIDE.workspace_user, "workspace_id")}
{idx(GUIDE.workspace_user, "user_id")}
{idx(GUIDE.database, "workspace_id")}
{idx(GUIDE.table, "database_id")}
{idx(GUIDE.table, "created_by_id")}
{idx(GUIDE.field, "table_id")}
{idx(GUIDE.view, "table_id")}
"""


async def _fill_base(conn: asyncpg.Connection, plan: _Plan) -> None:
    """Users, workspaces, members, databases, tables, fields, views; then deletions (id gaps)."""
    u, ws, wu = _q(GUIDE.user), _q(GUIDE.workspace), _q(GUIDE.workspace_user)
    db, tb, fd, vw = _q(GUIDE.database), _q(GUIDE.table), _q(GUIDE.field), _q(GUIDE.view)

    await conn.execute(
        f"""INSERT INTO {u} (username, email, first_name, is_active, date_joined)
        SELECT 'user' || g || '_' || {_w(_hb("g", 1))},
               CASE WHEN {_hb("g", 2)} % 8 = 0 THEN NULL ELSE 'user' || g || '@example.com' END,
               CASE WHEN {_hb("g", 3)} % 10 = 0 THEN NULL ELSE {_name_word("g", _hb("g", 4))} END,
               {_hb("g", 5)} % 20 <> 0,
               {_ts(_hb("g", 6))}
        FROM generate_series(1, $1::int) AS g ORDER BY g""",
        plan.users,
    )
    await conn.execute(
        f"""INSERT INTO {ws} (name, created_on)
        SELECT CASE WHEN {_uses_word("g", _hb("g", 10), 3)} THEN {_name_word("g", _hb("g", 11))} || ' workspace ' || g
                    ELSE 'Workspace ' || g END,
               {_ts(_hb("g", 12))}
        FROM generate_series(1, $1::int) AS g ORDER BY g""",
        plan.workspaces,
    )
    # Workspace 2 and ~10% of the others have no members; user 1 is in every workspace 1, 6, 11, ...
    k = "(w.id * 64 + m.j)"
    perm = _hb(k, 22)
    await conn.execute(
        f"""INSERT INTO {wu} (workspace_id, user_id, permissions, created_on)
        SELECT w.id, m.user_id,
               CASE WHEN {perm} % 10 < 4 THEN '{{"create_table": true}}'::jsonb
                    WHEN {perm} % 10 < 6 THEN '{{"create_table": false}}'::jsonb
                    WHEN {perm} % 10 = 6 THEN '{{}}'::jsonb
                    WHEN {perm} % 10 = 7 THEN '{{"create_table": "true"}}'::jsonb
                    ELSE NULL END,
               {_ts(_hb(k, 23))}
        FROM {ws} w
        CROSS JOIN LATERAL (
            SELECT j, (1 + {_hb("w.id * 64 + j", 21)} % $1::int)::int AS user_id
            FROM generate_series(1, CASE WHEN w.id = 2 OR {_hb("w.id", 20)} % 10 = 0 THEN 0
                                         ELSE 1 + ({_hb("w.id", 20)} >> 8) % 6 END::int) AS j
            UNION ALL
            SELECT 0, 1 WHERE w.id % 5 = 1
        ) m
        ORDER BY w.id, m.j
        ON CONFLICT (workspace_id, user_id) DO NOTHING""",
        plan.users,
    )
    await conn.execute(
        f"""INSERT INTO {db} (workspace_id, name)
        SELECT (1 + {_hb("g", 30)} % $1::int)::int,
               CASE WHEN {_uses_word("g", _hb("g", 31), 4)} THEN {_name_word("g", _hb("g", 32))} || ' db ' || g
                    ELSE 'Database ' || g END
        FROM generate_series(1, $2::int) AS g ORDER BY g""",
        plan.workspaces,
        plan.databases,
    )
    await conn.execute(
        f"""INSERT INTO {tb} (database_id, name, "order", created_by_id, created_on)
        SELECT (1 + {_hb("g", 40)} % $1::int)::int,
               CASE WHEN {_uses_word("g", _hb("g", 41), 3)} THEN {_name_word("g", _hb("g", 42))} || ' ' || g
                    ELSE 'Table ' || g END,
               ({_hb("g", 43)} % 50)::int,
               CASE WHEN g % 10 = 4 OR {_hb("g", 44)} % 10 = 0 THEN NULL
                    ELSE (1 + {_hb("g", 45)} % $2::int)::int END,
               {_ts(_hb("g", 46))}
        FROM generate_series(1, $3::int) AS g ORDER BY g""",
        plan.databases,
        plan.users,
        plan.tables,
    )
    fk = "(t.id * 16 + j)"
    await conn.execute(
        f"""INSERT INTO {fd} (table_id, name, type, "order", "primary")
        SELECT t.id,
               CASE WHEN j = 0 THEN 'Name' ELSE {_name_word("t.id", _hb(fk, 51), "j")} || ' ' || j END,
               CASE WHEN j = 0 THEN 'text' ELSE ($1::text[])[1 + {_hb(fk, 52)} % $2::int] END,
               j, j = 0
        FROM {tb} t CROSS JOIN LATERAL generate_series(0, ({_hb("t.id", 50)} % 8)::int) AS j
        ORDER BY t.id, j""",
        list(FIELD_COLUMN_TYPES),
        len(FIELD_COLUMN_TYPES),
    )
    vk = "(t.id * 16 + j)"
    await conn.execute(
        f"""INSERT INTO {vw} (table_id, name, type, "order", created_on)
        SELECT t.id,
               CASE WHEN {_uses_word("t.id", _hb(vk, 61), 3)} THEN {_name_word("t.id", _hb(vk, 62), "j")}
                    ELSE 'View ' || j END,
               CASE WHEN {_hb(vk, 63)} % 2 = 0 THEN $1::text
                    ELSE ($2::text[])[1 + {_hb(vk, 64)} % $3::int] END,
               j,
               {_ts(_hb(vk, 65))}
        FROM {tb} t
        CROSS JOIN LATERAL generate_series(1, CASE WHEN t.id % 10 = 3 OR {_hb("t.id", 60)} % 5 = 0
                                                   THEN 0 ELSE 1 + ({_hb("t.id", 60)} >> 8) % 4
                                              END::int) AS j
        ORDER BY t.id, j""",
        GUIDE.grid_view_type,
        list(VIEW_TYPES_OTHER),
        len(VIEW_TYPES_OTHER),
    )
    # Deleted rows: id gaps in every base table (cascades add more: members, databases, fields...).
    await conn.execute(
        f"""DELETE FROM {u} WHERE id > 5 AND (id = 7 OR {_hb("id", 70)} % 50 = 0);
        DELETE FROM {ws} WHERE id > 5 AND (id = 7 OR {_hb("id", 71)} % 100 = 0);
        DELETE FROM {tb} WHERE id = 7 OR {_hb("id", 72)} % 33 = 0;
        DELETE FROM {fd} WHERE NOT "primary" AND (
            {_hb("id", 73)} % 50 = 0 OR id = (SELECT min(id) FROM {fd} WHERE NOT "primary"));
        DELETE FROM {vw} WHERE id = 7 OR {_hb("id", 74)} % 40 = 0;
        DELETE FROM {wu} WHERE id = 7 OR {_hb("id", 75)} % 30 = 0;
        DELETE FROM {db} WHERE id = 7;"""
    )


def _row_counts(table_ids: Sequence[int], plan: _Plan, spec: SynthSpec) -> dict[int, int]:
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


def _user_table_ddl(tid: int, fields: Sequence[tuple[int, str]]) -> str:
    name = _q(GUIDE.user_table_name(tid))
    cols = "".join(f",\n    field_{int(fid)} {FIELD_COLUMN_TYPES[ftype]} NULL" for fid, ftype in fields)
    return f"""CREATE TABLE {name} (
    id serial PRIMARY KEY,
    created_on timestamptz NULL,
    updated_on timestamptz NULL,
    trashed boolean NOT NULL DEFAULT false,
    "order" numeric(40,20) NULL{cols}
);"""


def _field_value_sql(fid: int, ftype: str) -> str:
    h = _h("g", int(fid))
    if ftype == "text":
        value = f"{_w(f'{h} >> 8')} || ' ' || g"
    elif ftype == "long_text":
        value = (
            f"{_w(f'{h} >> 8')} || E'\\n' || {_w(f'{h} >> 16')} || ' ' "
            f"|| repeat('lorem ipsum ', (({h} >> 24) % 12)::int)"
        )
    elif ftype == "number":
        value = f"(((({h} >> 8) % 2000000) - 1000000) / 100.0)::numeric(50,2)"
    elif ftype == "boolean":
        value = f"(({h} >> 8) % 2 = 0)"
    elif ftype == "date":
        value = f"DATE '1990-01-01' + (({h} >> 8) % 15000)::int"
    elif ftype == "json":
        value = (
            f"CASE WHEN ({h} >> 8) % 3 = 0 THEN jsonb_build_array(({h} >> 16) % 100, {_w(f'{h} >> 24')}) "
            f"ELSE jsonb_build_object('id', ({h} >> 16) % 1000, 'value', {_w(f'{h} >> 24')}) END"
        )
    else:  # pragma: no cover - FIELD_COLUMN_TYPES is closed
        raise ValueError(ftype)
    return f"CASE WHEN {h} % 10 = 0 THEN NULL ELSE {value} END"


def _user_table_fill(tid: int, rows: int, fields: Sequence[tuple[int, str]]) -> str:
    """INSERT the rows of one user table, delete ~5% (id gaps), then add Baserow's order index."""
    name = _q(GUIDE.user_table_name(tid))
    if rows <= 0:
        return f'CREATE INDEX {quote_ident(f"tbl_order_id_{int(tid)}_idx")} ON {name} ("order", id);'
    rh = _h("g", _ROW_TAG + int(tid))
    cols = ", ".join(f"field_{int(fid)}" for fid, _ in fields)
    vals = ", ".join(_field_value_sql(fid, ftype) for fid, ftype in fields)
    sql = f"""INSERT INTO {name} (created_on, updated_on, trashed, "order"{", " if cols else ""}{cols})
SELECT CASE WHEN {rh} % 40 = 0 THEN NULL ELSE {_ts(f"{rh} >> 4")} END,
       CASE WHEN {rh} % 40 = 1 THEN NULL ELSE {_ts(f"{rh} >> 4")} + (({rh} >> 36) % 100000) * interval '1 second' END,
       {rh} % 33 = 5,
       g::numeric(40,20){", " if vals else ""}{vals}
FROM generate_series(1, {int(rows)}) AS g;
"""
    if rows >= 20:
        sql += f"DELETE FROM {name} WHERE {_h('id', _ROW_TAG + int(tid))} % 20 = 7;\n"
    sql += f'CREATE INDEX {quote_ident(f"tbl_order_id_{int(tid)}_idx")} ON {name} ("order", id);'
    return sql


async def _build_user_tables(
    conn: asyncpg.Connection, plan: _Plan, spec: SynthSpec
) -> tuple[list[int], dict[int, int]]:
    tb, fd = _q(GUIDE.table), _q(GUIDE.field)
    chosen = [
        int(r["id"])
        for r in await conn.fetch(f"SELECT id FROM {tb} ORDER BY {_hb('id', 80)}, id LIMIT $1::int", plan.user_tables)
    ]
    if not chosen:
        return [], {}
    # The giant table gets one extra field of each type, so every column type is big somewhere.
    await conn.execute(
        f"""INSERT INTO {fd} (table_id, name, type, "order", "primary")
        SELECT $1::int, {_w(_hb("$1::int * 16 + x.i", 81))} || ' ' || x.t, x.t, 100 + x.i, false
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
        batch.append(_user_table_ddl(tid, fields[tid]))
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
    tb = _q(GUIDE.table)
    decoys: list[str] = []
    webhook = f"{GUIDE.table}webhook"
    await conn.execute(
        f"""CREATE TABLE {_q(webhook)} (
            id serial PRIMARY KEY,
            table_id int NOT NULL REFERENCES {tb}(id) ON DELETE CASCADE,
            url varchar(2000) NOT NULL,
            active boolean NOT NULL DEFAULT true,
            created_on timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX {quote_ident(webhook + "_table_id_idx")} ON {_q(webhook)} (table_id);"""
    )
    await conn.execute(
        f"""INSERT INTO {_q(webhook)} (table_id, url, active, created_on)
        SELECT t.id, 'https://hooks.example.com/' || t.id || '?q=' || {_w(_hb("t.id", 90))},
               t.id % 3 <> 0, {_ts(_hb("t.id", 91))}
        FROM {tb} t ORDER BY t.id LIMIT 12"""
    )
    decoys.append(webhook)

    backup = f"{GUIDE.table}_backup"
    await conn.execute(f"CREATE TABLE {_q(backup)} AS SELECT * FROM {tb} WHERE id <= 25 ORDER BY id")
    decoys.append(backup)

    with_rows = sorted(tid for tid in chosen[1:] if counts.get(tid, 0) >= 5) or list(chosen[:1])
    old_source = with_rows[len(with_rows) // 2] if with_rows else None
    if old_source is not None:
        old = f"{GUIDE.user_table_name(old_source)}_old"
        await conn.execute(
            f"CREATE TABLE {_q(old)} AS SELECT * FROM {_q(GUIDE.user_table_name(old_source))} ORDER BY id LIMIT 5"
        )
        decoys.append(old)

    # Orphan: a physical table whose database_table row was deleted (a gap id: serial never reuses it).
    orphan_id = await conn.fetchval(
        f"SELECT min(g) FROM generate_series(1, (SELECT max(id) FROM {tb})) AS g "
        f"WHERE NOT EXISTS (SELECT 1 FROM {tb} t WHERE t.id = g)"
    )
    orphan: str | None = None
    if orphan_id is not None:
        orphan = GUIDE.user_table_name(int(orphan_id))
        await conn.execute(
            _user_table_ddl(int(orphan_id), [])
            + f'\nINSERT INTO {_q(orphan)} (created_on, updated_on, trashed, "order") '
            f"SELECT {_ts(_hb('g', 92))}, NULL, g = 2, g FROM generate_series(1, 3) AS g;"
        )
        decoys.append(orphan)
    return orphan, decoys


async def _count_rows(conn: asyncpg.Connection, table_ids: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    ids = sorted(table_ids)
    for start in range(0, len(ids), 400):
        part = ids[start : start + 400]
        sql = " UNION ALL ".join(
            f"SELECT {int(tid)} AS tid, count(*) AS n FROM {_q(GUIDE.user_table_name(tid))}" for tid in part
        )
        counts.update({int(r["tid"]): int(r["n"]) for r in await conn.fetch(sql)})
    return counts


async def build_install(conn: asyncpg.Connection, spec: SynthSpec = SynthSpec()) -> SynthReport:
    """Create the pre-expansion base schema and data in an empty database; deterministic per spec."""
    started = time.monotonic()
    plan = _plan(spec)
    existing = await _existing_base_tables(conn)
    if existing:
        raise UsageError(
            f"database already has base tables ({', '.join(existing)}): synth builds only into an empty database",
            hint="create a new database for the synthetic install",
        )
    await conn.execute(f"DROP TABLE IF EXISTS {_CTX}")
    await conn.execute(f"CREATE TEMP TABLE {_CTX} (k bigint NOT NULL, words text[] NOT NULL)")
    try:
        await conn.execute(
            f"INSERT INTO {_CTX} (k, words) VALUES (hashint8extended($1::bigint, 0) & $2::bigint, $3::text[])",
            spec.seed % (1 << 63),
            (1 << 61) - 1,
            list(WORDS),
        )
        await conn.execute(_base_ddl())
        await _fill_base(conn, plan)
        chosen, planned = await _build_user_tables(conn, plan, spec)
        orphan, decoys = await _build_decoys(conn, chosen, planned)
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {_CTX}")
    await conn.execute("ANALYZE")

    rows = await _count_rows(conn, chosen)
    giant = chosen[0] if chosen else None
    c = await conn.fetchrow(
        f"""SELECT (SELECT count(*) FROM {_q(GUIDE.user)}) AS users,
                   (SELECT count(*) FROM {_q(GUIDE.workspace)}) AS workspaces,
                   (SELECT count(*) FROM {_q(GUIDE.workspace_user)}) AS members,
                   (SELECT count(*) FROM {_q(GUIDE.database)}) AS databases,
                   (SELECT count(*) FROM {_q(GUIDE.table)}) AS tables,
                   (SELECT count(*) FROM {_q(GUIDE.field)}) AS fields,
                   (SELECT count(*) FROM {_q(GUIDE.view)}) AS views,
                   (SELECT count(*) FROM {_q(GUIDE.view)} WHERE type = $1) AS grid_views""",
        GUIDE.grid_view_type,
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


# ---------------------------------------------------------------------------------------------
# Live writes

# Failures a live application meets when racing other writers or a migration: never a bug here.
_RACE_ERRORS: tuple[type[BaseException], ...] = (
    pgexc.ForeignKeyViolationError,
    pgexc.UniqueViolationError,
    pgexc.UndefinedTableError,
    pgexc.LockNotAvailableError,
    pgexc.DeadlockDetectedError,
    pgexc.SerializationError,
    pgexc.QueryCanceledError,
    pgexc.InvalidCachedStatementError,
)

_MUTATIONS: tuple[tuple[str, int], ...] = (
    ("insert_row", 28),
    ("update_row", 28),
    ("delete_row", 10),
    ("insert_view", 7),
    ("delete_view", 5),
    ("insert_member", 6),
    ("delete_member", 5),
    ("insert_table", 6),
    ("delete_table", 5),
)
_LOCK_TIMEOUT = "2s"


async def _pick_user_table(conn: asyncpg.Connection, rng: random.Random) -> str | None:
    """A random user table (linked to a database_table row); the biggest one about a third of the time."""
    rows = await conn.fetch(
        f"""SELECT c.relname, c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname ~ $2
          AND EXISTS (SELECT 1 FROM {_q(GUIDE.table)} t
                      WHERE t.id = substring(c.relname FROM '[0-9]+$')::int)
        ORDER BY c.relname""",
        GUIDE.schema,
        USER_TABLE_REGEX_SQL,
    )
    if not rows:
        return None
    if rng.random() < 0.35:
        return str(max(rows, key=lambda r: (r["reltuples"], r["relname"]))["relname"])
    return str(rng.choice(rows)["relname"])


def _pick_id_sql(table: str) -> str:
    """SQL: the first id at or above fraction $1 of max(id) in ``table`` (NULL when empty)."""
    return (
        f"(SELECT id FROM {table} WHERE id >= (SELECT coalesce(max(id), 0) FROM {table}) * $1::float8 "
        "ORDER BY id LIMIT 1)"
    )


async def _mutate(conn: asyncpg.Connection, rng: random.Random, kind: str) -> str:
    tb, fd, vw = _q(GUIDE.table), _q(GUIDE.field), _q(GUIDE.view)
    wu, ws, u, db = _q(GUIDE.workspace_user), _q(GUIDE.workspace), _q(GUIDE.user), _q(GUIDE.database)
    frac = rng.random()
    word = rng.choice(WORDS)
    if kind in ("insert_row", "update_row", "delete_row"):
        relname = await _pick_user_table(conn, rng)
        if relname is None:
            return f"noop:{kind}"
        t = _q(relname)
        if kind == "insert_row":
            status = await conn.execute(
                f"""INSERT INTO {t} (created_on, updated_on, trashed, "order")
                SELECT now(), now(), false, coalesce(max("order"), 0) + 1 FROM {t}"""
            )
        elif kind == "update_row":
            status = await conn.execute(
                f"UPDATE {t} SET updated_on = now(), trashed = (trashed <> $2::bool) WHERE id = {_pick_id_sql(t)}",
                frac,
                rng.random() < 0.1,
            )
        else:
            status = await conn.execute(f"DELETE FROM {t} WHERE id = {_pick_id_sql(t)}", frac)
    elif kind == "insert_view":
        view_type = GUIDE.grid_view_type if rng.random() < 0.5 else rng.choice(VIEW_TYPES_OTHER)
        status = await conn.execute(
            f"""INSERT INTO {vw} (table_id, name, type, "order", created_on)
            SELECT x.id, $2::text, $3::text, $4::int, now()
            FROM (SELECT {_pick_id_sql(tb)} AS id) x WHERE x.id IS NOT NULL""",
            frac,
            f"{word} view",
            view_type,
            rng.randrange(100),
        )
    elif kind == "delete_view":
        status = await conn.execute(f"DELETE FROM {vw} WHERE id = {_pick_id_sql(vw)}", frac)
    elif kind == "insert_member":
        permissions = rng.choice(
            ['{"create_table": true}', '{"create_table": false}', "{}", '{"create_table": "true"}', None]
        )
        status = await conn.execute(
            f"""INSERT INTO {wu} (workspace_id, user_id, permissions, created_on)
            SELECT w.id, x.id, $3::jsonb, now()
            FROM {ws} w, {u} x
            WHERE w.id = {_pick_id_sql(ws)}
              AND x.id = (SELECT id FROM {u} WHERE id >= (SELECT coalesce(max(id), 0) FROM {u}) * $2::float8
                          ORDER BY id LIMIT 1)
            ON CONFLICT (workspace_id, user_id) DO NOTHING""",
            frac,
            rng.random(),
            permissions,
        )
    elif kind == "delete_member":
        status = await conn.execute(f"DELETE FROM {wu} WHERE id = {_pick_id_sql(wu)}", frac)
    elif kind == "insert_table":
        new_id = await conn.fetchval(
            f"""INSERT INTO {tb} (database_id, name, "order", created_by_id, created_on)
            SELECT d.id, $2::text, $3::int,
                   (SELECT id FROM {u} WHERE id >= (SELECT coalesce(max(id), 0) FROM {u}) * $4::float8
                    ORDER BY id LIMIT 1),
                   now()
            FROM {db} d WHERE d.id = {_pick_id_sql(db)}
            RETURNING id""",
            frac,
            f"{word} table",
            rng.randrange(50),
            rng.random() if rng.random() < 0.9 else 2.0,  # 2.0 picks no user: created_by_id NULL
        )
        if new_id is None:
            return f"noop:{kind}"
        field_id = await conn.fetchval(
            f"""INSERT INTO {fd} (table_id, name, type, "order", "primary")
            VALUES ($1::int, 'Name', 'text', 0, true) RETURNING id""",
            new_id,
        )
        if rng.random() < 0.5:
            await conn.execute(_user_table_ddl(int(new_id), [(int(field_id), "text")]))
            return "insert_table+physical"
        return kind
    elif kind == "delete_table":
        table_id = await conn.fetchval(f"DELETE FROM {tb} WHERE id = {_pick_id_sql(tb)} RETURNING id", frac)
        if table_id is None:
            return f"noop:{kind}"
        physical = _q(GUIDE.user_table_name(int(table_id)))
        dropped = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", physical)
        if dropped:
            await conn.execute(f"DROP TABLE {physical}")
            return "delete_table+physical"
        return kind
    else:  # pragma: no cover - _MUTATIONS is closed
        raise ValueError(kind)
    affected = status.rsplit(" ", 1)[-1]
    return kind if affected.isdigit() and int(affected) > 0 else f"noop:{kind}"


async def mutate_once(conn: asyncpg.Connection, rng: random.Random) -> str:
    """One random live-application write; returns what it did ("noop:..." when a race made it moot)."""
    kinds = [k for k, _ in _MUTATIONS]
    kind = rng.choices(kinds, weights=[w for _, w in _MUTATIONS])[0]
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_TIMEOUT}'")
            return await _mutate(conn, rng, kind)
    except _RACE_ERRORS as exc:
        return f"noop:{kind}:{type(exc).__name__}"
