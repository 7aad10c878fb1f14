"""Backfill test helpers: synthetic templates, the set-based statements, row snapshots, ledger checks."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import asyncpg
import pytest

from bxbatch.db.session import qualified
from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install
from bxbatch.migrations.baserow_expansion.synth_base import SHAPES
from bxbatch.migrations.loader import load_migration
from bxbatch.ops import run as app

MIGRATION = load_migration()  # the shipped Baserow expansion

UP_TO_BACKFILL = ("preflight", "schema", "triggers", "backfill")
ALL_PHASES = list(app.PHASES)  # as imported, before any test narrows them


def synth_builder(scale: float, seed: int, user_tables: int | None = None, shape: str = "default") -> Any:
    async def build(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await build_install(conn, SynthSpec(scale=scale, seed=seed, user_tables=user_tables, **SHAPES[shape]))
        finally:
            await conn.close()

    return build


async def synth_template(
    pg_server: Any, scale: float, seed: int, user_tables: int | None = None, shape: str = "default"
) -> str:
    key = ("backfill-synth", scale, seed, user_tables) + ((shape,) if shape != "default" else ())
    return str(await pg_server.template(key, synth_builder(scale, seed, user_tables, shape)))


def only_phases(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = UP_TO_BACKFILL) -> None:
    """Run the real phases up to the backfill only: other phases are other tests' business."""
    monkeypatch.setattr(app, "PHASES", [(n, fn) for n, fn in ALL_PHASES if n in names])


async def apply_set_based(conn: asyncpg.Connection) -> None:
    """The guide's single statements (fixed), on a database whose schema and triggers phases ran."""
    await conn.execute(MIGRATION.job("enhanced_views").sql("set_based"), MIGRATION.profile.params["grid_view_type"])
    await conn.execute(MIGRATION.job("permissions").sql("set_based"))
    for r in await conn.fetch("SELECT table_id, relname, high_water FROM bxbatch.trigger_install ORDER BY table_id"):
        await conn.execute(
            f"""INSERT INTO database_activitylog (user_id, table_id, row_id, action_type, details, "timestamp")
            SELECT NULL, $1::int, r.id, 'row_created', jsonb_build_object('row_data', to_jsonb(r)),
                   coalesce(r.created_on, now())
            FROM {qualified("public", r["relname"])} AS r WHERE r.id <= $2""",
            r["table_id"],
            r["high_water"],
        )


