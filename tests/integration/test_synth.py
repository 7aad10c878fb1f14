"""The synthetic install generator: base schema, each awkward data trait, determinism, refusal, live writes."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from bxbatch.db.session import quote_ident
from bxbatch.errors import UsageError
from bxbatch.migrations.baserow_expansion.synth import SynthReport, SynthSpec, build_install
from bxbatch.migrations.baserow_expansion.synth_live import mutate_once
from bxbatch.migrations.baserow_expansion.synth_sql import FIELD_COLUMN_TYPES
from bxbatch.migrations.loader import load_migration

MIGRATION = load_migration()  # the shipped Baserow expansion

SMALL = SynthSpec(scale=0.02, seed=42)
BASE_TABLES = (
    "auth_user",
    "database_workspace",
    "database_workspaceuser",
    "database_database",
    "database_table",
    "database_field",
    "database_view",
)


@dataclass
class Built:
    dsn: str
    report: SynthReport


@pytest.fixture(scope="module")
async def built(pg_server: Any) -> AsyncIterator[Built]:
    """One scale-0.02 install shared by the read-only trait tests of this module."""
    name = await pg_server.create_database()
    dsn = pg_server.dsn(name)
    conn = await asyncpg.connect(dsn)
    try:
        report = await build_install(conn, SMALL)
    finally:
        await conn.close()
    yield Built(dsn, report)
    await pg_server.drop_database(name)


@pytest.fixture
async def conn(built: Built) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(built.dsn)
    yield c
    await c.close()


async def _user_table_ids(conn: asyncpg.Connection) -> list[int]:
    """Physical tables matching the user-table pattern (the orphan included)."""
    rows = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' "
        "AND relname ~ $1 ORDER BY relname",
        MIGRATION.profile.user_table_regex_sql,
    )
    ids = [MIGRATION.profile.user_table_id(r["relname"]) for r in rows]
    return sorted(i for i in ids if i is not None)


def _t(table_id: int) -> str:
    return quote_ident(MIGRATION.profile.user_table_name(table_id))


# --- schema ------------------------------------------------------------------------------------


async def test_report_matches_database(conn: asyncpg.Connection, built: Built) -> None:
    r = built.report
    counts = {t: await conn.fetchval(f"SELECT count(*) FROM {quote_ident(t)}") for t in BASE_TABLES}
    assert counts == {
        "auth_user": r.users,
        "database_workspace": r.workspaces,
        "database_workspaceuser": r.members,
        "database_database": r.databases,
        "database_table": r.tables,
        "database_field": r.fields,
        "database_view": r.views,
    }
    assert r.grid_views == await conn.fetchval("SELECT count(*) FROM database_view WHERE type = 'table'")
    linked = [i for i in await _user_table_ids(conn) if f"database_table_{i}" != r.orphan_user_table]
    assert len(linked) == r.user_tables >= 10
    total = 0
    for tid in linked:
        total += await conn.fetchval(f"SELECT count(*) FROM {_t(tid)}")
    assert total == r.user_rows
    assert 0.85 * 20_000 <= r.user_rows <= 1.1 * 20_000
    assert 300 <= r.tables <= 450
    assert r.seconds > 0


async def test_base_schema_shape(conn: asyncpg.Connection) -> None:
    # FK delete rules: created_by_id SET NULL, every other FK CASCADE.
    fks = await conn.fetch(
        """SELECT conrelid::regclass::text AS tbl, a.attname AS col, confdeltype::text AS confdeltype
        FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE contype = 'f' AND connamespace = 'public'::regnamespace AND conrelid::regclass::text = ANY($1)""",
        list(BASE_TABLES),
    )
    rules = {(f["tbl"], f["col"]): f["confdeltype"] for f in fks}
    assert rules == {
        ("database_workspaceuser", "workspace_id"): "c",
        ("database_workspaceuser", "user_id"): "c",
        ("database_database", "workspace_id"): "c",
        ("database_table", "database_id"): "c",
        ("database_table", "created_by_id"): "n",
        ("database_field", "table_id"): "c",
        ("database_view", "table_id"): "c",
    }
    # Every FK column leads an index, as in a Django install.
    for tbl, col in rules:
        leading = await conn.fetchval(
            """SELECT count(*) FROM pg_index i JOIN pg_attribute a
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = $1::regclass AND a.attname = $2""",
            tbl,
            col,
        )
        assert leading >= 1, (tbl, col)
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'database_workspaceuser'::regclass AND contype = 'u'"
    )
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'auth_user'::regclass AND contype = 'u'"
    )


async def test_user_tables_have_one_column_per_field(conn: asyncpg.Connection, built: Built) -> None:
    for tid in await _user_table_ids(conn):
        if MIGRATION.profile.user_table_name(tid) == built.report.orphan_user_table:
            continue
        cols = await conn.fetch(
            """SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull FROM pg_attribute
            WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
            MIGRATION.profile.user_table_name(tid),
        )
        names = [c["attname"] for c in cols]
        assert names[:5] == ["id", "created_on", "updated_on", "trashed", "order"]
        assert [c["type"] for c in cols[:5]] == [
            "integer",
            "timestamp with time zone",
            "timestamp with time zone",
            "boolean",
            "numeric(40,20)",
        ]
        assert [c["attnotnull"] for c in cols[:5]] == [True, False, False, True, False]
        fields = await conn.fetch("SELECT id, type FROM database_field WHERE table_id = $1", tid)
        expected = {f"field_{f['id']}": FIELD_COLUMN_TYPES[f["type"]] for f in fields}
        assert {c["attname"]: c["type"] for c in cols[5:]} == expected


