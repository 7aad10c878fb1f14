"""The ``bxbatch`` schema in the target database: creating it, and the run/phase/DDL records in it.

All state a resume needs lives here, never on the local disk, so any host can resume a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import asyncpg

from bxbatch import __version__
from bxbatch.db.render import set_local_timeouts
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import LockBusy, NothingToResume, UsageError
from bxbatch.migrations.loader import load_migration
from bxbatch.observe.log import iso
from bxbatch.settings import Settings

# Advisory lock keys: (classid, objid) pairs in the two-int form, so pg_locks shows them plainly.
LOCK_CLASS = 0x62786200  # "bxb\0"
LOCK_LEDGER_SETUP = 1
LOCK_DDL = 2
# The owner of a run holds (OWNER_LOCK_CLASS, run id) for its whole life, on its main connection: a
# second `run` is refused while it lives, and `status` tells a live run from a stalled one. A class of
# its own, so preflight's "another bxbatch holds the run lock" check does not refuse a joiner.
OWNER_LOCK_CLASS = LOCK_CLASS + 2
# Settings a joining process keeps its own (where it runs and how it prints); every other one it
# takes from the ledger, so a fleet of processes behaves as one run.
LOCAL_SETTINGS = frozenset(
    {
        "dsn",
        "log_format",
        "progress",
        "debug",
        "host",
        "backup_path",
        "no_backup",
        "pg_dump",
        "status_interval_s",
        "metrics_port",
        "metrics_addr",
        "report_path",
        "migration",  # where the migration directory is on this host (its name must match: checked)
    }
)

Q = queries("ledger")
LEDGER_LOCK_TIMEOUT_MS = 30_000  # creating or repairing the ledger waits this long for its tables


def schema_files() -> list[tuple[str, str]]:
    """Every ``queries/schema_*.sql``, in name order: the ledger's own DDL."""
    folder = resources.files("bxbatch") / "queries"
    names = sorted(p.name for p in folder.iterdir() if p.name.startswith("schema_") and p.name.endswith(".sql"))
    return [(name, (folder / name).read_text(encoding="utf-8")) for name in names]


def _schema_fingerprint() -> str:
    return hashlib.sha256("\0".join(text for _name, text in schema_files()).encode()).hexdigest()


async def ensure_schema(conn: asyncpg.Connection) -> None:
    """Create or upgrade the ledger. Concurrent callers serialise on an advisory lock.

    A ledger already at this version is left alone without taking a lock: its idempotent DDL
    (`CREATE INDEX IF NOT EXISTS` takes a SHARE lock on the table before it checks the name)
    would otherwise wait behind a running process's chunk and planner transactions, and could
    deadlock with them when a second process joins a run.
    """
    fingerprint = _schema_fingerprint()
    if (
        await conn.fetchval("SELECT to_regclass('bxbatch.ledger_schema') IS NOT NULL")
        and await conn.fetchval("SELECT fingerprint FROM bxbatch.ledger_schema") == fingerprint
        and not await missing_tables(conn)
    ):
        return
    async with conn.transaction():
        await set_local_timeouts(conn, lock=LEDGER_LOCK_TIMEOUT_MS)
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, LOCK_LEDGER_SETUP)
        for _name, text in schema_files():
            await conn.execute(text)
        await conn.execute("CREATE TABLE IF NOT EXISTS bxbatch.ledger_schema (fingerprint text NOT NULL)")
        await conn.execute("DELETE FROM bxbatch.ledger_schema")
        await conn.execute("INSERT INTO bxbatch.ledger_schema VALUES ($1)", fingerprint)


def ledger_tables() -> list[str]:
    """Every table the ledger's DDL creates (``bxbatch.<name>``), read from the schema files."""
    names: list[str] = []
    for _name, text in schema_files():
        names.extend(re.findall(r"CREATE TABLE IF NOT EXISTS bxbatch\.(\w+)", text, flags=re.IGNORECASE))
    return sorted(set(names))


async def missing_tables(conn: asyncpg.Connection) -> list[str]:
    """Ledger tables that are gone (dropped by hand, a partial restore): ensure_schema recreates them."""
    present = await conn.fetch(Q["ledger_tables_present"], ledger_tables())
    have = {r["relname"] for r in present}
    return [t for t in ledger_tables() if t not in have]


