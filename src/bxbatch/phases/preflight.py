"""Preflight: is this database ready for the migration? A table of pass/warn/fail checks, run before any change.

``check_essentials`` is the first thing a run does (before the ledger exists); the same table is
recorded as the "preflight" phase and printed alone by ``bxbatch preflight``. Checks only read:
catalogs, settings, pg_stat_activity, pg_locks, and the local filesystem when the server is local.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.session import server_version_num
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import LockBusy, PreflightFailed
from bxbatch.ledger import runs as ledger
from bxbatch.ledger.preexisting import record_preexisting
from bxbatch.migrations.expected import expected_schema
from bxbatch.migrations.profile import USER_TABLE_REGEX_SQL, Profile
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

MIN_SERVER_VERSION = 120000
MIN_LOCKS_PER_TRANSACTION = 64
MIN_MAINTENANCE_WORK_MEM_KB = 64 * 1024
WORKER_HEARTBEAT_FRESH_S = 10.0  # the engine beats every second
# Internal, for tests only: pretend the server has this server_version_num (an old server
# cannot be started on demand). Deliberately not a flag and not in --help.
_FAKE_VERSION_ENV = "BXBATCH_TEST_SERVER_VERSION_NUM"

PASS, WARN, FAIL = "pass", "warn", "fail"

Q = queries("preflight")


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PreflightReport:
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def figures(self) -> dict[str, Any]:
        return {
            "checks_passed": sum(c.status == PASS for c in self.checks),
            "warnings": [c.name for c in self.checks if c.status == WARN],
            "failed": [c.name for c in self.checks if c.status == FAIL],
        }


def render(report: PreflightReport) -> str:
    width = max(len(c.name) for c in report.checks)
    lines = [f"{c.name:<{width}}  {c.status.upper():<4}  {c.reason}" for c in report.checks]
    verdict = "preflight: ready" if report.ok else f"preflight: {len(report.failed)} check(s) failed"
    return "\n".join([*lines, verdict])


async def missing_base_objects(conn: asyncpg.Connection, profile: Profile) -> list[str]:
    """Base tables/columns the migration reads that this database lacks, as 'table' or 'table.column'."""
    rows = await conn.fetch(Q["base_columns"], profile.schema, list(profile.required_columns))
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


def _shown(items: list[str], limit: int = 6) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


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


async def check_base_schema(conn: asyncpg.Connection, profile: Profile) -> Check:
    missing = await missing_base_objects(conn, profile)
    if missing:
        return Check(
            "base_schema",
            FAIL,
            f"not a Baserow install: missing {_shown(missing)}",
            {"missing": missing},
        )
    return Check(
        "base_schema", PASS, f"{len(profile.required_columns)} base tables with the columns the migration reads"
    )


async def check_privileges(conn: asyncpg.Connection, profile: Profile) -> Check:
    from bxbatch.phases.triggers import user_tables  # phases import each other lazily

    who = await conn.fetchrow(Q["role"])
    assert who is not None
    if who["superuser"]:
        return Check("privileges", PASS, f"role {who['role']} is a superuser")
    problems: list[str] = []
    if not await conn.fetchval(Q["schema_create"], profile.schema):
        problems.append(f"CREATE on schema {profile.schema}")
    if not await conn.fetchval(Q["ledger_create"]):
        problems.append("CREATE on the database (for the bxbatch schema)")
    base = list(profile.required_columns)
    lacking_select = await conn.fetch(Q["tables_lacking"], profile.schema, base, "SELECT")
    problems.extend(f"SELECT on {r['relname']}" for r in lacking_select)
    exp = expected_schema()
    referenced = sorted({c.ref_table for c in exp.foreign_keys if c.ref_table and c.ref_table not in exp.tables})
    lacking_refs = await conn.fetch(Q["tables_lacking"], profile.schema, referenced, "REFERENCES")
    problems.extend(f"REFERENCES on {r['relname']}" for r in lacking_refs)
    # New tables left by an earlier attempt must be ours: constraints and indexes alter them.
    not_owned = await conn.fetch(Q["tables_not_owned"], profile.schema, list(exp.tables))
    problems.extend(f"ownership of {r['relname']}" for r in not_owned)
    names = [relname for _id, relname in await user_tables(conn, profile)]
    for privilege, why in (("TRIGGER", "the activity trigger"), ("SELECT", "the activity seeding")):
        lacking = [r["relname"] for r in await conn.fetch(Q["tables_lacking"], profile.schema, names, privilege)]
        if lacking:
            problems.append(f"{privilege} on {len(lacking)} user table(s) ({_shown(lacking, 3)}), for {why}")
    if problems:
        return Check(
            "privileges",
            FAIL,
            f"role {who['role']} lacks {_shown(problems, 4)}",
            {"missing": problems},
        )
    not_owner = await conn.fetchval(Q["user_tables_not_owned"], profile.schema, names)
    if not_owner:
        return Check(
            "privileges",
            WARN,
            f"role {who['role']} may migrate, but does not own {not_owner} user table(s): "
            "`bxbatch rollback` could not drop their triggers",
        )
    return Check("privileges", PASS, f"role {who['role']} has every privilege the migration needs")


def split_search_path(value: str) -> list[str]:
    """A search_path value as PostgreSQL reads it: comma-separated, ``"quoted"`` kept, unquoted folded to lower case."""
    names: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " \t\n\r,":
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            name = []
            while i < n:
                if value[i] == '"':
                    if i + 1 < n and value[i + 1] == '"':
                        name.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                name.append(value[i])
                i += 1
            names.append("".join(name))
            while i < n and value[i] != ",":
                i += 1
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            names.append(value[start:i].strip().lower())
    return [name for name in names if name]


async def _application_search_paths(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(where it is set, value) of every search_path an application session of this database may start with."""
    paths: list[tuple[str, str]] = [("the server default", str(await conn.fetchval(Q["search_path_boot"])))]
    # only superusers and pg_read_all_settings read the file; the database and role settings win anyway
    with contextlib.suppress(pgexc.InsufficientPrivilegeError):
        paths.extend(("postgresql.conf", str(r["setting"])) for r in await conn.fetch(Q["search_path_file"]))
    for r in await conn.fetch(Q["search_path_settings"]):
        if r["per_role"] and r["per_database"]:
            where = f"ALTER ROLE {r['role']} IN DATABASE"
        elif r["per_role"]:
            where = f"ALTER ROLE {r['role']}"
        else:
            where = "ALTER DATABASE" if r["per_database"] else "all databases"
        paths.append((where, str(r["value"])))
    return paths