async def snapshot(conn: asyncpg.Connection) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every derived row by content (multisets: a duplicate shows), without generated ids and now() stamps."""
    enhanced = await conn.fetch(
        "SELECT view_ptr_id, sticky_headers, conditional_formatting::text, column_grouping::text, "
        "filter_presets::text FROM database_tableview_enhanced"
    )
    permissions = await conn.fetch(
        "SELECT user_id, resource_type, resource_id, permission_level, granted_by_id FROM database_permission"
    )
    activity = await conn.fetch(
        """SELECT table_id, row_id, action_type, user_id, details::text,
                  CASE WHEN details -> 'row_data' ->> 'created_on' IS NULL THEN NULL ELSE "timestamp" END
           FROM database_activitylog WHERE action_type = 'row_created'"""
    )
    return {
        "enhanced_views": Counter(tuple(r) for r in enhanced),
        "permissions": Counter(tuple(r) for r in permissions),
        "activity_seed": Counter(tuple(r) for r in activity),
    }


def assert_no_duplicates(snap: dict[str, Counter[tuple[Any, ...]]]) -> None:
    for name, rows in snap.items():
        doubled = [row for row, n in rows.items() if n > 1]
        assert not doubled, f"{name}: {len(doubled)} duplicated rows, e.g. {doubled[:2]}"


def assert_same(actual: dict[str, Counter[tuple[Any, ...]]], expected: dict[str, Counter[tuple[Any, ...]]]) -> None:
    for name in expected:
        missing = expected[name] - actual[name]
        extra = actual[name] - expected[name]
        assert not missing and not extra, (
            f"{name}: {sum(missing.values())} missing (e.g. {list(missing)[:2]}), "
            f"{sum(extra.values())} extra (e.g. {list(extra)[:2]})"
        )


async def assert_ledger_exact(conn: asyncpg.Connection, run_id: int) -> dict[str, int]:
    """Every chunk done exactly once, and in every pass the ranges partition each part's (lo, hi]."""
    bad = await conn.fetch(
        "SELECT id, job, seq, status, done_count FROM bxbatch.chunk "
        "WHERE run_id = $1 AND (status <> 'done' OR done_count <> 1)",
        run_id,
    )
    assert not bad, [dict(r) for r in bad[:5]]
    segments = await conn.fetch(
        """SELECT c.job, c.seq, s.part, s.lo, s.hi
           FROM bxbatch.chunk c, unnest(c.parts, c.los, c.his) AS s (part, lo, hi)
           WHERE c.run_id = $1 ORDER BY c.job, c.seq, s.part, s.lo""",
        run_id,
    )
    by_part: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
    for r in segments:
        by_part.setdefault((r["job"], r["seq"], r["part"]), []).append((r["lo"], r["hi"]))
    parts = await conn.fetch(
        "SELECT job, seq, part, lo, hi, planned_upto FROM bxbatch.pass_part WHERE run_id = $1", run_id
    )
    for p in parts:
        ranges = by_part.get((p["job"], p["seq"], p["part"]), [])
        assert p["planned_upto"] == p["hi"], dict(p)
        assert ranges, dict(p)
        assert ranges[0][0] == p["lo"] and ranges[-1][1] == p["hi"], (dict(p), ranges[:3], ranges[-3:])
        for (_, a_hi), (b_lo, _) in itertools.pairwise(ranges):
            assert a_hi == b_lo, (dict(p), a_hi, b_lo)
    passes = await conn.fetch("SELECT status FROM bxbatch.pass WHERE run_id = $1", run_id)
    assert passes and all(r["status"] == "done" for r in passes)
    return {"chunks": len({(r["job"], r["seq"], r["lo"]) for r in segments}), "parts": len(parts)}


async def present_rows_logged_once(conn: asyncpg.Connection) -> tuple[int, list[Any]]:
    """(user rows checked, problems): every present row of every user table has exactly one row_created entry."""
    tables = await conn.fetch(
        """SELECT c.relname, substring(c.relname FROM '[0-9]+$')::int AS tid FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname ~ '^database_table_[0-9]+$'
             AND EXISTS (SELECT 1 FROM database_table t WHERE t.id = substring(c.relname FROM '[0-9]+$')::int)"""
    )
    logged = {
        (r["table_id"], r["row_id"]): r["n"]
        for r in await conn.fetch(
            "SELECT table_id, row_id, count(*) AS n FROM database_activitylog "
            "WHERE action_type = 'row_created' GROUP BY table_id, row_id"
        )
    }
    problems: list[Any] = []
    checked = 0
    for t in tables:
        ids = await conn.fetch(f"SELECT id FROM {qualified('public', t['relname'])}")
        checked += len(ids)
        problems.extend(
            (t["relname"], r["id"], logged.get((t["tid"], r["id"]), 0))
            for r in ids
            if logged.get((t["tid"], r["id"]), 0) != 1
        )
    return checked, problems


async def expected_derived(conn: asyncpg.Connection) -> dict[str, Counter[tuple[Any, ...]]]:
    """What the base tables say the permission and enhanced-view rows must be, right now."""
    enhanced = await conn.fetch(
        "SELECT id, true, '[]', '[]', '[]' FROM database_view WHERE type = $1",
        MIGRATION.profile.params["grid_view_type"],
    )
    permissions = await conn.fetch(
        """SELECT wu.user_id, 'table', t.id,
                  CASE WHEN wu.permissions ->> 'create_table' = 'true' THEN 'editor' ELSE 'viewer' END,
                  t.created_by_id
           FROM database_workspaceuser wu
           JOIN database_database d ON d.workspace_id = wu.workspace_id
           JOIN database_table t ON t.database_id = d.id"""
    )
    return {
        "enhanced_views": Counter(tuple(r) for r in enhanced),
        "permissions": Counter(tuple(r) for r in permissions),
    }
