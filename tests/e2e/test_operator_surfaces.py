"""The operator's surfaces through the installed console script: a real terminal (pexpect) and `--json`.

Headline state in each situation, `status --check` exit codes, the JSON schema, one owner per
run, every `bxbatch set` knob within a second, hold-before / release, a quiet console whose log
lines never land in a progress bar, the rollback confirmation, and the repair path.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import pexpect
import pytest

from bxbatch.errors import ExitCode
from bxbatch.migrations.loader import load_migration
from tests.backfill_support import synth_template
from tests.e2e.clirun import BXBATCH, cli_env, run_cli, spawn_cli

MIGRATION = load_migration()  # the shipped Baserow expansion

SCHEMA = json.loads((resources.files("bxbatch") / "status.schema.json").read_text())
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
BAR = re.compile(r"\d+%\|")  # a tqdm bar: "42%|████"

# a backfill slow enough to watch (~45 s at scale 0.02): 2 workers, small chunks, 500 rows/s per process
RATE = 500
SLOW = (
    "--no-progress",
    "--log-format",
    "json",
    "--concurrency",
    "2",
    "--target-chunk-ms",
    "20",
    "--initial-chunk-rows",
    "100",
    "--min-chunk-rows",
    "20",
    "--max-rows-per-second",
    str(RATE),
)


def status(dsn: str) -> dict[str, Any]:
    result = run_cli("status", "--dsn", dsn, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)  # every report of every situation: the documented schema
    return report


def check_code(dsn: str) -> int:
    return run_cli("status", "--dsn", dsn, "--check").returncode


def headline(dsn: str) -> str:
    """The first line `bxbatch status` prints in a real terminal (after the target line on stderr)."""
    child = spawn_tty("status", "--dsn", dsn)
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == 0, child.before
    lines = ANSI.sub("", str(child.before)).replace("\r\n", "\n").splitlines()
    assert lines[0].startswith("bxbatch status: database ")
    return lines[1]


async def wait_for(predicate: Any, timeout: float = 60.0, every: float = 0.1) -> float:
    """Poll ``predicate()`` (sync or async) until true; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, "timed out"
        await asyncio.sleep(every)


async def chunks_done(conn: asyncpg.Connection) -> int:
    if not await conn.fetchval("SELECT to_regclass('bxbatch.chunk') IS NOT NULL"):
        return 0
    return int(await conn.fetchval("SELECT count(*) FROM bxbatch.chunk WHERE status = 'done'"))


async def workers_beat_at_work(conn: asyncpg.Connection, pid: int) -> bool:
    """A heartbeat of ``pid`` written since its workers started (the first one, before any chunk, says idle)."""
    if not await conn.fetchval("SELECT to_regclass('bxbatch.worker') IS NOT NULL"):
        return False
    return bool(await conn.fetchval("SELECT count(*) FROM bxbatch.worker WHERE pid = $1 AND state <> 'idle'", pid))


async def throttle_row(conn: asyncpg.Connection, pid: int) -> asyncpg.Record | None:
    if not await conn.fetchval("SELECT to_regclass('bxbatch.throttle_state') IS NOT NULL"):
        return None
    return await conn.fetchrow("SELECT * FROM bxbatch.throttle_state WHERE pid = $1", pid)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


