"""The base tables of the synthetic Baserow install: their size per scale, their DDL and their set-based fill."""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg

from bxbatch.db.idents import quote_ident
from bxbatch.errors import UsageError
from bxbatch.migrations.baserow_expansion.synth_sql import (
    BASE_TABLES,
    DATABASE,
    FIELD,
    FIELD_COLUMN_TYPES,
    GRID_VIEW_TYPE,
    SCHEMA,
    TABLE,
    USER,
    VIEW,
    VIEW_TYPES_OTHER,
    WORKSPACE,
    WORKSPACE_USER,
    hb,
    name_word,
    q,
    ts,
    uses_word,
    w,
)


@dataclass(frozen=True)
class SynthSpec:
    scale: float = 1.0  # 1.0 = ~1,000,000 user-table rows, ~20,000 database_table rows
    seed: int = 42
    user_tables: int | None = None  # number of physical database_table_<id> tables (default ~300*scale)
    giant_share: float = 0.4  # share of all user rows in the one giant table
    # Big workspaces (0: none, the default shape). Real installs have a few workspaces with many
    # members and many tables, and power users in most of them: this share of the workspaces gets
    # ``big_workspace_members`` member draws with a strong bias to low user ids (the first users are
    # in nearly all of them) and ``big_workspace_databases`` of all databases (SHAPES["founders"]).
    big_workspace_share: float = 0.0
    big_workspace_members: int = 400
    big_workspace_databases: float = 0.15


# Named shapes of SynthSpec (benchmarks: --permissions-shape): the fields each one sets.
SHAPES: dict[str, dict[str, float]] = {
    "default": {},
    # ~3.1 M permissions at scale 3 (~1 M at scale 1; 0.19 M at the default shape), the heaviest
    # member 16,450: the shape the founders measured on a real install (3.2 M at scale 3)
    "founders": {"big_workspace_share": 0.003, "big_workspace_members": 560, "big_workspace_databases": 0.11},
}


@dataclass(frozen=True)
class Plan:
    users: int
    workspaces: int
    databases: int
    tables: int
    user_tables: int
    rows: int


def plan_for(spec: SynthSpec) -> Plan:
    if not (spec.scale > 0 and math.isfinite(spec.scale)):
        raise UsageError(f"synth scale must be a positive number, got {spec.scale!r}")
    if not 0.0 <= spec.giant_share < 1.0:
        raise UsageError(f"synth giant_share must be in [0, 1), got {spec.giant_share!r}", hint="e.g. 0.4")
    if not 0.0 <= spec.big_workspace_share <= 1.0 or not 0.0 <= spec.big_workspace_databases <= 1.0:
        raise UsageError("synth big_workspace_share and big_workspace_databases must be in [0, 1]")
    if spec.big_workspace_members < 0:
        raise UsageError(f"synth big_workspace_members must be >= 0, got {spec.big_workspace_members}")
    if spec.user_tables is not None and spec.user_tables < 0:
        raise UsageError(f"synth user_tables must be >= 0, got {spec.user_tables}")
    s = spec.scale
    user_tables = spec.user_tables if spec.user_tables is not None else max(10, round(300 * s))
    # ~4.5% of database_table rows are deleted (directly or by cascade): keep enough for user tables.
    tables = max(40, round(20_700 * s), math.ceil(user_tables * 1.25) + 20)
    return Plan(
        users=max(30, round(8_000 * s)),
        workspaces=max(12, round(3_000 * s)),
        databases=max(15, round(5_000 * s)),
        tables=tables,
        user_tables=user_tables,
        rows=max(100, round(1_000_000 * s)),
    )


async def existing_base_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) ORDER BY c.relname",
        SCHEMA,
        list(BASE_TABLES),
    )
    return [str(r["relname"]) for r in rows]