async def repair(conn: asyncpg.Connection, log: Any = None) -> list[str]:
    """Recreate missing ledger tables (empty); returns their names. The validate phase checks the result."""
    missing = await missing_tables(conn)
    if missing:
        if log is not None:
            log.warning("ledger_repaired", recreated=missing, hint="their records are lost; validate checks the result")
        async with conn.transaction():
            await set_local_timeouts(conn, lock=LEDGER_LOCK_TIMEOUT_MS)
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_CLASS, LOCK_LEDGER_SETUP)
            for _name, text in schema_files():
                await conn.execute(text)
    return missing


async def ledger_exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(Q["ledger_exists"]))


@dataclass(frozen=True)
class RunRecord:
    id: int
    status: str
    command: str
    resumed: bool
    joined: bool = False
    settings: dict[str, Any] | None = None  # what the run was started with (the ledger's copy)


def _settings_json(settings: Settings) -> str:
    public = {k: v for k, v in vars(settings).items() if k != "dsn"}
    migration = load_migration(settings.migration)  # which migration the run applies: resume checks it
    public.update(migration_name=migration.name, migration_sha256=migration.sha256)
    return json.dumps(public, default=str)


async def _check_same_migration(conn: asyncpg.Connection, run_id: int, settings: Settings) -> None:
    """Refuse to continue run ``run_id`` with another migration than the one it started with."""
    run = await conn.fetchrow(Q["run_by_id"], run_id)
    stored = run["settings"] if run is not None else None
    started = (json.loads(stored) if isinstance(stored, str) else dict(stored or {})).get("migration_name")
    current = load_migration(settings.migration).name
    if started is not None and started != current:  # runs of earlier versions recorded none: the shipped one
        raise UsageError(
            f"run #{run_id} applies migration {started}, not {current}",
            hint=f"resume it with --migration pointing at {started}, or roll it back first",
        )


async def start_or_continue_run(
    conn: asyncpg.Connection, settings: Settings, command: str, *, resume_only: bool = False, join: bool = False
) -> RunRecord:
    """Continue the newest unfinished run, or start a new one (``resume_only`` refuses to start one).

    The process that starts or continues a run owns it (an advisory lock on this connection):
    while the owner lives, another `run` or `resume` is refused (LockBusy, exit 7) naming it,
    and only ``join`` adds a process to the run, with the run's own settings.
    """
    row = await conn.fetchrow(Q["unfinished_run"])
    if join:
        if row is None or row["status"] != "running" or not await owner_alive(conn, int(row["id"])):
            raise NothingToResume(
                "nothing to join: no bxbatch run is going on in this database",
                hint="`bxbatch run` (without --join) starts or continues one",
            )
        await _check_same_migration(conn, int(row["id"]), settings)
        stored = await conn.fetchval("SELECT settings FROM bxbatch.run WHERE id = $1", row["id"])
        return RunRecord(
            id=row["id"], status="running", command=row["command"], resumed=True, joined=True,
            settings=json.loads(stored) if isinstance(stored, str) else dict(stored or {}),
        )  # fmt: skip
    if row is not None:
        await _check_same_migration(conn, int(row["id"]), settings)
        await _take_ownership(conn, int(row["id"]), settings)
        return RunRecord(id=row["id"], status="running", command=row["command"], resumed=True)
    if resume_only:
        last = await conn.fetchrow(Q["last_run"])
        detail = f"the last run (#{last['id']}) is {last['status']}" if last else "no run was ever started"
        raise NothingToResume(f"nothing to resume: {detail}", hint="start one with `bxbatch run`")
    run_id = await conn.fetchval(
        Q["insert_run"], command, __version__, settings.host, os.getpid(), _settings_json(settings)
    )
    await _take_ownership(conn, int(run_id), settings)
    return RunRecord(id=run_id, status="running", command=command, resumed=False)


async def owner_alive(conn: asyncpg.Connection, run_id: int) -> bool:
    return bool(await conn.fetchval(Q["owner_lock_held"], OWNER_LOCK_CLASS, run_id))


async def _take_ownership(conn: asyncpg.Connection, run_id: int, settings: Settings) -> None:
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", OWNER_LOCK_CLASS, run_id):
        run = await conn.fetchrow(Q["run_by_id"], run_id)
        assert run is not None
        since = run["owned_since"] or run["started_at"]
        raise LockBusy(
            f"run #{run_id} is owned by {run['host']} pid {run['pid']} (since {iso(since)})",
            hint="`bxbatch status` shows it; `bxbatch run --join` adds this process's workers to it",
        )
    await conn.execute(Q["take_ownership"], run_id, settings.host, os.getpid())


