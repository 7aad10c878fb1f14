"""Live writes on a synthetic Baserow install, as the application makes them (tests write while a run goes on)."""

from __future__ import annotations

import random

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.migrations.baserow_expansion.synth_sql import (
    DATABASE,
    FIELD,
    GRID_VIEW_TYPE,
    SCHEMA,
    TABLE,
    USER,
    USER_TABLE_REGEX_SQL,
    VIEW,
    VIEW_TYPES_OTHER,
    WORDS,
    WORKSPACE,
    WORKSPACE_USER,
    q,
    user_table_ddl,
    user_table_name,
)

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
          AND EXISTS (SELECT 1 FROM {q(TABLE)} t
                      WHERE t.id = substring(c.relname FROM '[0-9]+$')::int)
        ORDER BY c.relname""",
        SCHEMA,
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
    tb, fd, vw = q(TABLE), q(FIELD), q(VIEW)
    wu, ws, u, db = q(WORKSPACE_USER), q(WORKSPACE), q(USER), q(DATABASE)
    frac = rng.random()
    word = rng.choice(WORDS)
    if kind in ("insert_row", "update_row", "delete_row"):
        relname = await _pick_user_table(conn, rng)
        if relname is None:
            return f"noop:{kind}"
        t = q(relname)
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
        view_type = GRID_VIEW_TYPE if rng.random() < 0.5 else rng.choice(VIEW_TYPES_OTHER)
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
            await conn.execute(user_table_ddl(int(new_id), [(int(field_id), "text")]))
            return "insert_table+physical"
        return kind
    elif kind == "delete_table":
        table_id = await conn.fetchval(f"DELETE FROM {tb} WHERE id = {_pick_id_sql(tb)} RETURNING id", frac)
        if table_id is None:
            return f"noop:{kind}"
        physical = q(user_table_name(int(table_id)))
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
