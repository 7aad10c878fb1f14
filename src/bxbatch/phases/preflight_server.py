"""Preflight's checks of the server and this host: version, disk, backup space, settings, lock budget, other runs."""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.locks import FIXED_LOCKS, lock_budget
from bxbatch.db.session import server_version_num
from bxbatch.db.sqlfiles import queries
from bxbatch.ledger import runs as ledger
from bxbatch.phases.checks import FAIL, PASS, WARN, Check
from bxbatch.settings import Settings

MIN_SERVER_VERSION = 120000
MIN_LOCKS_PER_TRANSACTION = 64
MIN_MAINTENANCE_WORK_MEM_KB = 64 * 1024
WORKER_HEARTBEAT_FRESH_S = 10.0  # the engine beats every second
# Internal, for tests only: pretend the server has this server_version_num (an old server
# cannot be started on demand). Deliberately not a flag and not in --help.
_FAKE_VERSION_ENV = "BXBATCH_TEST_SERVER_VERSION_NUM"

Q = queries("preflight")


async def effective_server_version(conn: asyncpg.Connection) -> int:
    fake = os.environ.get(_FAKE_VERSION_ENV)
    return int(fake) if fake else await server_version_num(conn)


async def check_version(conn: asyncpg.Connection) -> Check:
    version = await effective_server_version(conn)
    text = f"{version // 10000}.{version % 10000}" if version >= 100000 else str(version)
    if version < MIN_SERVER_VERSION:
        return Check(
            "server_version", FAIL, f"PostgreSQL {text} is too old: bxbatch needs 12 or newer", {"num": version}
        )
    return Check("server_version", PASS, f"PostgreSQL {text}", {"num": version})


def _is_loopback(addr: str | None) -> bool:
    if addr is None:
        return True  # Unix socket
    try:
        return ipaddress.ip_address(addr.split("/")[0]).is_loopback
    except ValueError:
        return False


def _pid_file_matches(data_dir: Path, started_epoch: int) -> bool | None:
    """Does the data directory's postmaster.pid belong to the server we talk to? None: unreadable."""
    if not data_dir.is_dir():
        return False
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        # the pid file truncates to whole seconds, the SQL side rounds
        return len(lines) > 2 and abs(int(lines[2]) - started_epoch) <= 1
    except (OSError, ValueError):
        return None


async def local_data_directory(conn: asyncpg.Connection) -> Path | None:
    """The server's data directory when it is on this machine and readable here, else None."""
    try:
        data_dir = Path(await conn.fetchval("SHOW data_directory"))
    except pgexc.InsufficientPrivilegeError:
        return None
    started = int(await conn.fetchval(Q["postmaster_start_epoch"]))
    matches = _pid_file_matches(data_dir, started)
    if matches is None:
        # Unreadable pid file: trust a Unix-socket or loopback connection.
        matches = _is_loopback(await conn.fetchval(Q["server_addr"]))
    return data_dir if matches else None


async def check_disk(conn: asyncpg.Connection, settings: Settings) -> Check:
    size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    data_dir = await local_data_directory(conn)
    gib = 1024**3
    if data_dir is None:
        if settings.skip_disk_check:
            return Check("disk", WARN, "free disk not measured (--skip-disk-check): the server is not local")
        return Check(
            "disk",
            FAIL,
            "cannot measure the server's free disk (remote server, or no right to read data_directory); "
            f"the database is {size / gib:.2f} GiB: check that at least twice that is free, "
            "then pass --skip-disk-check",
            {"database_bytes": size},
        )
    free = shutil.disk_usage(data_dir).free
    detail = {"database_bytes": size, "free_bytes": free}
    figures = f"{free / gib:.2f} GiB free for a {size / gib:.2f} GiB database"
    if free < size:
        return Check("disk", FAIL, f"{figures}: the new tables and the activity log need about its size again", detail)
    if free < 2 * size:
        return Check("disk", WARN, f"{figures}: the guide asks for twice the database size", detail)
    return Check("disk", PASS, figures, detail)


def _backup_dir(path: str) -> Path:
    target = Path(path).expanduser()
    return target if path.endswith(os.sep) or target.is_dir() else target.parent


def _free_bytes(folder: Path) -> int | None:
    return shutil.disk_usage(folder).free if folder.is_dir() else None


async def check_backup_space(conn: asyncpg.Connection, backup_path: str) -> Check:
    """The backup directory exists here and can hold a dump (at most about the database's size)."""
    size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    try:
        folder = _backup_dir(backup_path)
        free = _free_bytes(folder)
    except OSError as exc:  # the local file system: a name too long, a directory we may not look into
        return Check(
            "backup_space",
            FAIL,
            f"backup path {backup_path[:80]}{'...' if len(backup_path) > 80 else ''}: "
            f"{exc.strerror or type(exc).__name__}: fix --backup-path",
            {"path": backup_path},
        )
    if free is None:
        return Check("backup_space", FAIL, f"backup directory {folder} does not exist", {"path": str(folder)})
    if not os.access(folder, os.W_OK | os.X_OK):
        return Check(
            "backup_space",
            FAIL,
            f"backup directory {folder} is not writable by this user: make it writable or choose another",
            {"path": str(folder)},
        )
    gib = 1024**3
    figures = f"{free / gib:.2f} GiB free in {folder} for a dump of a {size / gib:.2f} GiB database"
    detail = {"path": str(folder), "free_bytes": free, "database_bytes": size}
    if free < size // 4:
        return Check("backup_space", FAIL, f"{figures}: a compressed dump needs roughly a quarter of it", detail)
    if free < size:
        return Check("backup_space", WARN, f"{figures}: enough for a well-compressed dump only", detail)
    return Check("backup_space", PASS, figures, detail)


