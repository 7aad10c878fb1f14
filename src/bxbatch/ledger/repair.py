"""Repair: before a new run, make the ledger forget what the catalog no longer has, so the phases rebuild it.

`validate` compares the database with what the DDL files imply; when an index, a foreign key
(or its validation) or a trigger that a completed run built is gone, the ledger still records its
statement as done and the phases would skip it. ``forget_missing`` removes those records (an
index's or a VALIDATE's statement), re-adds a dropped foreign key NOT VALID (a brief lock, under
lock_timeout, retried), and leaves the rest to the ordinary phases: the index phase builds what is
not recorded, the constraint phase validates, the trigger phase installs every missing trigger from
the catalog, and a new run's backfill restores missing rows.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from bxbatch.db.render import set_local_timeouts
from bxbatch.db.retry import RetryPolicy, retry
from bxbatch.db.session import qualified
from bxbatch.db.sqlfiles import SqlFile
from bxbatch.ledger import ddl
from bxbatch.migrations.expected import AT_VALIDATE_CONSTRAINT, enum_name
from bxbatch.migrations.loader import load_migration
from bxbatch.settings import Settings


def _validate_statement(files: list[SqlFile], constraint: str) -> tuple[SqlFile, int] | None:
    """The file and index of the VALIDATE CONSTRAINT statement of ``constraint`` (from the parse trees)."""
    for f in files:
        for idx, stmt in enumerate(f.statements):
            if stmt.kind != "AlterTableStmt":
                continue
            for cmd in stmt.node.cmds or ():
                if enum_name(cmd.subtype) == AT_VALIDATE_CONSTRAINT and str(cmd.name) == constraint:
                    return f, idx
    return None


async def forget_missing(conn: asyncpg.Connection, settings: Settings, log: Any) -> dict[str, list[str]]:
    """Make the next phases rebuild the indexes and foreign keys a completed run made but the catalog lacks."""
    if not await conn.fetchval("SELECT to_regclass('bxbatch.ddl_statement') IS NOT NULL"):
        return {}
    migration = load_migration(settings.migration)
    exp = migration.expected
    files = migration.ddl_files()
    by_name = {f.name: f for f in files}
    schema = migration.schema
    repaired: dict[str, list[str]] = {"indexes": [], "foreign_keys": [], "validations": []}

    states = await ddl.index_states(conn, schema, list(exp.indexes))
    for index in exp.indexes.values():
        if states.get(index.name):
            continue
        f = by_name.get(index.file)
        if f is None:
            continue
        idx = next((i for i, s in enumerate(f.statements) if s.sql == index.sql), None)
        if idx is None or not await ddl.statement_done(conn, f.name, idx):
            continue  # never built: the ordinary phases will
        await ddl.forget_statement(conn, f.name, idx)
        repaired["indexes"].append(index.name)

    fks = exp.foreign_keys
    rows = await ddl.constraint_states(conn, schema, [c.name for c in fks])
    present = {r["conname"]: r["convalidated"] for r in rows}
    for fk in fks:
        if fk.name in present and (present[fk.name] or fk.name not in exp.validated_later):
            continue
        if fk.name not in present:
            source = by_name.get(fk.file)
            if source is None or not fk.sql:
                continue
            if not await ddl.statement_done(conn, source.name, -1):
                continue  # its file was never applied: the schema phase adds it
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", qualified(schema, fk.table)):
                continue

            async def add(sql: str = fk.sql) -> None:
                async with conn.transaction():
                    await set_local_timeouts(conn, lock=settings.lock_timeout_ms)
                    await conn.execute(sql)

            await retry(add, RetryPolicy().for_settings(settings))  # lock waits, lost moments
            repaired["foreign_keys"].append(fk.name)
        found = _validate_statement(files, fk.name)
        if found is not None and await ddl.statement_done(conn, found[0].name, found[1]):
            await ddl.forget_statement(conn, found[0].name, found[1])
            repaired["validations"].append(fk.name)
    repaired = {k: v for k, v in repaired.items() if v}
    if repaired:
        log.warning("repair_planned", hint="rebuilt by this run's phases", **repaired)
    return repaired