# --- data traits -------------------------------------------------------------------------------


async def test_id_gaps_in_base_and_user_tables(conn: asyncpg.Connection, built: Built) -> None:
    for tbl in BASE_TABLES:
        count, max_id = await conn.fetchrow(f"SELECT count(*), max(id) FROM {quote_ident(tbl)}")
        assert max_id > count, tbl
    giant = built.report.giant_table_id
    assert giant is not None
    count, max_id = await conn.fetchrow(f"SELECT count(*), max(id) FROM {_t(giant)}")
    assert max_id > count
    gapped = 0
    for tid in await _user_table_ids(conn):
        count, max_id = await conn.fetchrow(f"SELECT count(*), coalesce(max(id), 0) FROM {_t(tid)}")
        gapped += max_id > count
    assert gapped >= 3


async def test_trashed_rows_and_nulls(conn: asyncpg.Connection, built: Built) -> None:
    giant = built.report.giant_table_id
    assert giant is not None
    trashed, null_created, rows = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE trashed), count(*) FILTER (WHERE created_on IS NULL), count(*) FROM {_t(giant)}"
    )
    assert 0 < trashed < rows / 10
    assert 0 < null_created < rows / 10
    fields = await conn.fetch('SELECT id, type FROM database_field WHERE table_id = $1 ORDER BY "order", id', giant)
    assert {f["type"] for f in fields} == set(FIELD_COLUMN_TYPES)
    for f in fields:
        nulls = await conn.fetchval(f"SELECT count(*) FROM {_t(giant)} WHERE field_{int(f['id'])} IS NULL")
        assert 0 < nulls < rows / 4, f["type"]
    assert await conn.fetchval("SELECT count(*) FROM database_table WHERE created_by_id IS NULL") > 0
    assert await conn.fetchval("SELECT count(*) FROM database_table WHERE created_by_id IS NOT NULL") > 0
    assert await conn.fetchval("SELECT count(*) FROM auth_user WHERE email IS NULL") > 0


