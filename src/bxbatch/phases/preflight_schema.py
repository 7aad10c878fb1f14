"""Preflight's checks of the database against the migration: base schema, privileges, search_path, catalog facts."""

from __future__ import annotations

import contextlib

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.sqlfiles import queries
from bxbatch.migrations.loader import Migration
from bxbatch.migrations.profile import Profile
from bxbatch.phases.checks import FAIL, PASS, WARN, Check, shown
from bxbatch.phases.triggers import user_tables
from bxbatch.settings import Settings

Q = queries("preflight")
# Sessions a run opens besides its chunk workers: main, health, control, probe, index monitor,
# the DDL hook, and one spare for `bxbatch status` / `pause` from another terminal.
EXTRA_CONNECTIONS = 6


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


async def check_base_schema(conn: asyncpg.Connection, migration: Migration) -> Check:
    profile = migration.profile
    missing = await missing_base_objects(conn, profile)
    if missing:
        return Check(
            "base_schema",
            FAIL,
            f"not a {migration.application} install: missing {shown(missing)}",
            {"missing": missing},
        )
    return Check(
        "base_schema", PASS, f"{len(profile.required_columns)} base tables with the columns the migration reads"
    )


async def check_privileges(conn: asyncpg.Connection, migration: Migration) -> Check:
    profile = migration.profile
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
    exp = migration.expected
    referenced = sorted({c.ref_table for c in exp.foreign_keys if c.ref_table and c.ref_table not in exp.tables})
    lacking_refs = await conn.fetch(Q["tables_lacking"], profile.schema, referenced, "REFERENCES")
    problems.extend(f"REFERENCES on {r['relname']}" for r in lacking_refs)
    # New tables left by an earlier attempt must be ours: constraints and indexes alter them.
    not_owned = await conn.fetch(Q["tables_not_owned"], profile.schema, list(exp.tables))
    problems.extend(f"ownership of {r['relname']}" for r in not_owned)
    names = [relname for _id, relname in await user_tables(conn, profile)]
    needs = [("TRIGGER", f"the {migration.trigger.label}")] if migration.trigger is not None else []
    per_table = [job.name for job in migration.jobs if job.per_user_table]
    needs += [("SELECT", f"the {', '.join(per_table)} backfill")] if per_table else []
    for privilege, why in needs:
        lacking = [r["relname"] for r in await conn.fetch(Q["tables_lacking"], profile.schema, names, privilege)]
        if lacking:
            problems.append(
                f"{privilege} on {len(lacking)} {profile.user_table_label}(s) ({shown(lacking, 3)}), for {why}"
            )
    if problems:
        return Check(
            "privileges",
            FAIL,
            f"role {who['role']} lacks {shown(problems, 4)}",
            {"missing": problems},
        )
    not_owner = await conn.fetchval(Q["user_tables_not_owned"], profile.schema, names)
    if not_owner:
        return Check(
            "privileges",
            WARN,
            f"role {who['role']} may migrate, but does not own {not_owner} {profile.user_table_label}(s): "
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


async def check_search_path(conn: asyncpg.Connection, migration: Migration) -> Check:
    """Refuse a table the application would read instead of the migration's (a schema earlier in its search_path).

    bxbatch's own sessions pin their search_path (db.pinned_search_path), so bxbatch always reads and
    writes the migration's schema; the application's sessions do not, and a same-named table in a
    schema ahead of it (``ALTER DATABASE ... SET search_path = shadow, public``, a ``"$user"``
    schema) would make the application and the migrated data disagree.
    """
    profile = migration.profile
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
    tables = sorted({*profile.required_columns, *migration.expected.tables})
    rows = await conn.fetch(Q["shadowing_relations"], sorted(earlier), tables, profile.user_table_regex_sql)
    if not rows:
        return Check("search_path", PASS, f"no schema ahead of {profile.schema} holds a table the migration uses")
    first = rows[0]
    where, value = earlier[first["nspname"]]
    shadows = [f"{r['nspname']}.{r['relname']}" for r in rows]
    return Check(
        "search_path",
        FAIL,
        f"{shadows[0]} shadows {profile.schema}.{first['relname']} for the application (search_path "
        f"'{value}' from {where}){'' if len(shadows) == 1 else f'; also {shown(shadows[1:], 3)}'}: "
        f"drop or rename it, or take {first['nspname']} out of that search_path",
        {"shadowing": shadows},
    )


async def check_catalog(conn: asyncpg.Connection, migration: Migration, settings: Settings) -> Check:
    """Catalog facts the run relies on later, checked now (before the schema changes, not mid-run).

    One table id per user table name, an integer ``id`` in every user table, base-table columns of
    the types the SQL reads them as, and connection slots for ``--concurrency`` workers.
    """
    profile = migration.profile
    problems: list[str] = []
    for row in await conn.fetch(Q["duplicate_user_table_ids"], profile.schema, profile.user_table_regex_sql):
        problems.append(
            f"tables {' and '.join(row['names'])} both name table id {row['table_id']} "
            f"({migration.application}'s is {profile.user_table_name(int(row['table_id']))}: rename or drop the other)"
        )
    names = [relname for _id, relname in await user_tables(conn, profile)]
    bad_ids = await conn.fetch(Q["user_tables_without_integer_id"], profile.schema, names)
    problems.extend(
        f"{profile.user_table_label} {r['relname']} has "
        f"{'no id column' if r['id_type'] == 'missing' else 'id of type ' + r['id_type']}"
        " (the per-table jobs walk an integer id)"
        for r in bad_ids
    )
    for r in await conn.fetch(Q["base_column_types"], profile.schema, list(profile.required_columns)):
        wanted = profile.expected_column_types(r["attname"])
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
        return Check("catalog", FAIL, shown(problems, 2), {"problems": problems})
    return Check(
        "catalog",
        PASS,
        f"{len(names)} {profile.user_table_label}s with an integer id, base column types as expected, "
        f"{needed} connections free",
    )