async def check_lock_budget(conn: asyncpg.Connection, settings: Settings) -> Check:
    """What the lock budget (locks.py) gives this server: locks per transaction and user tables per group."""
    budget = await lock_budget(conn, settings)
    reason = (
        f"{budget.per_transaction} locks per transaction (half of max_locks_per_transaction "
        f"{budget.max_locks_per_transaction} x {budget.max_connections + budget.max_prepared_transactions} "
        f"slots over {budget.connections} bxbatch connections): {budget.group_size} user table(s) per group"
    )
    if budget.overridden and budget.group_size * budget.locks_per_table + FIXED_LOCKS > budget.per_transaction:
        return Check(
            "lock_budget",
            WARN,
            f"--table-group-size {budget.group_size} may take ~{budget.group_size * budget.locks_per_table} locks "
            f"in one transaction, above the {budget.per_transaction} this server gives bxbatch",
            budget.as_dict(),
        )
    return Check("lock_budget", PASS, reason, budget.as_dict())


async def check_settings(conn: asyncpg.Connection) -> list[Check]:
    locks = int(await conn.fetchval("SELECT current_setting('max_locks_per_transaction')::int"))
    lock_check = (
        Check("max_locks_per_transaction", PASS, str(locks))
        if locks >= MIN_LOCKS_PER_TRANSACTION
        else Check(
            "max_locks_per_transaction",
            WARN,
            f"{locks} is below the default {MIN_LOCKS_PER_TRANSACTION}: the foreign-key file locks ~40 relations",
        )
    )
    mwm_kb = int(await conn.fetchval(Q["maintenance_work_mem_kb"]))
    mwm_check = (
        Check("maintenance_work_mem", PASS, f"{mwm_kb // 1024} MB")
        if mwm_kb >= MIN_MAINTENANCE_WORK_MEM_KB
        else Check(
            "maintenance_work_mem",
            WARN,
            f"{mwm_kb // 1024} MB: index builds on the activity log will spill to disk; "
            "raise it (the guide suggests 1GB for the migration)",
        )
    )
    return [lock_check, mwm_check]


async def check_other_run(conn: asyncpg.Connection, settings: Settings) -> Check:
    """Another bxbatch holding one of its advisory locks, or workers of another process still beating."""
    holders = await conn.fetch(Q["bxbatch_lock_holders"], ledger.LOCK_CLASS)
    if holders and all(ledger.is_partner(h["application_name"]) for h in holders) and await _run_in_progress(conn):
        who = ", ".join(f"pid {h['pid']} ({h['application_name']})" for h in holders)
        # a process working on the unfinished run holds a DDL lock: this one joins the run and waits
        # for the lock at that phase (ledger.advisory_lock), never "exit 7" half-way into a shared run
        return Check(
            "other_bxbatch_run",
            WARN,
            f"another bxbatch process works on the run and holds its DDL lock: {who}; this process would join it",
            {"pids": [h["pid"] for h in holders]},
        )
    if holders:
        who = ", ".join(f"pid {h['pid']} ({h['application_name'] or 'unknown'})" for h in holders)
        return Check(
            "other_bxbatch_run",
            FAIL,
            f"another bxbatch process holds the run lock: {who}",
            {"pids": [h["pid"] for h in holders]},
        )
    live = [
        r
        for r in await ledger.other_live_workers(conn, settings.host, os.getpid(), WORKER_HEARTBEAT_FRESH_S)
        if r["host"] != settings.host or _pid_alive(int(r["pid"]))  # a process of this host that exited is gone
    ]
    if live:
        who = ", ".join(f"{r['workers']} worker(s) of pid {r['pid']} on {r['host']}" for r in live)
        # Several processes may share one run (the engine's design): joining it is allowed.
        return Check(
            "other_bxbatch_run",
            WARN,
            f"another bxbatch process is working on the run: {who} (heartbeat under "
            f"{WORKER_HEARTBEAT_FRESH_S:g}s old); this process would join it",
            {"processes": [f"{r['host']}:{r['pid']}" for r in live]},
        )
    return Check("other_bxbatch_run", PASS, "no other bxbatch process holds the lock or runs workers")


async def _run_in_progress(conn: asyncpg.Connection) -> bool:
    return await ledger.run_in_progress(conn)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


async def check_long_transactions(conn: asyncpg.Connection, settings: Settings) -> Check:
    rows = await conn.fetch(Q["long_transactions"], float(settings.long_transaction_s))
    if rows:
        shown = "; ".join(f"pid {r['pid']} ({r['usename']}, {r['state']}, open {int(r['age_s'])}s)" for r in rows[:3])
        return Check(
            "long_transactions",
            FAIL,
            f"{len(rows)} transaction(s) open longer than {settings.long_transaction_s:g}s would stall "
            f"every CREATE INDEX CONCURRENTLY: {shown}",
            {"pids": [r["pid"] for r in rows]},
        )
    if not await conn.fetchval(Q["sees_all_activity"]):
        return Check("long_transactions", WARN, "none visible, but this role cannot see other roles' sessions")
    return Check("long_transactions", PASS, f"none open longer than {settings.long_transaction_s:g}s")