async def test_unicode_quotes_backslashes(conn: asyncpg.Connection, built: Built) -> None:
    checks: dict[str, Callable[[str], bool]] = {
        "accent": lambda v: any(c in v for c in "éèïüçñÆØÅ"),
        "cjk": lambda v: any("\u4e00" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" for c in v),
        "emoji": lambda v: any(ord(c) >= 0x1F300 for c in v),
        "single quote": lambda v: "'" in v,
        "double quote": lambda v: '"' in v,
        "backslash": lambda v: "\\" in v,
    }
    for tbl in ("database_workspace", "database_table", "database_field", "database_view", "auth_user"):
        col = "username" if tbl == "auth_user" else "name"
        names = [r[0] for r in await conn.fetch(f"SELECT {col} FROM {quote_ident(tbl)}")]
        for what, check in checks.items():
            assert any(check(n) for n in names), (tbl, what)
    giant = built.report.giant_table_id
    assert giant is not None
    text_ids = await conn.fetch("SELECT id FROM database_field WHERE table_id = $1 AND type = 'text'", giant)
    values: list[str] = []
    for f in text_ids:
        values += [r[0] for r in await conn.fetch(f"SELECT field_{int(f['id'])} FROM {_t(giant)} LIMIT 2000")]
    for what, check in checks.items():
        assert any(v is not None and check(v) for v in values), what


async def test_empty_single_and_giant_tables(conn: asyncpg.Connection, built: Built) -> None:
    r = built.report
    assert r.empty_user_tables
    assert r.single_row_user_tables
    for tid in r.empty_user_tables:
        assert await conn.fetchval(f"SELECT count(*) FROM {_t(tid)}") == 0
    for tid in r.single_row_user_tables:
        assert await conn.fetchval(f"SELECT count(*) FROM {_t(tid)}") == 1
    assert r.giant_table_id is not None
    assert 0.35 <= r.giant_rows / r.user_rows <= 0.45
    for tid in await _user_table_ids(conn):
        if tid != r.giant_table_id:
            assert await conn.fetchval(f"SELECT count(*) FROM {_t(tid)}") < r.giant_rows


async def test_membership_shapes(conn: asyncpg.Connection) -> None:
    assert await conn.fetchval(
        "SELECT count(*) FROM database_workspace w "
        "WHERE NOT EXISTS (SELECT 1 FROM database_workspaceuser m WHERE m.workspace_id = w.id)"
    )
    assert await conn.fetchval(
        "SELECT count(*) FROM (SELECT user_id FROM database_workspaceuser GROUP BY user_id "
        "HAVING count(DISTINCT workspace_id) >= 2) s"
    )
    kinds = {
        r["k"]
        for r in await conn.fetch(
            """SELECT CASE WHEN permissions IS NULL THEN 'null'
                           WHEN permissions = '{}'::jsonb THEN 'empty'
                           ELSE jsonb_typeof(permissions -> 'create_table') || ':' || (permissions ->> 'create_table')
                      END AS k
               FROM database_workspaceuser"""
        )
    }
    assert kinds == {"null", "empty", "boolean:true", "boolean:false", "string:true"}


async def test_views(conn: asyncpg.Connection, built: Built) -> None:
    types = Counter(
        {r["type"]: r["n"] for r in await conn.fetch("SELECT type, count(*) AS n FROM database_view GROUP BY type")}
    )
    assert set(types) == {"table", "gallery", "form", "kanban", "calendar"}
    assert 0.4 <= types["table"] / built.report.views <= 0.6
    assert await conn.fetchval(
        "SELECT count(*) FROM database_table t WHERE NOT EXISTS (SELECT 1 FROM database_view v WHERE v.table_id = t.id)"
    )


async def test_decoy_tables(conn: asyncpg.Connection, built: Built) -> None:
    r = built.report
    assert r.orphan_user_table is not None
    orphan_id = MIGRATION.profile.user_table_id(r.orphan_user_table)
    assert orphan_id is not None
    assert not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM database_table WHERE id = $1)", orphan_id)
    assert orphan_id in await _user_table_ids(conn)
    old = [d for d in r.decoy_tables if d.endswith("_old")]
    assert len(old) == 1
    assert MIGRATION.profile.user_table_id(old[0]) is None
    for name in ("database_tablewebhook", "database_table_backup", old[0], r.orphan_user_table):
        assert name in r.decoy_tables
        assert MIGRATION.profile.user_table_id(name) is None or name == r.orphan_user_table
        assert await conn.fetchval(f"SELECT count(*) FROM {quote_ident(name)}") > 0, name


async def test_statistics_exist(conn: asyncpg.Connection, built: Built) -> None:
    assert built.report.giant_table_id is not None
    assert await conn.fetchval(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = $1",
        MIGRATION.profile.user_table_name(built.report.giant_table_id),
    )
    assert await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'database_table'::regclass") > 0


# --- determinism, refusal, options ---------------------------------------------------------------


async def _fingerprint(conn: asyncpg.Connection) -> dict[str, str]:
    tables = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY relname"
    )
    out: dict[str, str] = {}
    for t in tables:
        name = quote_ident(t["relname"])
        out[t["relname"]] = await conn.fetchval(
            f"SELECT coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x.id)), '') FROM {name} x"
        )
    return out