def base_ddl() -> str:
    u, ws, wu = q(USER), q(WORKSPACE), q(WORKSPACE_USER)
    db, tb, fd, vw = q(DATABASE), q(TABLE), q(FIELD), q(VIEW)

    def idx(table: str, column: str, suffix: str = "idx", opclass: str = "") -> str:
        name = quote_ident(f"{table}_{column}_{suffix}")
        return f"CREATE INDEX {name} ON {q(table)} ({quote_ident(column)}{opclass});"

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
{idx(USER, "username", "like", " varchar_pattern_ops")}
{idx(WORKSPACE_USER, "workspace_id")}
{idx(WORKSPACE_USER, "user_id")}
{idx(DATABASE, "workspace_id")}
{idx(TABLE, "database_id")}
{idx(TABLE, "created_by_id")}
{idx(FIELD, "table_id")}
{idx(VIEW, "table_id")}
"""


async def fill_base(conn: asyncpg.Connection, plan: Plan) -> None:
    """Users, workspaces, members, databases, tables, fields, views; then deletions (id gaps)."""
    u, ws, wu = q(USER), q(WORKSPACE), q(WORKSPACE_USER)
    db, tb, fd, vw = q(DATABASE), q(TABLE), q(FIELD), q(VIEW)

    await conn.execute(
        f"""INSERT INTO {u} (username, email, first_name, is_active, date_joined)
        SELECT 'user' || g || '_' || {w(hb("g", 1))},
               CASE WHEN {hb("g", 2)} % 8 = 0 THEN NULL ELSE 'user' || g || '@example.com' END,
               CASE WHEN {hb("g", 3)} % 10 = 0 THEN NULL ELSE {name_word("g", hb("g", 4))} END,
               {hb("g", 5)} % 20 <> 0,
               {ts(hb("g", 6))}
        FROM generate_series(1, $1::int) AS g ORDER BY g""",
        plan.users,
    )
    await conn.execute(
        f"""INSERT INTO {ws} (name, created_on)
        SELECT CASE WHEN {uses_word("g", hb("g", 10), 3)} THEN {name_word("g", hb("g", 11))} || ' workspace ' || g
                    ELSE 'Workspace ' || g END,
               {ts(hb("g", 12))}
        FROM generate_series(1, $1::int) AS g ORDER BY g""",
        plan.workspaces,
    )
    # Workspace 2 and ~10% of the others have no members; user 1 is in every workspace 1, 6, 11, ...
    k = "(w.id * 64 + m.j)"
    perm = hb(k, 22)
    await conn.execute(
        f"""INSERT INTO {wu} (workspace_id, user_id, permissions, created_on)
        SELECT w.id, m.user_id,
               CASE WHEN {perm} % 10 < 4 THEN '{{"create_table": true}}'::jsonb
                    WHEN {perm} % 10 < 6 THEN '{{"create_table": false}}'::jsonb
                    WHEN {perm} % 10 = 6 THEN '{{}}'::jsonb
                    WHEN {perm} % 10 = 7 THEN '{{"create_table": "true"}}'::jsonb
                    ELSE NULL END,
               {ts(hb(k, 23))}
        FROM {ws} w
        CROSS JOIN LATERAL (
            SELECT j, (1 + {hb("w.id * 64 + j", 21)} % $1::int)::int AS user_id
            FROM generate_series(1, CASE WHEN w.id = 2 OR {hb("w.id", 20)} % 10 = 0 THEN 0
                                         ELSE 1 + ({hb("w.id", 20)} >> 8) % 6 END::int) AS j
            UNION ALL
            SELECT 0, 1 WHERE w.id % 5 = 1
        ) m
        ORDER BY w.id, m.j
        ON CONFLICT (workspace_id, user_id) DO NOTHING""",
        plan.users,
    )
    await conn.execute(
        f"""INSERT INTO {db} (workspace_id, name)
        SELECT (1 + {hb("g", 30)} % $1::int)::int,
               CASE WHEN {uses_word("g", hb("g", 31), 4)} THEN {name_word("g", hb("g", 32))} || ' db ' || g
                    ELSE 'Database ' || g END
        FROM generate_series(1, $2::int) AS g ORDER BY g""",
        plan.workspaces,
        plan.databases,
    )
    await conn.execute(
        f"""INSERT INTO {tb} (database_id, name, "order", created_by_id, created_on)
        SELECT (1 + {hb("g", 40)} % $1::int)::int,
               CASE WHEN {uses_word("g", hb("g", 41), 3)} THEN {name_word("g", hb("g", 42))} || ' ' || g
                    ELSE 'Table ' || g END,
               ({hb("g", 43)} % 50)::int,
               CASE WHEN g % 10 = 4 OR {hb("g", 44)} % 10 = 0 THEN NULL
                    ELSE (1 + {hb("g", 45)} % $2::int)::int END,
               {ts(hb("g", 46))}
        FROM generate_series(1, $3::int) AS g ORDER BY g""",
        plan.databases,
        plan.users,
        plan.tables,
    )
    fk = "(t.id * 16 + j)"
    await conn.execute(
        f"""INSERT INTO {fd} (table_id, name, type, "order", "primary")
        SELECT t.id,
               CASE WHEN j = 0 THEN 'Name' ELSE {name_word("t.id", hb(fk, 51), "j")} || ' ' || j END,
               CASE WHEN j = 0 THEN 'text' ELSE ($1::text[])[1 + {hb(fk, 52)} % $2::int] END,
               j, j = 0
        FROM {tb} t CROSS JOIN LATERAL generate_series(0, ({hb("t.id", 50)} % 8)::int) AS j
        ORDER BY t.id, j""",
        list(FIELD_COLUMN_TYPES),
        len(FIELD_COLUMN_TYPES),
    )
    vk = "(t.id * 16 + j)"
    await conn.execute(
        f"""INSERT INTO {vw} (table_id, name, type, "order", created_on)
        SELECT t.id,
               CASE WHEN {uses_word("t.id", hb(vk, 61), 3)} THEN {name_word("t.id", hb(vk, 62), "j")}
                    ELSE 'View ' || j END,
               CASE WHEN {hb(vk, 63)} % 2 = 0 THEN $1::text
                    ELSE ($2::text[])[1 + {hb(vk, 64)} % $3::int] END,
               j,
               {ts(hb(vk, 65))}
        FROM {tb} t
        CROSS JOIN LATERAL generate_series(1, CASE WHEN t.id % 10 = 3 OR {hb("t.id", 60)} % 5 = 0
                                                   THEN 0 ELSE 1 + ({hb("t.id", 60)} >> 8) % 4
                                              END::int) AS j
        ORDER BY t.id, j""",
        GRID_VIEW_TYPE,
        list(VIEW_TYPES_OTHER),
        len(VIEW_TYPES_OTHER),
    )
    # Deleted rows: id gaps in every base table (cascades add more: members, databases, fields...).
    await conn.execute(
        f"""DELETE FROM {u} WHERE id > 5 AND (id = 7 OR {hb("id", 70)} % 50 = 0);
        DELETE FROM {ws} WHERE id > 5 AND (id = 7 OR {hb("id", 71)} % 100 = 0);
        DELETE FROM {tb} WHERE id = 7 OR {hb("id", 72)} % 33 = 0;
        DELETE FROM {fd} WHERE NOT "primary" AND (
            {hb("id", 73)} % 50 = 0 OR id = (SELECT min(id) FROM {fd} WHERE NOT "primary"));
        DELETE FROM {vw} WHERE id = 7 OR {hb("id", 74)} % 40 = 0;
        DELETE FROM {wu} WHERE id = 7 OR {hb("id", 75)} % 30 = 0;
        DELETE FROM {db} WHERE id = 7;"""
    )


async def fill_big_workspaces(conn: asyncpg.Connection, spec: SynthSpec) -> None:
    """Make ``big_workspace_share`` of the workspaces big (SynthSpec); nothing at the default shape."""
    if spec.big_workspace_share <= 0.0:
        return
    u, ws, wu, db = q(USER), q(WORKSPACE), q(WORKSPACE_USER), q(DATABASE)
    await conn.execute(
        f"""CREATE TEMP TABLE bxbatch_synth_big AS
        SELECT row_number() OVER (ORDER BY {hb("id", 90)}, id)::int AS n, id FROM {ws}
        ORDER BY {hb("id", 90)}, id
        LIMIT greatest(1, round((SELECT count(*) FROM {ws}) * $1::float8))::int""",
        spec.big_workspace_share,
    )
    # Members: u = hash / 2^63 in [0, 1), user id ~ 1 + max_id * u^4: the lowest ids are power users.
    k = "(b.id * 4096 + j)"
    frac = f"({hb(k, 92)}::float8 / {float(1 << 63)})"
    await conn.execute(
        f"""INSERT INTO {wu} (workspace_id, user_id, permissions, created_on)
        SELECT b.id, x.id,
               CASE WHEN {hb(k, 93)} % 2 = 0 THEN '{{"create_table": true}}'::jsonb
                    ELSE '{{"create_table": false}}'::jsonb END,
               {ts(hb(k, 94))}
        FROM bxbatch_synth_big b
        CROSS JOIN generate_series(1, $1::int) AS j
        JOIN {u} x ON x.id = 1 + floor((SELECT max(id) FROM {u}) * power({frac}, 4))::int
        ORDER BY b.id, j
        ON CONFLICT (workspace_id, user_id) DO NOTHING""",
        spec.big_workspace_members,
    )
    await conn.execute(
        f"""UPDATE {db} AS d SET workspace_id = b.id
        FROM bxbatch_synth_big AS b
        WHERE {hb("d.id", 95)} % 10000 < round($1::float8 * 10000)
          AND b.n = 1 + ({hb("d.id", 96)} % (SELECT count(*) FROM bxbatch_synth_big))""",
        spec.big_workspace_databases,
    )
    await conn.execute("DROP TABLE bxbatch_synth_big")