# --- headline states, --check, live knobs, hold-before -------------------------------------------
async def test_status_headline_check_codes_and_every_knob_within_a_second(pg_server: Any, db_factory: Any) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 14))
    fresh = status(dsn)
    assert fresh["state"] == "NO_RUN" and check_code(dsn) == ExitCode.STATUS_NO_RUN
    assert fresh["ddl"]["pending"] == fresh["ddl"]["pending"][:] and isinstance(fresh["ddl"]["pending"], list)
    conn = await asyncpg.connect(dsn)
    proc = spawn_cli("run", "--dsn", dsn, *SLOW, "--max-rows-per-second", "150")  # ~2 min: time for every step
    try:
        await wait_for(lambda: chunks_done(conn), timeout=90)
        await wait_for(lambda: throttle_row(conn, proc.pid))
        # the heartbeat after the workers' start (every 0.5 s): the first chunk can commit before it
        await wait_for(lambda: workers_beat_at_work(conn, proc.pid), timeout=10)
        # a rate limit holds the run back: THROTTLED, never "full speed"
        report = status(dsn)
        assert report["state"] == "THROTTLED", report["reason"]
        assert report["throttle"]["state"] == "rate_limited" and "150 rows/s" in report["reason"]
        assert headline(dsn).startswith("THROTTLED: run #1")
        assert check_code(dsn) == ExitCode.STATUS_IN_PROGRESS
        assert report["run"]["owner"]["pid"] == proc.pid and report["run"]["owner"]["alive"]
        assert {w["state"] for w in report["backfill"]["workers"]} != {"idle"}
        phases = {p["name"]: p for p in report["phases"]}
        assert isinstance(phases["preflight"]["detail"], dict) and phases["backup"]["status"] == "skipped"

        # every knob takes effect within a second
        async def knob(assignment: str, check: Any) -> float:
            result = run_cli("set", "--dsn", dsn, assignment)
            assert result.returncode == 0, result.stderr
            return await wait_for(check, timeout=5, every=0.05)

        took = {
            "max_rows_per_second": await knob(
                "max_rows_per_second=120",
                lambda: _row_is(conn, proc.pid, rate_limit=120.0),
            ),
            "concurrency": await knob("concurrency=1", lambda: _row_is(conn, proc.pid, max_concurrency=1)),
            "throttle": await knob("throttle=off", lambda: _row_is(conn, proc.pid, throttle_on=False)),
        }
        for assignment in (
            "target_chunk_ms=15",
            "min_chunk_rows=10",
            "max_chunk_rows=60",
            "max_blocked_sessions=3",
            "max_replication_lag_bytes=1048576",
            "max_replication_lag_s=5",
            "max_wal_bytes_per_second=1000000000",
            "max_xmin_age_s=600",
            "max_active_backends=50",
            "critical_factor=3",
            "probe_max_ratio=4",
        ):
            key = assignment.split("=")[0]
            took[key] = await knob(assignment, lambda a=assignment: _decision_mentions(conn, proc.pid, a))
        assert max(took.values()) < 1.0, took
        # the chunk ceiling really applies to the chunks planned from now on
        since = await conn.fetchval("SELECT max(id) FROM bxbatch.chunk")
        await wait_for(lambda: _chunks_after(conn, since), timeout=20)
        assert await conn.fetchval("SELECT max(planned_rows) FROM bxbatch.chunk WHERE id > $1", since) <= 60
        # concurrency=1: one live worker, the other says why it waits
        report = status(dsn)
        working = [w for w in report["backfill"]["workers"] if not w["state"].startswith("held")]
        assert len(working) <= 1 and report["control"]["knobs"]["concurrency"] == 1

        # refused, never clamped: exit 2 naming the limit
        for bad, words in (
            ("concurrency=99", "more than the 2 workers"),
            ("max_rows_per_second=-1", "below its minimum"),
            ("throttle=maybe", "not a valid bool"),
            ("chunk_size=5", "cannot set"),
            ("min_chunk_rows=100", "above max_chunk_rows"),
        ):
            result = run_cli("set", "--dsn", dsn, bad)
            assert result.returncode == ExitCode.USAGE and words in result.stderr, (bad, result.stderr)
        assert await _row_is(conn, proc.pid, max_concurrency=1)

        # paused by an operator: PAUSED (by whom), no ETA, check says attention
        assert run_cli("pause", "--dsn", dsn).returncode == 0
        await wait_for(lambda: status(dsn)["state"] == "PAUSED", timeout=5)
        report = status(dsn)
        assert f"paused by {socket.gethostname()}:" in report["reason"] and report["backfill"]["eta_s"] is None
        assert check_code(dsn) == ExitCode.STATUS_ATTENTION
        assert headline(dsn).startswith("PAUSED: run #1")

        # hold before the index phase, then let the backfill finish at full speed
        assert run_cli("hold-before", "--dsn", dsn, "indexes").returncode == 0
        assert run_cli("hold-before", "--dsn", dsn, "nonsense").returncode == ExitCode.USAGE
        fast = run_cli("set", "--dsn", dsn, "max_rows_per_second=0", "concurrency=2", "max_chunk_rows=100000")
        assert fast.returncode == 0, fast.stderr
        assert run_cli("continue", "--dsn", dsn).returncode == 0
        await wait_for(lambda: status(dsn)["state"] == "HELD", timeout=120, every=0.5)
        report = status(dsn)
        assert "held before phase indexes" in report["reason"] and report["next_step"] == "bxbatch release"
        assert check_code(dsn) == ExitCode.STATUS_ATTENTION
        assert {p["name"]: p["status"] for p in report["phases"]}["indexes"] == "pending"
        # hold again before validate (the indexes go ahead), slip in a row no backfill would write
        assert run_cli("hold-before", "--dsn", dsn, "validate").returncode == 0
        await wait_for(lambda: "phase validate" in (status(dsn)["reason"] or ""), timeout=120, every=0.5)
        await conn.execute(
            "INSERT INTO database_permission (user_id, resource_type, resource_id, permission_level) "
            "SELECT id, 'table', -1, 'editor' FROM auth_user ORDER BY id LIMIT 1"
        )
        assert run_cli("release", "--dsn", dsn).returncode == 0
        code, err = await asyncio.to_thread(finish, proc, 180)
        assert code == ExitCode.VALIDATION, err[-3000:]
        # a failed validation: FAILED (why, what to run), its phase failed, not "interrupted, validate running"
        report = status(dsn)
        assert report["state"] == "FAILED" and "validation failed" in report["reason"]
        assert "bxbatch run" in report["next_step"] and check_code(dsn) == ExitCode.STATUS_ATTENTION
        assert {p["name"]: p["status"] for p in report["phases"]}["validate"] == "failed"
        assert headline(dsn).startswith("FAILED: run #1")
        repaired = await asyncio.to_thread(run_cli, "run", "--dsn", dsn, "--no-progress", timeout=300)
        assert repaired.returncode == 0, repaired.stderr[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaped and its pipes closed: a failure here must not leak into the next test
        await conn.close()
    report = status(dsn)
    assert report["state"] == "COMPLETED" and check_code(dsn) == ExitCode.OK
    assert report["backfill"]["workers"] == [] and report["backfill"]["eta_s"] is None
    assert report["run"]["id"] == 2  # the repairing run
    measured = next(p for p in report["phases"] if p["name"] == "backfill")["detail"]["jobs"]
    for job in report["backfill"]["jobs"]:  # the rate status shows is the one the run measured
        assert job["rows_per_s"] == pytest.approx(measured[job["job"]]["rows_per_s"])
        assert job["rows_per_s"] < 1_000_000


async def _row_is(conn: asyncpg.Connection, pid: int, **want: Any) -> bool:
    row = await throttle_row(conn, pid)
    return row is not None and all(row[k] == v for k, v in want.items())


async def _decision_mentions(conn: asyncpg.Connection, pid: int, assignment: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM bxbatch.throttle_event WHERE pid = $1 AND action = 'knobs' "
            "AND reason LIKE '%' || $2 || '%')",
            pid,
            assignment.split("=")[0] + "=",
        )
    )


