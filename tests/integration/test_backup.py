"""Backup: the verified dump restores into a fresh database and matches the source; clear errors for bad pg_dump."""

from __future__ import annotations

import os
import subprocess

import pytest
from tests.safety_support import build_tiny

from bxbatch.errors import BackupFailed
from bxbatch.phases import backup
from bxbatch.settings import Settings

TABLES_SQL = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY 1
"""


async def _table_digests(conn) -> dict[str, tuple[int, str]]:
    digests = {}
    for (name,) in [tuple(r) for r in await conn.fetch(TABLES_SQL)]:
        count, digest = await conn.fetchrow(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM \"{name}\" t"
        )
        digests[name] = (count, digest)
    return digests


async def test_backup_restores_and_matches_source(pg_server, db_factory, conn_to, tmp_path):
    if pg_server.server is None:
        pytest.skip("needs a local server's pg_restore")
    source = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    conn = await conn_to(source)
    await conn.execute("INSERT INTO database_table_1 (field_1) VALUES ($1)", "quote ' and \\ and ünï")
    settings = Settings(dsn=source, pg_dump=str(pg_server.server.bindir))
    result = await backup.take_backup(conn, settings, str(tmp_path) + "/")
    assert result.path.parent == tmp_path and result.path.suffix == ".dump"
    assert result.bytes > 0 and result.toc_entries > 10
    assert not list(tmp_path.glob("*.partial"))

    target = await db_factory()
    env = dict(os.environ) | backup.libpq_env(target)
    restored = subprocess.run(  # noqa: ASYNC221  (a test: blocking the loop is harmless)
        [
            str(pg_server.server.bindir / "pg_restore"),
            "--no-owner",
            "--exit-on-error",
            f"--dbname={env['PGDATABASE']}",
            str(result.path),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert restored.returncode == 0, restored.stderr
    want = await _table_digests(conn)
    got = await _table_digests(await conn_to(target))
    assert set(got) == set(want)
    for table, digest in want.items():
        assert got[table] == digest, table


async def test_missing_and_old_pg_dump_are_clear_errors(pg_server, db_factory, conn_to, tmp_path):
    dsn = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    conn = await conn_to(dsn)
    with pytest.raises(BackupFailed, match="pg_dump not found at --pg-dump"):
        await backup.take_backup(conn, Settings(dsn=dsn, pg_dump=str(tmp_path / "nowhere")), str(tmp_path))
    old = tmp_path / "bin"
    old.mkdir()
    fake = old / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 11.22'\n")
    fake.chmod(0o755)
    with pytest.raises(BackupFailed, match=r"PostgreSQL 11, older than the server") as info:
        await backup.take_backup(conn, Settings(dsn=dsn, pg_dump=str(fake)), str(tmp_path))
    assert info.value.exit_code == 11
    assert not list(tmp_path.glob("*.dump*"))


async def test_run_records_the_backup_and_status_shows_it(pg_server, db_factory, tmp_path):
    from bxbatch.ops.run import run_migration
    from bxbatch.ops.status import collect_status, render_status

    dsn = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    settings = Settings(dsn=dsn, progress=False, backup_path=str(tmp_path))
    summary = await run_migration(settings)
    assert summary.phases["backup"]["bytes"] > 0
    text = render_status(await collect_status(settings))
    assert f"backup: verified {summary.phases['backup']['backup']}" in text
    skipped = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    await run_migration(Settings(dsn=skipped, progress=False, no_backup=True))
    assert "backup: skipped (--no-backup)" in render_status(await collect_status(Settings(dsn=skipped)))
