"""The CLI as an operator meets it: help, bad input (one line, documented exit code), SIGKILL mid-schema."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import pytest

from bxbatch.errors import ExitCode
from bxbatch.migrations.loader import load_migration
from tests.e2e.clirun import run_cli, spawn_cli

MIGRATION = load_migration()  # the shipped Baserow expansion

BASE_SCHEMA = (Path(__file__).parent.parent / "base_schema.sql").read_text()


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("bxbatch: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_help_teaches_commands_env_and_exit_codes() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for word in ("run", "resume", "status", "plan", "demo", "synth", "BXBATCH_DSN", "DATABASE_URL", "75"):
        assert word in top.stdout
    sub = run_cli("run", "--help")
    for word in ("--concurrency", "BXBATCH_CONCURRENCY", "--lock-timeout-ms", "BXBATCH_DSN"):
        assert word in sub.stdout


def test_unreachable_server() -> None:
    result = run_cli("run", "--dsn", "postgresql://bob:hunter2@127.0.0.1:1/baserow", "--log-format", "json")
    assert result.returncode == ExitCode.CONNECTION
    line = _one_line_error(result.stderr)
    assert "cannot reach PostgreSQL at postgresql://bob:***@127.0.0.1:1/baserow" in line
    assert "hunter2" not in result.stderr + result.stdout


def test_malformed_dsn_is_a_usage_error_not_a_traceback() -> None:
    # bad DSN syntax is a usage error (ExitCode.USAGE's documented meaning), found before connecting
    result = run_cli("status", "--dsn", "postgresql://[broken", "--log-format", "json")
    assert result.returncode == ExitCode.USAGE
    _one_line_error(result.stderr)


async def test_wrong_password_is_never_echoed(pg_server) -> None:  # type: ignore[no-untyped-def]
    if pg_server.server is None:
        pytest.skip("needs a server whose pg_hba.conf the test may edit")
    hba = pg_server.server.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("local all pwcheck scram-sha-256\n" + original)
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        await admin.execute("DROP ROLE IF EXISTS pwcheck; CREATE ROLE pwcheck LOGIN PASSWORD 'right-one'")
        await admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.3)
        dsn = pg_server.dsn("postgres").replace("postgres@", "pwcheck:wrong-secret@", 1)
        result = await asyncio.to_thread(run_cli, "status", "--dsn", dsn, "--log-format", "json")
        assert result.returncode == ExitCode.CONNECTION
        line = _one_line_error(result.stderr)
        assert "authentication failed" in line
        assert "wrong-secret" not in result.stderr + result.stdout
    finally:
        hba.write_text(original)
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def test_database_without_base_tables_is_refused_untouched(fresh_db: str) -> None:
    result = await asyncio.to_thread(run_cli, "run", "--dsn", fresh_db, "--log-format", "json")
    assert result.returncode == ExitCode.PREFLIGHT
    line = _one_line_error(result.stderr)
    assert "not a Baserow install: missing auth_user" in line
    conn = await asyncpg.connect(fresh_db)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = 'bxbatch'") == 0
        assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace") == 0
    finally:
        await conn.close()


async def test_resume_without_a_run_says_so(db_factory) -> None:  # type: ignore[no-untyped-def]
    dsn = await db_factory()
    conn = await asyncpg.connect(dsn)
    await conn.execute(BASE_SCHEMA)
    await conn.close()
    result = await asyncio.to_thread(run_cli, "resume", "--dsn", dsn, "--log-format", "json")
    assert result.returncode == ExitCode.NOTHING_TO_RESUME
    assert "nothing to resume" in _one_line_error(result.stderr)


async def test_syntax_error_in_a_ddl_file_names_file_and_line(db_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    root = tmp_path / "mig"
    shutil.copytree(MIGRATION.root, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "ddl" / "008_typo.sql").write_text(
        "SELECT 1;\nALTER TABLE database_comment ADD COLUMN x integr;\nSELEC 2;\n"
    )
    dsn = await db_factory()
    conn = await asyncpg.connect(dsn)
    await conn.execute(BASE_SCHEMA)
    await conn.close()
    result = await asyncio.to_thread(run_cli, "run", "--dsn", dsn, "--log-format", "json", BXBATCH_MIGRATION=str(root))
    assert result.returncode == ExitCode.SQL_FILE
    assert "ddl/008_typo.sql, line 3: syntax error" in _one_line_error(result.stderr) or (
        "008_typo.sql, line 3: syntax error" in result.stderr
    )
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('bxbatch.ddl_file')") is None
        assert await conn.fetchval("SELECT to_regclass('database_comment')") is None
    finally:
        await conn.close()


async def test_sigkill_in_the_middle_of_the_schema_phase_then_run_again(db_factory) -> None:  # type: ignore[no-untyped-def]
    dsn = await db_factory()
    conn = await asyncpg.connect(dsn)
    await conn.execute(BASE_SCHEMA)
    blocker = await asyncpg.connect(dsn)
    try:
        # The FK file needs a lock on database_field: hold it so the run stops there, retrying.
        await blocker.execute("BEGIN; LOCK TABLE database_field IN ACCESS EXCLUSIVE MODE")
        proc = spawn_cli("run", "--dsn", dsn, "--lock-timeout-ms", "50", "--log-format", "json", "--no-progress")
        before_fks = len([p for p in (MIGRATION.root / "ddl").glob("*.sql") if p.name < "010"])
        applied = 0
        for _ in range(300):
            # (a CASE around the subquery would not do: the missing table fails at parse time)
            if await conn.fetchval("SELECT to_regclass('bxbatch.ddl_file') IS NOT NULL"):
                applied = await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file")
            if applied >= before_fks:
                break
            await asyncio.sleep(0.1)
        assert applied == before_fks, "the run should be waiting on 010_foreign_keys.sql"
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)  # closes the pipes (ResourceWarning is an error here)
        assert proc.returncode == -signal.SIGKILL
        await blocker.execute("ROLLBACK")
        assert await conn.fetchval("SELECT status FROM bxbatch.run") == "running"
        assert await conn.fetchval("SELECT count(*) FROM pg_constraint WHERE conname LIKE 'fk\\_%'") == 0

        result = await asyncio.to_thread(run_cli, "run", "--dsn", dsn, "--log-format", "json", "--no-progress")
        assert result.returncode == 0, result.stderr[-2000:]
        assert await conn.fetchval("SELECT count(*) FROM bxbatch.run") == 1, "the killed run is continued"
        assert await conn.fetchval("SELECT status FROM bxbatch.run") == "completed"
        files = await conn.fetchval("SELECT count(*) FROM bxbatch.ddl_file")
        assert files == len(list((MIGRATION.root / "ddl").glob("*.sql")))
        fks = await conn.fetch("SELECT convalidated FROM pg_constraint WHERE contype = 'f' AND conname LIKE 'fk\\_%'")
        assert len(fks) == 43 and all(r["convalidated"] for r in fks)
    finally:
        await blocker.close()
        await conn.close()