async def _chunks_after(conn: asyncpg.Connection, chunk_id: int) -> bool:
    return bool(await conn.fetchval("SELECT count(*) >= 3 FROM bxbatch.chunk WHERE id > $1", chunk_id))


# --- one owner per run ---------------------------------------------------------------------------
async def test_a_second_run_is_refused_and_a_joiner_takes_the_runs_settings(pg_server: Any, db_factory: Any) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 15))
    conn = await asyncpg.connect(dsn)
    owner = spawn_cli("run", "--dsn", dsn, *SLOW)
    joiner: subprocess.Popen[str] | None = None
    try:
        await wait_for(lambda: chunks_done(conn), timeout=90)
        second = await asyncio.to_thread(run_cli, "run", "--dsn", dsn, "--no-progress")
        assert second.returncode == ExitCode.BUSY, second.stderr
        error = [line for line in second.stderr.splitlines() if line.startswith("bxbatch: error:")]
        assert len(error) == 1
        assert f"run #1 is owned by {socket.gethostname()} pid {owner.pid} (since " in error[0]
        assert "--join" in error[0]
        assert await conn.fetchval("SELECT pid FROM bxbatch.run WHERE id = 1") == owner.pid
        # the joiner asks for 4 workers and no rate limit; it gets the run's 2 and its rate limit
        joiner = spawn_cli("run", "--join", "--dsn", dsn, "--no-progress", "--log-format", "json", "--concurrency", "4")
        await wait_for(lambda: throttle_row(conn, joiner.pid), timeout=60)
        row = await throttle_row(conn, joiner.pid)
        assert row is not None and row["rate_limit"] == RATE and row["max_concurrency"] == 2
        assert await conn.fetchval("SELECT pid FROM bxbatch.run WHERE id = 1") == owner.pid
        assert run_cli("cancel", "--dsn", dsn).returncode == 0
        for proc in (owner, joiner):
            code, err = await asyncio.to_thread(finish, proc)
            assert code in (ExitCode.RESUMABLE, ExitCode.OK), err[-2000:]
    finally:
        for proc in (owner, joiner):
            if proc is not None and proc.poll() is None:
                proc.kill()
        await conn.close()
    # nothing to join once no run is going on
    alone = await asyncio.to_thread(run_cli, "run", "--join", "--dsn", dsn, "--no-progress")
    assert alone.returncode == ExitCode.NOTHING_TO_RESUME, alone.stderr


