"""The safety-net commands as an operator runs them: exit codes, one-line errors, --json, --help with env vars."""

from __future__ import annotations

import asyncio
import json

import pytest

from bxbatch.errors import ExitCode
from tests.e2e.clirun import run_cli
from tests.safety_support import build_migrated_install, build_tiny, bxbatch_traces


async def cli(*args: str, **env: str):
    return await asyncio.to_thread(run_cli, *args, "--log-format", "json", **env)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("bxbatch: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_every_safety_command_documents_its_options_and_env_vars() -> None:
    expected = {
        "preflight": ("--skip-disk-check", "BXBATCH_SKIP_DISK_CHECK", "BXBATCH_LONG_TRANSACTION_S", "BXBATCH_DSN"),
        "backup": ("--backup-path", "BXBATCH_BACKUP_PATH", "BXBATCH_PG_DUMP"),
        "plan": ("--sample", "BXBATCH_PLAN_SAMPLE", "--sql", "--json", "BXBATCH_CONCURRENCY"),
        "validate": ("--json", "BXBATCH_DSN"),
        "rollback": ("--yes", "--force", "--plan", "database name"),
        "run": ("--backup-path", "--no-backup", "BXBATCH_NO_BACKUP", "--pg-dump", "--skip-disk-check"),
    }
    for command, words in expected.items():
        out = run_cli(command, "--help").stdout
        for word in words:
            assert word in out, (command, word)


@pytest.fixture
async def tiny(pg_server, db_factory) -> str:
    return await db_factory(template=await pg_server.template("tiny_install", build_tiny))


async def test_preflight_and_run_refuse_an_old_server(tiny, conn_to):
    ok = await cli("preflight", "--dsn", tiny, "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True
    old = await cli("preflight", "--dsn", tiny, BXBATCH_TEST_SERVER_VERSION_NUM="110005")
    assert old.returncode == ExitCode.PREFLIGHT
    assert "server_version             FAIL  PostgreSQL 11.5 is too old" in old.stdout
    assert "preflight failed: server_version" in _error_line(old.stderr)
    run = await cli("run", "--dsn", tiny, "--no-backup", "--no-progress", BXBATCH_TEST_SERVER_VERSION_NUM="110005")
    assert run.returncode == ExitCode.PREFLIGHT
    assert await bxbatch_traces(await conn_to(tiny)) == []


async def test_plan_and_backup_commands(tiny, tmp_path):
    plan = await cli("plan", "--dsn", tiny, "--json")
    assert plan.returncode == 0, plan.stderr
    body = json.loads(plan.stdout)
    assert {b["job"] for b in body["backfills"]} == {"enhanced_views", "permissions", "activity_seed"}
    assert body["triggers"]["pending"] == 2
    backup = await cli("backup", "--dsn", tiny, "--backup-path", str(tmp_path), "--json")
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["toc_entries"] > 10
    missing = await cli("backup", "--dsn", tiny, "--backup-path", str(tmp_path / "no" / "x.dump"))
    assert missing.returncode == ExitCode.BACKUP
    assert "does not exist" in _error_line(missing.stderr)


async def test_validate_and_rollback_commands(pg_server, db_factory, conn_to):
    dsn = await db_factory(template=await pg_server.template("migrated_small", build_migrated_install))
    good = await cli("validate", "--dsn", dsn, "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["ok"] is True
    conn = await conn_to(dsn)
    await conn.execute(
        "DELETE FROM database_tableview_enhanced WHERE view_ptr_id = (SELECT min(view_ptr_id) "
        "FROM database_tableview_enhanced)"
    )
    bad = await cli("validate", "--dsn", dsn, "--json")
    assert bad.returncode == ExitCode.VALIDATION
    problems = json.loads(bad.stdout)["problems"]
    assert [p["object"] for p in problems] == ["database_tableview_enhanced"]
    assert "validation failed: backfill:enhanced_views" in _error_line(bad.stderr)

    refused = await cli("rollback", "--dsn", dsn)
    assert refused.returncode == ExitCode.ROLLBACK_REFUSED
    assert "pass --yes" in _error_line(refused.stderr)
    listing = await cli("rollback", "--dsn", dsn, "--plan", "--json")
    steps = [s["step"] for s in json.loads(listing.stdout)["steps"]]
    assert steps[-1] == "schema:bxbatch" and any(s.startswith("trigger:") for s in steps)
    done = await cli("rollback", "--dsn", dsn, "--yes", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"rolled back: {len(steps)} steps" in done.stdout
    again = await cli("rollback", "--dsn", dsn, "--yes")
    assert again.returncode == 0 and "nothing to roll back" in again.stdout
