"""Bad input and a hostile or broken database, through the real CLI (issue 11): one case per row of CASES.

Each case prepares a fresh copy of a tiny install (SQL, or an interrupted run first), runs `bxbatch`
as a subprocess and asserts: the exit code; exactly one error line that names the problem and says
what to do; no secret of the case anywhere in the output; and the database either unchanged
(catalog and base rows as before) or resumable: after the fix, `bxbatch resume` exits 0 with
exactly the rows an uninterrupted run writes. The list of cases is kept in docs/bad_input.md.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bxbatch.errors import ExitCode, Interrupted
from bxbatch.ledger import runs as ledger
from bxbatch.ops import run as app
from bxbatch.ops.run import run_migration
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings
from tests.backfill_support import ALL_PHASES, expected_derived, present_rows_logged_once, snapshot
from tests.e2e.clirun import BXBATCH, cli_env
from tests.safety_support import build_tiny, catalog_snapshot

Setup = Callable[[str, asyncpg.Connection, Path], Awaitable[None]]

UNCHANGED, RESUMABLE, EXACT, FINE = "unchanged", "resumable", "exact", "fine"


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # "{dsn}" is the case's database, "{tmp}" its temporary directory
    code: int
    says: str  # in the error line (the problem)
    fix: str = ""  # in the error line too (what to do); "" for cases that succeed
    sql: str = ""  # run on the database before the command
    setup: str = ""  # a named preparation (SETUPS) run before ``sql``
    # unchanged | resumable (``fix_sql``, then `resume` gives the exact result) | exact (the command itself
    # finished the migration exactly) | fine (nothing more to check)
    after: str = UNCHANGED
    fix_sql: str = ""
    resume_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret: str = ""  # must appear nowhere in stdout / stderr
    shows_not: str = ""  # must not appear in stdout (e.g. a raw ESC)
    status_says: str = ""  # `bxbatch status` afterwards shows this (e.g. the table a stopped run names)


RUN = ("run", "--dsn", "{dsn}", "--no-backup", "--no-progress", "--log-format", "json")
NO_SERVER = "/tmp/bxbatch-no-server-here"


async def _interrupted_before(dsn: str, phase: str) -> None:
    """A run interrupted just before ``phase`` (the phases before it done), as a SIGINT would leave it."""

    async def stop(ctx: RunContext) -> dict[str, Any]:
        raise Interrupted(f"stopped before {phase} (test)")

    phases: list[tuple[str, Any]] = []
    for name, fn in ALL_PHASES:
        if name == phase:
            phases.append((name, stop))
            break
        phases.append((name, fn))
    saved = app.PHASES
    app.PHASES = phases
    try:
        with pytest.raises(Interrupted):
            await run_migration(Settings(dsn=dsn, progress=False, no_backup=True))
    finally:
        app.PHASES = saved


async def _interrupted_in_backfill(dsn: str, conn: asyncpg.Connection, tmp: Path) -> None:
    await _interrupted_before(dsn, "backfill")


async def _completed(dsn: str, conn: asyncpg.Connection, tmp: Path) -> None:
    assert (await run_migration(Settings(dsn=dsn, progress=False, no_backup=True))).status == "completed"


def _exited_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([BXBATCH, *argv], stdout=out, stderr=subprocess.STDOUT, env=cli_env())


async def _dead_worker_heartbeat(dsn: str, conn: asyncpg.Connection, tmp: Path) -> None:
    """A migrated install whose ledger still shows a fresh heartbeat of a local process that has exited."""
    await _completed(dsn, conn, tmp)
    gone = _exited_pid()
    run_id = await conn.fetchval("SELECT max(id) FROM bxbatch.run")
    host = Settings().host
    await conn.execute(
        "INSERT INTO bxbatch.worker (run_id, host, pid, idx, state, heartbeat_at) "
        "VALUES ($1, $2, $3, 0, 'busy', now())",
        run_id,
        host,
        gone,
    )


async def _role_without_ledger_usage(dsn: str, conn: asyncpg.Connection, tmp: Path) -> None:
    await _completed(dsn, conn, tmp)
    await conn.execute("DROP ROLE IF EXISTS bx_nousage; CREATE ROLE bx_nousage LOGIN")
    await conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO bx_nousage")


def _fake_pg_dump(tmp: Path, body: str) -> None:
    """A pg_dump that claims a recent version and then does ``body`` (shell)."""
    tool = tmp / "fakebin" / "pg_dump"
    tool.parent.mkdir(exist_ok=True)
    tool.write_text(
        '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 99.0"; exit 0; fi\n' + body + "\n"
    )
    tool.chmod(0o755)


async def _failing_pg_dump(dsn: str, conn: asyncpg.Connection, tmp: Path) -> None:
    _fake_pg_dump(
        tmp,
        "echo 'pg_dump: error: connection to server failed: FATAL:  the real reason' >&2\n"
        "echo 'pg_dump: detail: more about it' >&2\necho 'pg_dump: hint: something generic' >&2\nexit 1",
    )


async def _bad_migration_manifest(dsn: str, conn: asyncpg.Connection, tmp: Path) -> None:
    """A migration directory whose migration.toml is not TOML."""
    (tmp / "mig" / "ddl").mkdir(parents=True)
    (tmp / "mig" / "migration.toml").write_text('name = "half\n')


SETUPS: dict[str, Setup] = {
    "bad_migration_manifest": _bad_migration_manifest,
    "interrupted_in_backfill": _interrupted_in_backfill,
    "completed": _completed,
    "dead_worker_heartbeat": _dead_worker_heartbeat,
    "role_without_ledger_usage": _role_without_ledger_usage,
    "failing_pg_dump": _failing_pg_dump,
}

SHADOW = """
CREATE SCHEMA shadow;
CREATE TABLE shadow.database_workspaceuser AS SELECT * FROM public.database_workspaceuser;
UPDATE shadow.database_workspaceuser SET permissions = '{"create_table": true}';
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path = shadow, public', current_database()); END $$;
"""

CASES: list[Case] = [
    # --- usage: refused before anything is read or changed (exit 2) -------------------------------
    Case("concurrency-zero", (*RUN, "--concurrency", "0"), 2, "concurrency", "help"),
    Case("concurrency-too-high", (*RUN, "--concurrency", "300"), 2, "concurrency", "help"),
    Case("unknown-option", (*RUN, "--concurency", "4"), 2, "--concurency", "help"),
    Case("log-format", (*RUN[:-1], "xml"), 2, "log-format", "auto, console or json"),
    Case("maintenance-work-mem", (*RUN, "--maintenance-work-mem", "12XB"), 2, "maintenance-work-mem", "256MB"),
    Case("chunk-size-order", (*RUN, "--min-chunk-rows", "500", "--initial-chunk-rows", "100"), 2, "chunk sizes", "min"),
    Case("lock-timeout-zero", (*RUN, "--lock-timeout-ms", "0"), 2, "lock-timeout", "help"),
    Case("target-chunk-too-short", (*RUN, "--target-chunk-ms", "5"), 2, "target-chunk-ms", "help"),
    Case("critical-factor-below-one", (*RUN, "--critical-factor", "0.5"), 2, "critical-factor", "help"),
    Case("negative-rate", (*RUN, "--max-rows-per-second", "-1"), 2, "max-rows-per-second", "help"),
    Case(
        "no-backup-and-backup-path",
        ("run", "--dsn", "{dsn}", "--no-backup", "--backup-path", "{tmp}", "--no-progress"),
        2,
        "--no-backup and --backup-path contradict",
        "drop one",
    ),
    Case(
        "dsn-unencoded-password",
        ("status", "--dsn", "postgresql://u:p@ss/w%rd'q:x#y?z@127.0.0.1:5432/db"),
        2,
        "invalid connection string",
        "percent-encode",
        secret="ss/w%rd'q",
    ),
    Case(
        "dsn-bad-percent-encoding",
        ("status", "--dsn", "postgresql://u:Zk9%zzsecret@localhost/db"),
        2,
        "invalid percent-encoded",
        "percent-encode",
        secret="Zk9",
    ),
    Case(
        "dsn-misspelt-keyword",
        ("status", "--dsn", "pasword=Zk9secret host=/tmp"),
        2,
        "unknown keyword",
        "quote",
        secret="Zk9secret",
    ),
    Case(
        "dsn-unterminated-quote",
        ("status", "--dsn", "password='Zk9 secret"),
        2,
        "unterminated",
        "quote",
        secret="Zk9 secret",
    ),
    Case("dsn-port-out-of-range", ("status", "--dsn", "postgresql://u@127.0.0.1:99999/db"), 2, "port 99999", "1-65535"),
    Case(
        "dsn-port-not-a-number",
        ("status", "--dsn", "postgresql://u@localhost:abc/db"),
        2,
        "port is not a number",
        "percent",
    ),
    Case("probe-sql-typo", (*RUN, "--probe-sql", "SELEC 1"), 2, "--probe-sql does not run", "nothing was changed"),
    Case("migration-dir-missing", (*RUN, "--migration", "{tmp}/nope"), 2, "does not exist", "BXBATCH_MIGRATION"),
    Case(
        "migration-manifest-not-toml",
        (*RUN, "--migration", "{tmp}/mig"),
        2,
        "migration.toml",
        "fix the TOML",
        setup="bad_migration_manifest",
    ),
    Case(
        "probe-sql-unknown-table",
        (*RUN, "--probe-sql", "SELECT * FROM nope"),
        2,
        "does not exist",
        "nothing was changed",
    ),
    Case(
        "probe-sql-writes",
        (*RUN, "--probe-sql", "INSERT INTO auth_user (username) VALUES ('probe') RETURNING id"),
        2,
        "--probe-sql writes",
        "SELECT",
    ),
    Case("set-concurrency-huge", ("set", "concurrency=3000000000", "--dsn", "{dsn}"), 2, "cannot set", "1 <= N <= 256"),
    Case("set-concurrency-above-max", ("set", "concurrency=5000", "--dsn", "{dsn}"), 2, "cannot set", "1 <= N <= 256"),
    Case("set-concurrency-zero", ("set", "concurrency=0", "--dsn", "{dsn}"), 2, "cannot set", "1 <= N <= 256"),
    Case("set-unknown-knob", ("set", "speed=fast", "--dsn", "{dsn}"), 2, "cannot set", "concurrency=N"),
    # --- connection (exit 3): nothing reached --------------------------------------------------------
    Case("no-such-database", ("status", "--dsn", "{dsn_of:nope}"), 3, "database does not exist", "create it"),
    Case(
        "no-server", ("status", "--dsn", f"postgresql:///x?host={NO_SERVER}"), 3, "cannot reach PostgreSQL", "running"
    ),
    Case(
        "kv-password-spaces-around-equals",
        ("status", "--dsn", f"host={NO_SERVER} password = S3cr3tZZ dbname=x"),
        3,
        "cannot reach",
        "running",
        secret="S3cr3tZZ",
    ),
    Case(
        "kv-quoted-password-with-space",
        ("status", "--dsn", f"host={NO_SERVER} password='S3cr3t pwz' dbname=x"),
        3,
        "cannot reach",
        "running",
        secret="pwz",
    ),
    # --- preflight (exit 4): the database is not ready; nothing changed -------------------------------
    Case(
        "not-a-baserow-install",
        RUN,
        4,
        "not a Baserow install",
        "nothing was changed",
        sql="DROP TABLE database_view CASCADE",
    ),
    Case(
        "missing-column",
        RUN,
        4,
        "database_workspaceuser.permissions",
        "nothing was changed",
        sql="ALTER TABLE database_workspaceuser DROP COLUMN permissions",
    ),
    Case("old-server", RUN, 4, "too old", "nothing was changed", env={"BXBATCH_TEST_SERVER_VERSION_NUM": "110005"}),
    Case("shadow-table-in-search-path", RUN, 4, "shadow.database_workspaceuser shadows", "take shadow out", sql=SHADOW),
    Case(
        "user-schema-shadow",
        RUN,
        4,
        "postgres.database_view shadows",
        "drop or rename",
        sql="CREATE SCHEMA postgres; CREATE TABLE postgres.database_view (id int)",
    ),
    Case(
        "duplicate-table-id",
        RUN,
        4,
        "database_table_01 and database_table_1 both name table id 1",
        "rename or drop the other",
        sql="CREATE TABLE database_table_01 (LIKE database_table_1)",
    ),
    Case(
        "user-table-without-id",
        RUN,
        4,
        "database_table_2 has no id column",
        "nothing was changed",
        sql="ALTER TABLE database_table_2 DROP COLUMN id",
    ),
    Case(
        "user-table-text-id",
        RUN,
        4,
        "database_table_2 has id of type text",
        "nothing was changed",
        sql="ALTER TABLE database_table_2 ALTER COLUMN id DROP DEFAULT, ALTER COLUMN id TYPE text",
    ),
    Case(
        "permissions-varchar",
        RUN,
        4,
        "database_workspaceuser.permissions is character varying",
        "nothing was changed",
        sql="ALTER TABLE database_workspaceuser ALTER COLUMN permissions TYPE varchar",
    ),
    Case(
        "view-type-integer",
        RUN,
        4,
        "database_view.type is integer",
        "nothing was changed",
        sql="ALTER TABLE database_view ALTER COLUMN type TYPE integer USING length(type)",
    ),
    Case("concurrency-beyond-connections", (*RUN, "--concurrency", "256"), 4, "connections", "lower --concurrency"),
    Case(
        "backup-directory-missing",
        ("run", "--dsn", "{dsn}", "--backup-path", "{tmp}/missing/", "--no-progress"),
        4,
        "does not exist",
        "nothing was changed",
    ),
    Case(  # a local file-system error: named as such, not "the server is gone, resume later" (exit 75)
        "backup-path-name-too-long",
        ("run", "--dsn", "{dsn}", "--backup-path", "{tmp}/" + "x" * 300, "--no-progress"),
        4,
        "File name too long",
        "nothing was changed",
    ),
    # --- nothing to resume (exit 10): and nothing created ---------------------------------------------
    Case("resume-without-a-run", ("resume", "--dsn", "{dsn}", "--no-progress"), 10, "nothing to resume", "bxbatch run"),
    # --- stopped for a fix (exit 13): resumable once fixed -----------------------------------------
    Case(
        "target-table-dropped-mid-run",
        ("resume", "--dsn", "{dsn}", "--no-backup", "--no-progress"),
        13,
        'relation "database_activitylog" does not exist',
        "bxbatch resume",
        setup="interrupted_in_backfill",
        sql="ALTER TABLE database_activitylog RENAME TO activitylog_away",
        after=RESUMABLE,
        fix_sql="ALTER TABLE activitylog_away RENAME TO database_activitylog",
    ),
    Case(  # one table of a multi-table chunk: bisected to that table, named; the run stops resumable
        "user-table-without-created_on",
        ("resume", "--dsn", "{dsn}", "--no-backup", "--no-progress"),
        13,
        "table database_table_2",
        "bxbatch resume",
        setup="interrupted_in_backfill",
        sql="ALTER TABLE database_table_2 DROP COLUMN created_on",
        status_says="table database_table_2",
        after=RESUMABLE,
        fix_sql="ALTER TABLE database_table_2 ADD COLUMN created_on timestamptz",
    ),
    Case(
        "role-without-usage-on-ledger",
        ("status", "--dsn", "{dsn_as:bx_nousage}"),
        13,
        "permission denied for schema bxbatch",
        "grant",
        setup="role_without_ledger_usage",
        after=FINE,
    ),
    Case(  # validate reads the new tables only: a role that may SELECT them validates without the ledger
        "validate-without-usage-on-ledger",
        ("validate", "--dsn", "{dsn_as:bx_nousage}"),
        0,
        "",
        setup="role_without_ledger_usage",
        after=FINE,
    ),
    # --- backup (exit 11): pg_dump's telling line; resumable without it ---------------------------------
    Case(
        "pg-dump-fails",
        ("run", "--dsn", "{dsn}", "--backup-path", "{tmp}", "--pg-dump", "{tmp}/fakebin", "--no-progress"),
        11,
        "the real reason",
        "nothing was changed",
        setup="failing_pg_dump",
        after=RESUMABLE,
        resume_args=("--no-backup",),
    ),
    # --- a hostile or damaged ledger: handled, exit 0 -------------------------------------------------
    Case(
        "escape-sequences-in-ledger",
        ("status", "--dsn", "{dsn}"),
        0,
        "",
        setup="interrupted_in_backfill",
        sql="UPDATE bxbatch.run SET error = E'\\x1b]0;pwned\\x07\\x1b[2J boom'",
        after=FINE,
        shows_not="\x1b",
    ),
    Case(
        "ledger-table-dropped-status",
        ("status", "--dsn", "{dsn}"),
        0,
        "",
        setup="interrupted_in_backfill",
        sql="DROP TABLE bxbatch.throttle_event",
        after=FINE,
    ),
    Case(
        "ledger-table-dropped-resume",
        ("resume", "--dsn", "{dsn}", "--no-backup", "--no-progress"),
        0,
        "",
        setup="interrupted_in_backfill",
        sql="DROP TABLE bxbatch.chunk CASCADE",
        after=EXACT,
    ),
    Case(
        "rollback-with-heartbeat-of-exited-process",
        ("rollback", "--dsn", "{dsn}", "--yes"),
        0,
        "",
        setup="dead_worker_heartbeat",
        after=FINE,
    ),
]


def _dsn_as(dsn: str, role: str) -> str:
    scheme, rest = dsn.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


def _argv(case: Case, dsn: str, tmp: Path) -> list[str]:
    out = []
    for arg in case.argv:
        if arg.startswith("{dsn_as:"):
            arg = _dsn_as(dsn, arg[len("{dsn_as:") : -1])
        if arg.startswith("{dsn_of:"):  # another database on the same server
            split = urlsplit(dsn)
            arg = urlunsplit((split.scheme, split.netloc, "/" + arg[len("{dsn_of:") : -1], split.query, ""))
        out.append(arg.replace("{dsn}", dsn).replace("{tmp}", str(tmp)))
    return out


def _cli(argv: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BXBATCH, *argv], capture_output=True, text=True, timeout=timeout, env=cli_env(**env), check=False
    )


def error_line(stderr: str) -> str:
    """The one line that says what went wrong: bxbatch's own, or the option parser's ("Error: ...")."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith(("bxbatch: error:", "Error:"))]
    assert len(lines) == 1, stderr
    return lines[0]


