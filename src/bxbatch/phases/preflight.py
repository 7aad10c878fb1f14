"""Preflight: is this database ready for the migration? Runs before anything is changed."""

from __future__ import annotations

from typing import Any

import asyncpg

from ..context import RunContext
from ..db import server_version_num
from ..errors import PreflightFailed
from ..profile import Profile

MIN_SERVER_VERSION = 120000


async def missing_base_objects(conn: asyncpg.Connection, profile: Profile) -> list[str]:
    """Base tables/columns the migration reads that this database lacks, as 'table' or 'table.column'."""
    rows = await conn.fetch(
        "SELECT c.relname, a.attname FROM pg_class c "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
        "WHERE c.relnamespace = to_regnamespace($1) AND c.relkind IN ('r', 'p') AND c.relname = ANY($2::text[])",
        profile.schema,
        list(profile.required_columns),
    )
    present: dict[str, set[str]] = {}
    for r in rows:
        present.setdefault(r["relname"], set()).add(r["attname"])
    missing: list[str] = []
    for table, columns in profile.required_columns.items():
        if table not in present:
            missing.append(table)
            continue
        missing.extend(f"{table}.{c}" for c in columns if c not in present[table])
    return missing


async def check_essentials(conn: asyncpg.Connection, profile: Profile) -> dict[str, Any]:
    """The checks without which nothing may start: server version and base schema."""
    version = await server_version_num(conn)
    if version < MIN_SERVER_VERSION:
        raise PreflightFailed(
            f"PostgreSQL {version // 10000} is too old: bxbatch needs 12 or newer",
            hint="upgrade the server before migrating",
        )
    missing = await missing_base_objects(conn, profile)
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise PreflightFailed(
            f"this database is not a Baserow install: missing {shown}",
            hint="point --dsn at the Baserow database (or try `bxbatch demo`)",
        )
    return {"server_version_num": version}


async def run(ctx: RunContext) -> dict[str, Any]:
    return await check_essentials(ctx.conn, ctx.profile)