async def check_search_path(conn: asyncpg.Connection, profile: Profile) -> Check:
    """Refuse a table the application would read instead of the migration's (a schema earlier in its search_path).

    bxbatch's own sessions pin their search_path (db.pinned_search_path), so bxbatch always reads and
    writes the migration's schema; the application's sessions do not, and a same-named table in a
    schema ahead of it (``ALTER DATABASE ... SET search_path = shadow, public``, a ``"$user"``
    schema) would make Baserow and the migrated data disagree.
    """
    role_schemas = [r["nspname"] for r in await conn.fetch(Q["role_schemas"])]
    earlier: dict[str, tuple[str, str]] = {}  # schema -> (where, search_path value)
    for where, value in await _application_search_paths(conn):
        names: list[str] = []
        for name in split_search_path(value):
            names.extend(role_schemas if name == "$user" else [name])
        if profile.schema not in names:
            continue
        for name in names[: names.index(profile.schema)]:
            if name not in ("pg_catalog", "pg_temp", profile.schema):
                earlier.setdefault(name, (where, value))
    if not earlier:
        return Check("search_path", PASS, f"no schema ahead of {profile.schema} holds a table the migration uses")
    tables = sorted({*profile.required_columns, *expected_schema().tables})
    rows = await conn.fetch(Q["shadowing_relations"], sorted(earlier), tables, USER_TABLE_REGEX_SQL)
    if not rows:
        return Check("search_path", PASS, f"no schema ahead of {profile.schema} holds a table the migration uses")
    first = rows[0]
    where, value = earlier[first["nspname"]]
    shadows = [f"{r['nspname']}.{r['relname']}" for r in rows]
    return Check(
        "search_path",
        FAIL,
        f"{shadows[0]} shadows {profile.schema}.{first['relname']} for the application (search_path "
        f"'{value}' from {where}){'' if len(shadows) == 1 else f'; also {_shown(shadows[1:], 3)}'}: "
        f"drop or rename it, or take {first['nspname']} out of that search_path",
        {"shadowing": shadows},
    )