def joined_settings(stored: dict[str, Any], local: Settings) -> Settings:
    """A joiner's settings: the run's (from the ledger), except where it runs and how it prints."""
    fields = {f.name for f in dataclasses.fields(Settings)}
    taken = {k: v for k, v in stored.items() if k in fields and k not in LOCAL_SETTINGS}
    return local.with_(**taken).validate()


async def set_run_status(conn: asyncpg.Connection, run_id: int, status: str, error: str | None = None) -> None:
    await conn.execute(Q["set_run_status"], run_id, status, error)


async def last_run(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The newest run row, whatever its status."""
    return await conn.fetchrow(Q["last_run"])


async def last_heartbeat(conn: asyncpg.Connection, run_id: int) -> asyncpg.Record | None:
    """Seconds since any process of the run last showed life (the run row, a throttle state, a worker)."""
    return await conn.fetchrow(Q["last_heartbeat"], run_id)


async def phase_rows(conn: asyncpg.Connection, run_id: int) -> dict[str, asyncpg.Record]:
    """Each phase's row of the run by name: status, started_at, finished_at, detail."""
    return {str(r["name"]): r for r in await conn.fetch(Q["phase_status"], run_id)}


async def phase_states(conn: asyncpg.Connection, run_id: int) -> dict[str, str]:
    return {r["name"]: r["status"] for r in await conn.fetch(Q["phase_status"], run_id)}


async def start_phase(conn: asyncpg.Connection, run_id: int, name: str) -> None:
    await conn.execute(Q["start_phase"], run_id, name)


async def finish_phase(
    conn: asyncpg.Connection,
    run_id: int,
    name: str,
    status: str,
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(Q["finish_phase"], run_id, name, status, json.dumps(detail or {}, default=str))


def is_partner(application_name: str | None) -> bool:
    """A bxbatch session of a process that may share a run (a rollback never does)."""
    name = application_name or ""
    return name.startswith("bxbatch:") and not name.startswith("bxbatch:rollback")


@asynccontextmanager
async def advisory_lock(
    conn: asyncpg.Connection, key: int, what: str, *, wait_for_bxbatch: bool = False, log: Any = None
) -> AsyncIterator[None]:
    """A session-level advisory lock, refused at once (LockBusy) when another process holds it.

    ``wait_for_bxbatch``: a process sharing the run holds it (two processes reached the same DDL
    phase together): wait for it to finish that phase, then go on (everything it applied is then
    recorded and skipped), instead of leaving with exit 7 while the other works on.
    """
    got = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, key)
    waited = False
    while not got and wait_for_bxbatch:
        holder = await conn.fetchrow(Q["lock_holder"], LOCK_CLASS, key)
        if holder is not None and not is_partner(holder["application_name"]):
            break
        if not waited and log is not None:
            log.info("waiting_for_ddl_lock", what=what, holder_pid=holder["pid"] if holder else None)
        waited = True
        await anyio.sleep(0.5)
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, key)
    if not got:
        holder = await conn.fetchrow(Q["lock_holder"], LOCK_CLASS, key)
        who = (
            f"backend pid {holder['pid']} ({holder['application_name'] or 'unknown app'}"
            f"{', from ' + holder['client_addr'] if holder['client_addr'] else ''})"
            if holder
            else "another session"
        )
        raise LockBusy(
            f"another bxbatch process is {what}: {who} holds the lock",
            hint="wait for it to finish, or stop it; `bxbatch status` shows the run",
        )
    try:
        yield
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, key)


async def run_in_progress(conn: asyncpg.Connection) -> bool:
    """A run recorded as running (false on a database without a ledger)."""
    if not await conn.fetchval(Q["run_table_present"]):
        return False
    return bool(await conn.fetchval(Q["run_running"]))


async def other_live_workers(conn: asyncpg.Connection, host: str, pid: int, fresh_s: float) -> list[asyncpg.Record]:
    """Workers of other processes whose heartbeat is fresher than ``fresh_s`` (a run in progress, any host)."""
    if not await conn.fetchval(Q["worker_table_present"]):
        return []
    return list(await conn.fetch(Q["live_workers"], host, pid, fresh_s))