async def test_same_seed_same_tables_other_seed_differs(
    db_factory: Callable[[], Awaitable[str]], conn_to: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    spec = SynthSpec(scale=0.01, seed=7)
    prints = []
    for s in (spec, spec, SynthSpec(scale=0.01, seed=8)):
        c = await conn_to(await db_factory())
        await build_install(c, s)
        prints.append(await _fingerprint(c))
    assert prints[0] == prints[1]
    assert len(prints[0]) > 10
    assert prints[0]["database_table"] != prints[2]["database_table"]
    assert prints[0]["database_workspaceuser"] != prints[2]["database_workspaceuser"]


async def test_refuses_database_with_base_tables(
    fresh_db: str, conn_to: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    c = await conn_to(fresh_db)
    await c.execute("CREATE TABLE database_table (id serial PRIMARY KEY)")
    with pytest.raises(UsageError) as err:
        await build_install(c, SynthSpec(scale=0.005))
    assert "database_table" in str(err.value)
    assert err.value.hint
    assert "\n" not in err.value.message
    # Nothing was created next to the existing table.
    assert await c.fetchval("SELECT to_regclass('auth_user')") is None


async def test_refuses_second_build(fresh_db: str, conn_to: Callable[[str], Awaitable[asyncpg.Connection]]) -> None:
    c = await conn_to(fresh_db)
    await build_install(c, SynthSpec(scale=0.005))
    with pytest.raises(UsageError):
        await build_install(c, SynthSpec(scale=0.005))


@pytest.mark.parametrize(
    "spec",
    [
        SynthSpec(scale=0),
        SynthSpec(scale=-1),
        SynthSpec(giant_share=1.0),
        SynthSpec(user_tables=-1),
        SynthSpec(big_workspace_share=1.5),
        SynthSpec(big_workspace_members=-1),
    ],
)
async def test_rejects_bad_spec(
    spec: SynthSpec, fresh_db: str, conn_to: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    with pytest.raises(UsageError):
        await build_install(await conn_to(fresh_db), spec)


async def test_user_tables_override(fresh_db: str, conn_to: Callable[[str], Awaitable[asyncpg.Connection]]) -> None:
    c = await conn_to(fresh_db)
    report = await build_install(c, SynthSpec(scale=0.005, user_tables=400, giant_share=0.5))
    assert report.user_tables == 400
    assert len(await _user_table_ids(c)) == 401  # + the orphan
    assert report.tables >= 400
    assert 0.45 <= report.giant_rows / report.user_rows <= 0.55


# --- live writes -----------------------------------------------------------------------------------


async def test_mutate_once_many_times_concurrently(
    fresh_db: str, conn_to: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    setup = await conn_to(fresh_db)
    await build_install(setup, SynthSpec(scale=0.005, user_tables=12))
    before, max_before = await setup.fetchrow("SELECT count(*), max(id) FROM database_table")

    async def writer(seed: int, n: int) -> list[str]:
        c = await conn_to(fresh_db)
        rng = random.Random(seed)
        return [await mutate_once(c, rng) for _ in range(n)]

    results = await asyncio.gather(writer(1, 200), writer(2, 200), writer(3, 100))
    labels = [label for part in results for label in part]
    assert len(labels) == 500
    assert all(isinstance(label, str) and label for label in labels)
    done = Counter(label.split(":")[0].split("+")[0] for label in labels if not label.startswith("noop"))
    for kind in (
        "insert_row",
        "update_row",
        "delete_row",
        "insert_view",
        "delete_view",
        "insert_member",
        "delete_member",
        "insert_table",
        "delete_table",
    ):
        assert done[kind] > 0, (kind, done)
    assert any(label == "insert_table+physical" for label in labels)
    # Some views the writers made are grid views ('table'), and created tables show up in the catalog.
    assert await setup.fetchval("SELECT count(*) FROM database_view WHERE created_on > now() - interval '1 hour'")
    after = await setup.fetchval("SELECT count(*) FROM database_table")
    assert after != before or done["insert_table"] == done["delete_table"]
    # Every physical user table created by a writer belongs to a database_table row.
    new_ids = [i for i in await _user_table_ids(setup) if i > max_before]
    for tid in new_ids:
        assert await setup.fetchval("SELECT EXISTS (SELECT 1 FROM database_table WHERE id = $1)", tid)


async def test_mutate_once_on_empty_install_is_noop(
    fresh_db: str, conn_to: Callable[[str], Awaitable[asyncpg.Connection]]
) -> None:
    """Nothing to pick (no tables, views, members): every write reports a noop instead of raising."""
    c = await conn_to(fresh_db)
    await build_install(c, SynthSpec(scale=0.005, user_tables=0))
    for tbl in ("database_workspace", "auth_user"):
        await c.execute(f"DELETE FROM {quote_ident(tbl)}")
    rng = random.Random(5)
    labels = {await mutate_once(c, rng) for _ in range(60)}
    assert labels
    assert all(label.startswith("noop") for label in labels)