INTEGER_TYPES = ("smallint", "integer", "bigint")
JSON_TYPES = ("jsonb", "json")
TEXT_TYPES = ("text", "character varying", "character")


def expected_column_types(column: str) -> tuple[str, ...] | None:
    """The types the migration's SQL can read a base-table column as (None: any)."""
    if column == "id" or column.endswith("_id"):
        return INTEGER_TYPES  # keyset bounds and joins are integers
    if column == "permissions":
        return JSON_TYPES  # ->> 'create_table'
    if column == "type":
        return TEXT_TYPES
    return None


# Sessions a run opens besides its chunk workers: main, health, control, probe, index monitor,
# the DDL hook, and one spare for `bxbatch status` / `pause` from another terminal.
EXTRA_CONNECTIONS = 6


async def check_catalog(conn: asyncpg.Connection, profile: Profile, settings: Settings) -> Check:
    """Catalog facts the run relies on later, checked now (before the schema changes, not mid-run).

    One table id per user table name, an integer ``id`` in every user table, base-table columns of
    the types the SQL reads them as, and connection slots for ``--concurrency`` workers.
    """
    from bxbatch.phases.triggers import user_tables  # phases import each other lazily

    problems: list[str] = []
    for row in await conn.fetch(Q["duplicate_user_table_ids"], profile.schema, USER_TABLE_REGEX_SQL):
        problems.append(
            f"tables {' and '.join(row['names'])} both name table id {row['table_id']} "
            f"(Baserow's is {profile.user_table_name(int(row['table_id']))}: rename or drop the other)"
        )
    names = [relname for _id, relname in await user_tables(conn, profile)]
    bad_ids = await conn.fetch(Q["user_tables_without_integer_id"], profile.schema, names)
    problems.extend(
        f"user table {r['relname']} has {'no id column' if r['id_type'] == 'missing' else 'id of type ' + r['id_type']}"
        " (the activity seeding walks an integer id)"
        for r in bad_ids
    )
    for r in await conn.fetch(Q["base_column_types"], profile.schema, list(profile.required_columns)):
        wanted = expected_column_types(r["attname"])
        if r["attname"] in profile.required_columns.get(r["relname"], ()) and wanted and r["type"] not in wanted:
            problems.append(
                f"{r['relname']}.{r['attname']} is {r['type']}, the migration reads it as {' or '.join(wanted)}"
            )
    room = await conn.fetchrow(Q["connection_room"])
    assert room is not None
    needed = settings.concurrency + settings.index_concurrency + EXTRA_CONNECTIONS
    limits = [("the server", int(room["server_free"]), f"max_connections = {room['max_connections']}")]
    if room["database_limit"] >= 0:
        limits.append(("the database", room["database_limit"] - room["database_used"], "its CONNECTION LIMIT"))
    if room["role_limit"] >= 0:
        limits.append(("the role", room["role_limit"] - room["role_used"], "its CONNECTION LIMIT"))
    for who, free, limit in limits:
        if needed > free:
            problems.append(
                f"--concurrency {settings.concurrency} needs {needed} connections, {who} has {max(free, 0)} free "
                f"({limit}): lower --concurrency"
            )
    if problems:
        return Check("catalog", FAIL, _shown(problems, 2), {"problems": problems})
    return Check(
        "catalog",
        PASS,
        f"{len(names)} user tables with an integer id, base column types as expected, {needed} connections free",
    )


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