# --- stalled, interrupted, failed ----------------------------------------------------------------
async def test_stalled_interrupted_and_failed_are_told_apart(pg_server: Any, db_factory: Any, tmp_path: Path) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 16))
    conn = await asyncpg.connect(dsn)
    try:
        proc = spawn_cli("run", "--dsn", dsn, *SLOW)
        await wait_for(lambda: chunks_done(conn), timeout=90)
        proc.kill()  # SIGKILL: no chance to record anything
        await asyncio.to_thread(proc.communicate)
        await wait_for(lambda: status(dsn)["state"] == "STALLED", timeout=30, every=0.5)
        report = status(dsn)
        assert f"pid {proc.pid} shows no sign of life" in report["reason"]
        assert report["backfill"]["workers"] == [] and report["backfill"]["eta_s"] is None
        assert check_code(dsn) == ExitCode.STATUS_ATTENTION

        proc = spawn_cli("resume", "--dsn", dsn, *SLOW)
        first = await chunks_done(conn)
        await wait_for(lambda: _more_chunks(conn, first), timeout=60)
        proc.send_signal(signal.SIGINT)
        code, err = await asyncio.to_thread(finish, proc)
        assert code == ExitCode.RESUMABLE, err[-2000:]
        report = status(dsn)
        assert report["state"] == "INTERRUPTED" and report["next_step"] == "bxbatch resume"
        assert "running" not in {p["status"] for p in report["phases"]}
        assert {p["name"]: p["status"] for p in report["phases"]}["backfill"] == "interrupted"
        assert report["backfill"]["workers"] == [] and report["backfill"]["eta_s"] is None
        assert all(j["eta_s"] is None for j in report["backfill"]["jobs"])
        assert headline(dsn).startswith("INTERRUPTED: run #1")
        # resumed to the end: its summary divides this attempt's rows by this attempt's time
        done = await asyncio.to_thread(
            run_cli, "resume", "--dsn", dsn, "--no-progress", "--max-rows-per-second", "0", timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        jobs = [line for line in done.stdout.splitlines() if line.startswith("    ")]
        assert len(jobs) == 3 and "this attempt" in done.stdout, done.stdout
        assert not any(re.search(r"\dM rows/s|\dG rows/s", line) for line in jobs), done.stdout
    finally:
        await conn.close()

    # a statement that fails: FAILED, with the reason and what to run
    import shutil

    root = tmp_path / "mig"
    shutil.copytree(MIGRATION.root, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "ddl" / "008_fails.sql").write_text("-- bxbatch: phase=schema\nSELECT 1 / 0;\n")
    other = await db_factory(template=await synth_template(pg_server, 0.02, 16))
    result = await asyncio.to_thread(run_cli, "run", "--dsn", other, "--no-progress", BXBATCH_MIGRATION=str(root))
    assert result.returncode == ExitCode.SQL_FILE, result.stderr
    report = json.loads(run_cli("status", "--dsn", other, "--json", BXBATCH_MIGRATION=str(root)).stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["state"] == "FAILED" and "008_fails.sql" in report["reason"]
    assert {p["name"]: p["status"] for p in report["phases"]}["schema"] == "failed"
    assert run_cli("status", "--dsn", other, "--check", BXBATCH_MIGRATION=str(root)).returncode == 21


async def _more_chunks(conn: asyncpg.Connection, than: int) -> bool:
    return await chunks_done(conn) > than + 2


# --- a quiet console in a real terminal ----------------------------------------------------------
def spawn_tty(*args: str, cols: int = 160, **env: str) -> pexpect.spawn:
    return pexpect.spawn(
        BXBATCH, list(args), env=cli_env(TERM="xterm-256color", **env), dimensions=(50, cols), encoding="utf-8"
    )


def screen_lines(raw: str) -> list[str]:
    """What stays on the screen, line by line: carriage returns overwrite, colour codes dropped."""
    lines = []
    for line in ANSI.sub("", raw).replace("\r\n", "\n").split("\n"):
        screen: list[str] = []
        for segment in line.split("\r"):
            screen[: len(segment)] = list(segment)
        lines.append("".join(screen).rstrip())
    return lines


def test_demo_on_a_terminal_is_quiet_and_no_log_line_lands_in_a_bar() -> None:
    child = spawn_tty("demo", "--scale", "0.1")
    child.expect(pexpect.EOF, timeout=600)
    raw = str(child.before)
    child.close()
    assert child.exitstatus == 0, raw[-3000:]
    lines = [line for line in screen_lines(raw) if line.strip()]
    # at most ~30 lines: 28 and the phases' heartbeat lines (one per --status-interval, 15 s, of a long
    # phase: none to two on a quiet machine, more when the machine is loaded and the demo slower)
    heartbeats = [line for line in lines if re.match(r"\S+ info +progress ", line)]
    assert len(lines) - len(heartbeats) <= 28 and len(heartbeats) <= 6, "\n".join(lines)
    for line in lines:
        # a log line starts its own line, and no bar is left on a line with anything else
        assert not (STAMP.search(line) and not STAMP.match(line)), line
        assert not BAR.search(line), line
        assert "{'" not in line and len(line) <= 240, line  # no dict reprs, no 200+ character walls
    text = "\n".join(lines)
    assert "\x1b[32m" in raw  # colours on a terminal
    assert re.search(r"run #1 completed in \d", text)
    for phase in ("preflight", "backup", "schema", "triggers", "backfill", "indexes", "constraints", "validate"):
        assert re.search(rf"^  {phase} +\S", text, re.MULTILINE), phase
    for job in ("enhanced_views", "permissions", "activity_seed"):
        assert re.search(rf"^    {job} +[\d,]+ rows", text, re.MULTILINE), job
    assert "verified" in text and "MiB" in text and "validation: passed" in text
    assert "demo_server_started bxbatch demo: database baserow on" in text  # the target, first


async def test_no_color_and_failures_at_error_level(pg_server: Any, db_factory: Any) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 17))  # not migrated: validation fails
    outputs = {}
    for name, env in (("colour", {}), ("plain", {"NO_COLOR": "1"})):
        child = spawn_tty("validate", "--dsn", dsn, **env)
        child.expect(pexpect.EOF, timeout=120)
        outputs[name] = str(child.before)
        child.close()
        assert child.exitstatus == ExitCode.VALIDATION
    assert "\x1b[31;1merror" in outputs["colour"]  # the failure summary, in red, at error level
    assert re.search(r"validate: +\d+%\|", outputs["colour"])  # validate shows its progress
    assert "\x1b[" not in outputs["plain"]
    assert re.search(r"Z error +validation_finished", outputs["plain"])


