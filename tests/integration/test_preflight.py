"""Preflight: each check fails when its condition is made false, and a failed preflight changes nothing."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from tests.safety_support import build_tiny, bxbatch_traces

from bxbatch.errors import LockBusy, PreflightFailed
from bxbatch.ledger import runs as ledger
from bxbatch.migrations.loader import load_migration
from bxbatch.ops.run import run_migration
from bxbatch.phases import preflight
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion


@pytest.fixture
async def tiny_dsn(pg_server, db_factory) -> str:
    return await db_factory(template=await pg_server.template("tiny_install", build_tiny))


def _status(report: preflight.PreflightReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


async def _refused(dsn: str, conn: asyncpg.Connection, error: type[Exception], **settings: object) -> str:
    with pytest.raises(error) as info:
        await run_migration(Settings(dsn=dsn, **settings))  # type: ignore[arg-type]
    assert await bxbatch_traces(conn) == [], "a refused run must not change the database"
    return str(info.value)


async def test_ready_install_passes_every_check(tiny_dsn, conn_to):
    conn = await conn_to(tiny_dsn)
    report = await preflight.collect(conn, Settings(dsn=tiny_dsn))
    assert report.ok, preflight.render(report)
    assert set(_status(report)) == {
        "server_version",
        "base_schema",
        "privileges",
        "search_path",
        "catalog",
        "disk",
        "max_locks_per_transaction",
        "maintenance_work_mem",
        "lock_budget",
        "other_bxbatch_run",
        "long_transactions",
    }
    assert _status(report)["disk"] in ("pass", "warn")  # measured: the test server is local
    budget = next(c for c in report.checks if c.name == "lock_budget")
    assert budget.detail["table_group_size"] >= 1 and budget.detail["locks_per_transaction"] >= 64


async def test_forced_group_above_the_lock_budget_is_a_warning(tiny_dsn, conn_to):
    conn = await conn_to(tiny_dsn)
    report = await preflight.collect(conn, Settings(dsn=tiny_dsn, table_group_size=100_000))
    budget = next(c for c in report.checks if c.name == "lock_budget")
    assert budget.status == "warn" and "--table-group-size 100000" in budget.reason
    assert report.ok  # a warning: the operator chose it


async def test_old_server_version_is_refused(tiny_dsn, conn_to, monkeypatch):
    monkeypatch.setenv("BXBATCH_TEST_SERVER_VERSION_NUM", "110022")
    conn = await conn_to(tiny_dsn)
    message = await _refused(tiny_dsn, conn, PreflightFailed)
    assert "server_version" in message
    assert "PostgreSQL 11.22 is too old" in message


async def test_missing_base_table_is_refused(tiny_dsn, conn_to):
    conn = await conn_to(tiny_dsn)
    await conn.execute("DROP TABLE database_view")
    report = await preflight.collect(conn, Settings(dsn=tiny_dsn))
    assert _status(report)["base_schema"] == "fail"
    assert "database_view" in report.failed[0].reason
    await _refused(tiny_dsn, conn, PreflightFailed)


async def test_role_without_privileges_is_refused(pg_server, tiny_dsn, conn_to):
    role = f"weak_{uuid.uuid4().hex[:8]}"
    admin = await conn_to(tiny_dsn)
    await admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        await admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        weak_dsn = tiny_dsn.replace("postgres@", f"{role}@")
        weak = await conn_to(weak_dsn)
        report = await preflight.collect(weak, Settings(dsn=weak_dsn))
        status = _status(report)
        assert status["privileges"] == "fail"
        reason = next(c.reason for c in report.checks if c.name == "privileges")
        assert "CREATE on schema public" in reason
        assert "TRIGGER on 2 user table(s)" in str(report.checks[2].detail)
        # a role that may not read data_directory cannot measure the disk: fail unless skipped
        assert status["disk"] == "fail"
        skipped = await preflight.collect(weak, Settings(dsn=weak_dsn, skip_disk_check=True))
        assert _status(skipped)["disk"] == "warn"
        message = await _refused(weak_dsn, admin, PreflightFailed)
        assert "privileges" in message
    finally:
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")


async def test_long_transaction_is_refused(tiny_dsn, conn_to):
    conn = await conn_to(tiny_dsn)
    other = await conn_to(tiny_dsn)
    tx = other.transaction()
    await tx.start()
    await other.fetchval("SELECT txid_current()")
    await asyncio.sleep(1.2)
    try:
        report = await preflight.collect(conn, Settings(dsn=tiny_dsn, long_transaction_s=1.0))
        assert _status(report)["long_transactions"] == "fail"
        assert str(other.get_server_pid()) in report.failed[0].reason
        await _refused(tiny_dsn, conn, PreflightFailed, long_transaction_s=1.0)
    finally:
        await tx.rollback()
    report = await preflight.collect(conn, Settings(dsn=tiny_dsn, long_transaction_s=1.0))
    assert _status(report)["long_transactions"] == "pass"


async def test_lock_held_by_another_run_is_refused(tiny_dsn, conn_to):
    conn = await conn_to(tiny_dsn)
    other = await conn_to(tiny_dsn)
    await other.execute("SELECT pg_advisory_lock($1, $2)", ledger.LOCK_CLASS, ledger.LOCK_DDL)
    report = await preflight.collect(conn, Settings(dsn=tiny_dsn))
    assert _status(report)["other_bxbatch_run"] == "fail"
    assert str(other.get_server_pid()) in report.failed[0].reason
    await _refused(tiny_dsn, conn, LockBusy)


async def test_backup_directory_is_checked_before_anything_changes(tiny_dsn, conn_to, tmp_path):
    conn = await conn_to(tiny_dsn)
    settings = Settings(dsn=tiny_dsn, backup_path=str(tmp_path / "missing") + "/")
    report = await preflight.collect(conn, settings)
    assert _status(report)["backup_space"] == "fail"
    assert "does not exist" in report.failed[0].reason
    await _refused(tiny_dsn, conn, PreflightFailed, backup_path=str(tmp_path / "missing") + "/")
    ok = await preflight.collect(conn, settings.with_(backup_path=str(tmp_path)))
    assert _status(ok)["backup_space"] == "pass"