async def _base_rows(conn: asyncpg.Connection) -> dict[str, int]:
    tables = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1"
    )
    return {t["relname"]: await conn.fetchval(f'SELECT count(*) FROM public."{t["relname"]}"') for t in tables}


async def _state(conn: asyncpg.Connection) -> tuple[Any, Any]:
    return await catalog_snapshot(conn), await _base_rows(conn)


async def assert_exact_result(conn: asyncpg.Connection) -> None:
    await conn.execute("SET search_path = public")
    actual = await snapshot(conn)
    expected = await expected_derived(conn)
    for job in ("enhanced_views", "permissions"):
        assert actual[job] == expected[job], job
    checked, problems = await present_rows_logged_once(conn)
    assert checked == 35 and problems == [], problems[:5]
    assert await conn.fetchval("SELECT status FROM bxbatch.run ORDER BY id DESC LIMIT 1") == "completed"


@pytest.fixture
async def tiny(pg_server: Any, db_factory: Any) -> str:
    return str(await db_factory(template=await pg_server.template("tiny_install", build_tiny)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input(case: Case, tiny: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(tiny)
    try:
        if case.setup:
            await SETUPS[case.setup](tiny, conn, tmp_path)
        if case.sql:
            await conn.execute(case.sql)
        before = await _state(conn)
        result = await asyncio.to_thread(_cli, _argv(case, tiny, tmp_path), case.env)
        output = result.stdout + result.stderr
        assert result.returncode == case.code, output[-3000:]
        if case.code != 0:
            line = error_line(result.stderr)
            assert case.says in line, line
            # the option parser puts its fix ("Try 'bxbatch run --help'") on the line above its error
            assert case.fix in (line if line.startswith("bxbatch") else result.stderr), result.stderr
        else:
            assert "bxbatch: error:" not in result.stderr, result.stderr
        if case.secret:
            assert case.secret not in output
        if case.shows_not:
            assert case.shows_not not in result.stdout
        if case.status_says:
            status = await asyncio.to_thread(_cli, ["status", "--dsn", tiny], {})
            assert case.status_says in status.stdout, status.stdout
        if case.after == UNCHANGED:
            assert await _state(conn) == before, "the database changed"
        elif case.after == EXACT:
            await assert_exact_result(conn)
        elif case.after == RESUMABLE:
            if case.fix_sql:
                await conn.execute(case.fix_sql)
            resumed = await asyncio.to_thread(
                _cli,
                ["resume", "--dsn", tiny, "--no-progress", "--log-format", "json", *case.resume_args],
                {},
            )
            assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
            await assert_exact_result(conn)
    finally:
        await conn.close()


def test_the_case_list_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "bad_input.md").read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in doc]
    assert not missing, f"docs/bad_input.md lacks {missing}"
    assert len(CASES) >= 40
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert '--dsn "$DSN"' not in readme, "the README must not teach putting the password in argv (ps)"


async def test_sigterm_during_pg_dump_leaves_no_partial_file(tiny: str, tmp_path: Path) -> None:
    """SIGTERM while pg_dump writes: the run stops resumable (75) and no half-written .partial stays."""
    _fake_pg_dump(
        tmp_path, 'for a in "$@"; do case "$a" in --file=*) echo half > "${a#--file=}";; esac; done\nsleep 60'
    )
    out = tmp_path / "dumps"
    out.mkdir()
    fake = str(tmp_path / "fakebin")
    log = tmp_path / "run.log"
    proc = _spawn(
        ["run", "--dsn", tiny, "--backup-path", f"{out}/", "--pg-dump", fake, "--no-progress", "--stop-grace-s", "1"],
        log,
    )
    deadline = time.monotonic() + 60
    while not list(out.glob("*.partial")):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the backup is under way (pg_dump started, bxbatch waiting on it)
    proc.send_signal(signal.SIGTERM)
    while proc.poll() is None:
        assert time.monotonic() < deadline + 30, log.read_text()[-3000:]
        await asyncio.sleep(0.05)
    assert proc.returncode == ExitCode.RESUMABLE, log.read_text()[-3000:]
    assert list(out.iterdir()) == [], list(out.iterdir())


async def test_a_partner_holding_the_ddl_lock_is_waited_for_never_exit_7(tiny: str, tmp_path: Path) -> None:
    """Issue 11, item 8: a process joining a running run while its partner holds the DDL lock waits for
    it (then finds the files applied or applies them) instead of exit 7; the run is never marked interrupted."""
    conn = await asyncpg.connect(tiny)
    partner = await asyncpg.connect(tiny, server_settings={"application_name": "bxbatch:main"})
    try:
        await _interrupted_before(tiny, "schema")
        await conn.execute("UPDATE bxbatch.run SET status = 'running'")  # the partner's run, in progress
        await partner.execute("SELECT pg_advisory_lock($1, $2)", ledger.LOCK_CLASS, ledger.LOCK_DDL)
        log = tmp_path / "joiner.log"
        joiner = _spawn(["resume", "--dsn", tiny, "--no-backup", "--no-progress", "--log-format", "json"], log)
        deadline = time.monotonic() + 60
        while "waiting_for_ddl_lock" not in log.read_text():
            assert joiner.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        assert joiner.poll() is None, "the joiner must wait, not leave"
        assert await conn.fetchval("SELECT status FROM bxbatch.run") == "running"
        await partner.execute("SELECT pg_advisory_unlock($1, $2)", ledger.LOCK_CLASS, ledger.LOCK_DDL)
        while joiner.poll() is None:
            assert time.monotonic() < deadline + 120, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        assert joiner.returncode == 0, log.read_text()[-3000:]
        await assert_exact_result(conn)
    finally:
        await partner.close()
        await conn.close()