# --- the first line names the target; help; choices ----------------------------------------------
def test_first_line_names_the_target_help_is_grouped_and_choices_are_checked() -> None:
    result = run_cli("status", "--dsn", "postgresql://alice:s3cret@127.0.0.1:1/appdb")
    assert result.returncode == ExitCode.CONNECTION
    assert result.stderr.splitlines()[0] == "bxbatch status: database appdb on 127.0.0.1:1 as alice"
    assert "s3cret" not in result.stderr + result.stdout
    nodsn = run_cli("status", PGHOST="127.0.0.1", PGPORT="1", PGUSER="bob", PGDATABASE="x")
    assert "127.0.0.1:1" in nodsn.stderr and "(none)" not in nodsn.stderr
    assert run_cli("--version").stdout.startswith("bxbatch ")
    assert run_cli("demo", "--pg", "foo").returncode == ExitCode.USAGE
    assert run_cli("status", "--log-format", "xml").returncode == ExitCode.USAGE
    env = {"COLUMNS": "80"}
    top = run_cli("--help", **env).stdout.split("Commands:")[1]
    order = [top.index(f"  {c} ") for c in ("demo", "preflight", "plan", "run", "status", "resume", "rollback")]
    assert order == sorted(order)
    helptext = run_cli("run", "--help", **env).stdout
    for panel in ("Connection:", "Output:", "Chunking:", "Live safety:", "Backup and preflight:"):
        assert f"\n{panel}\n" in helptext, panel
    assert "[auto|console|json]" in helptext and "64.0 MiB" in helptext and "67108864" not in helptext
    assert "BXBATCH_ROLLBACK_YES" not in run_cli("rollback", "--help").stdout