async def _local_data_directory(conn: asyncpg.Connection) -> Path | None:
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
    data_dir = await _local_data_directory(conn)
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


async def check_lock_budget(conn: asyncpg.Connection, settings: Settings, profile: Profile) -> Check:
    """What the lock budget (locks.py) gives this server: locks per transaction and user tables per group."""
    from bxbatch.db.locks import FIXED_LOCKS, lock_budget

    budget = await lock_budget(conn, settings, profile.schema)
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
    if await conn.fetchval(Q["worker_table_present"]):
        live = [
            r
            for r in await conn.fetch(Q["live_workers"], settings.host, os.getpid(), WORKER_HEARTBEAT_FRESH_S)
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
    if not await conn.fetchval("SELECT to_regclass('bxbatch.run') IS NOT NULL"):
        return False
    return bool(await conn.fetchval(Q["run_running"]))


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


async def collect(conn: asyncpg.Connection, settings: Settings, profile: Profile) -> PreflightReport:
    """Every check, in order. Read-only."""
    checks = [await check_version(conn)]
    base = await check_base_schema(conn, profile)
    checks.append(base)
    if base.status != FAIL:
        checks.append(await check_privileges(conn, profile))
    checks.append(await check_search_path(conn, profile))
    if base.status != FAIL:
        checks.append(await check_catalog(conn, profile, settings))
    checks.append(await check_disk(conn, settings))
    if settings.backup_path and not settings.no_backup:
        checks.append(await check_backup_space(conn, settings.backup_path))
    checks.extend(await check_settings(conn))
    checks.append(await check_lock_budget(conn, settings, profile))
    checks.append(await check_other_run(conn, settings))
    checks.append(await check_long_transactions(conn, settings))
    return PreflightReport(checks)


def raise_for(report: PreflightReport) -> None:
    failed = report.failed
    if not failed:
        return
    if [c.name for c in failed] == ["other_bxbatch_run"]:
        raise LockBusy(failed[0].reason, hint="wait for it to finish, or stop it; `bxbatch status` shows the run")
    first = failed[0]
    more = f" (and {len(failed) - 1} more failed check(s))" if len(failed) > 1 else ""
    raise PreflightFailed(
        f"preflight failed: {first.name}: {first.reason}{more}",
        hint="`bxbatch preflight` shows every check; nothing was changed",
    )


async def check_essentials(
    conn: asyncpg.Connection, profile: Profile, settings: Settings | None = None
) -> dict[str, Any]:
    """Refuse to start unless the database is ready. With ``settings``, the whole check table.

    Without settings only the server version and base schema (nothing may be created in a
    database that is not a Baserow install).
    """
    if settings is None:
        checks = [await check_version(conn)]
        if checks[0].status != FAIL:
            checks.append(await check_base_schema(conn, profile))
        report = PreflightReport(checks)
    else:
        report = await collect(conn, settings, profile)
    raise_for(report)
    return {"server_version_num": report.checks[0].detail["num"], **report.figures()}


async def run(ctx: RunContext) -> dict[str, Any]:
    report = await collect(ctx.conn, ctx.settings, ctx.profile)
    for check in report.checks:
        if check.name == "other_bxbatch_run" and check.status == FAIL:
            # this process already joined the run (check_essentials passed): a process sharing it that
            # took a bxbatch lock meanwhile is a partner, waited for at the DDL lock, not a reason to leave
            check.status = WARN
            check.reason = f"{check.reason}; this process shares the run and waits for it"
    for check in report.checks:
        level = {PASS: "debug", WARN: "warning"}.get(check.status, "error")  # a pass is not news
        getattr(ctx.log, level)("preflight_check", check=check.name, status=check.status, reason=check.reason)
    raise_for(report)

    await record_preexisting(ctx.conn, ctx.run_id, ctx.profile.schema)
    return {"server_version_num": report.checks[0].detail["num"], **report.figures()}