# --- repair, then a rollback confirmed on a terminal ---------------------------------------------
async def test_run_repairs_what_validate_finds_missing_then_rollback_asks_for_the_name(
    pg_server: Any, db_factory: Any, tmp_path: Path
) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 18))
    first = await asyncio.to_thread(run_cli, "run", "--dsn", dsn, "--no-progress", timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            DROP INDEX idx_comment_user;
            ALTER TABLE database_comment DROP CONSTRAINT fk_comment_user;
            DELETE FROM database_permission WHERE ctid IN (SELECT ctid FROM database_permission LIMIT 3);
            """
        )
        trigger = await conn.fetchrow(
            "SELECT tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT tgisinternal AND c.relname LIKE 'database_table_%' LIMIT 1"
        )
        await conn.execute(f'DROP TRIGGER "{trigger["tgname"]}" ON "{trigger["relname"]}"')
        broken = run_cli("validate", "--dsn", dsn)
        assert broken.returncode == ExitCode.VALIDATION
        for words in ("idx_comment_user", "fk_comment_user", "3 expected row(s) missing", trigger["relname"]):
            assert words in broken.stdout, words
        repair = await asyncio.to_thread(run_cli, "run", "--dsn", dsn, "--no-progress", timeout=300)
        assert repair.returncode == 0, repair.stderr[-3000:]
        assert run_cli("validate", "--dsn", dsn).returncode == 0
        activity = await conn.fetchval("SELECT count(*) FROM database_activitylog")
    finally:
        await conn.close()

    database = dsn.rsplit("/", 1)[1].split("?")[0]
    # the backup shows its progress on a terminal (the archive's size as pg_dump writes it)
    child = spawn_tty("backup", "--dsn", dsn, "--backup-path", str(tmp_path))
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert child.exitstatus == 0 and "pg_dump: " in str(child.before), str(child.before)[-2000:]
    # no environment variable can say yes, and a script without --yes is refused
    refused = run_cli("rollback", "--dsn", dsn, BXBATCH_ROLLBACK_YES="1")
    assert refused.returncode == ExitCode.ROLLBACK_REFUSED
    # on a terminal: the summary by kind with row counts, then the database name, or nothing happens
    child = spawn_tty("rollback", "--dsn", dsn)
    child.expect("type the database name", timeout=60)
    shown = ANSI.sub("", str(child.before))
    assert f"rollback of database {database} would drop:" in shown
    assert re.search(r"\d+ tables", shown) and re.search(r"\d+ indexes", shown)
    assert re.search(rf"database_activitylog +{activity:,} rows", shown), shown
    child.sendline("not-the-name")
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == ExitCode.ROLLBACK_REFUSED
    assert run_cli("validate", "--dsn", dsn).returncode == 0  # untouched
    child = spawn_tty("rollback", "--dsn", dsn)
    child.expect("type the database name", timeout=60)
    child.sendline(database)
    child.expect(pexpect.EOF, timeout=120)
    child.close()
    assert child.exitstatus == 0
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('database_activitylog')") is None
    finally:
        await conn.close()


def test_status_schema_file_is_valid_and_ships() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert os.path.exists(str(resources.files("bxbatch") / "status.schema.json"))
