"""Validate phase and ``bxbatch validate``: the catalog and the backfills against what they should be.

Expected objects come from the DDL parse trees (``expected.py``); expected backfill results come
from the base tables. Every comparison is an anti-join both ways (missing and extra), with a
sample of offending keys. All checks read one snapshot, so the application writing meanwhile
cannot produce false differences, without one transaction over every user table (which would take
a lock per table and index and exhaust the server's lock table on a large install): a holder
transaction (REPEATABLE READ, read-only) exports its snapshot (``pg_export_snapshot()``) and runs
the checks that read a fixed set of tables; the per-user-table checks run in groups of
``LockBudget.group_size`` tables, each group its own read-only transaction that imports the
snapshot (``SET TRANSACTION SNAPSHOT``), on up to ``--concurrency`` connections at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import asyncpg

from bxbatch.db.locks import LockBudget, lock_budget
from bxbatch.db.session import connect, qualified, quote_ident
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import ValidationFailed
from bxbatch.ledger.observations import save_validation
from bxbatch.migrations.expected import ExpectedSchema, expected_schema
from bxbatch.migrations.profile import GUIDE, Profile
from bxbatch.observe import progress
from bxbatch.observe.log import get_logger
from bxbatch.phases.context import RunContext
from bxbatch.phases.triggers import user_tables
from bxbatch.settings import Settings

Q = queries("validate")
SAMPLE = 5
ALL_EVENTS = 4 | 8 | 16  # pg_trigger.tgtype bits: INSERT, DELETE, UPDATE


@dataclass
class Finding:
    """One validation check: what was checked, how many, and what is wrong (with sample keys)."""

    check: str  # tables | columns | functions | indexes | constraints | backfill:<job> | triggers | orphans
    checked: int
    problems: list[dict[str, Any]] = field(default_factory=list)  # {"object", "reason", "sample"?}
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, obj: str, reason: str, sample: list[str] | None = None) -> None:
        item: dict[str, Any] = {"object": obj, "reason": reason}
        if sample:
            item["sample"] = sample
        self.problems.append(item)


@dataclass
class ValidationReport:
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def problems(self) -> list[dict[str, Any]]:
        return [{"check": f.check, **p} for f in self.findings for p in f.problems]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [{**asdict(f), "ok": f.ok} for f in self.findings],
            "problems": self.problems(),
        }

    def figures(self) -> dict[str, Any]:
        return {"checks": len(self.findings), "problems": len(self.problems())}


async def _one(conn: asyncpg.Connection, sql: str, *args: Any) -> asyncpg.Record:
    row = await conn.fetchrow(sql, *args)
    assert row is not None, "aggregate queries return one row"
    return row


def render(report: ValidationReport) -> str:
    lines = []
    for f in report.findings:
        figures = "".join(f", {k} {v}" for k, v in f.figures.items())
        verdict = "ok" if f.ok else f"{len(f.problems)} problem(s)"
        lines.append(f"{f.check:<28} {f.checked:>8} checked{figures}: {verdict}")
        for p in f.problems:
            sample = f" e.g. {'; '.join(p['sample'])}" if p.get("sample") else ""
            lines.append(f"    {p['object']}: {p['reason']}{sample}")
    lines.append("validation: passed" if report.ok else f"validation: FAILED ({len(report.problems())} problem(s))")
    return "\n".join(lines)


def render_short(report: ValidationReport) -> str:
    """One line: the verdict and what was checked (the full table is `bxbatch validate`)."""
    checked = ", ".join(f"{f.checked} {f.check}" for f in report.findings)
    if report.ok:
        return f"validation: passed ({checked})"
    return f"validation: FAILED, {len(report.problems())} problem(s) (`bxbatch validate` lists them); checked {checked}"


async def _structure(conn: asyncpg.Connection, exp: ExpectedSchema, schema: str) -> list[Finding]:
    tables = Finding("tables", len(exp.tables))
    columns = Finding("columns", sum(len(c) for c in exp.tables.values()))
    present: dict[str, set[str]] = {}
    for r in await conn.fetch(Q["columns"], schema, list(exp.tables)):
        present.setdefault(r["relname"], set()).add(r["attname"])
    for table, cols in exp.tables.items():
        if table not in present:
            tables.fail(table, f"table missing (created by {exp.table_files[table]})")
            continue
        for col in cols:
            if col not in present[table]:
                columns.fail(f"{table}.{col}", "column missing")

    functions = Finding("functions", len(exp.functions))
    have_fn = {r["proname"] for r in await conn.fetch(Q["functions"], schema, list(exp.functions))}
    for name in exp.functions:
        if name not in have_fn:
            functions.fail(name, "function missing")

    wanted_idx = {name: ix.table for name, ix in exp.indexes.items()} | exp.implied_indexes()
    indexes = Finding("indexes", len(wanted_idx))
    found = {r["name"]: r for r in await conn.fetch(Q["indexes"], schema, list(wanted_idx), list(exp.tables))}
    for name, table in sorted(wanted_idx.items()):
        row = found.get(name)
        if row is None:
            indexes.fail(name, f"index on {table} missing")
        elif not row["valid"]:
            indexes.fail(name, f"index on {table} is INVALID (an interrupted CONCURRENTLY build): drop and rebuild it")
    for name, row in sorted(found.items()):
        if name not in wanted_idx and not row["valid"]:
            indexes.fail(name, f"unexpected INVALID index on {row['table_name']}")

    constraints = Finding("constraints", len(exp.constraints))
    have_con = {r["name"]: r for r in await conn.fetch(Q["constraints"], schema, list(exp.constraints))}
    for name, con in sorted(exp.constraints.items()):
        row = have_con.get(name)
        if row is None:
            constraints.fail(name, f"constraint on {con.table} missing")
        elif not row["validated"]:
            constraints.fail(name, f"constraint on {con.table} is NOT VALID: run ALTER TABLE ... VALIDATE CONSTRAINT")
    return [tables, columns, functions, indexes, constraints]


def _compare(finding: Finding, obj: str, row: asyncpg.Record) -> None:
    finding.figures["expected"] = finding.figures.get("expected", 0) + int(row["expected"])
    finding.figures["actual"] = finding.figures.get("actual", 0) + int(row["actual"])
    if row["missing"]:
        finding.fail(obj, f"{row['missing']} expected row(s) missing", list(row["missing_sample"] or []))
    if row["extra"]:
        finding.fail(obj, f"{row['extra']} row(s) the base tables do not imply", list(row["extra_sample"] or []))
    if row["wrong"]:
        finding.fail(obj, f"{row['wrong']} row(s) with wrong values", list(row["wrong_sample"] or []))


async def _backfills(conn: asyncpg.Connection, profile: Profile) -> list[Finding]:
    """The backfills whose expected rows come from a fixed set of base tables (read in the holder)."""
    views = Finding("backfill:enhanced_views", 1)
    _compare(
        views,
        "database_tableview_enhanced",
        await _one(conn, Q["enhanced_views"], profile.grid_view_type, SAMPLE),
    )
    perms = Finding("backfill:permissions", 1)
    _compare(perms, "database_permission", await _one(conn, Q["permissions"], SAMPLE))
    return [views, perms]


async def _activity_group(
    conn: asyncpg.Connection, snapshot: str, profile: Profile, group: list[tuple[int, str]]
) -> Finding:
    """The activity seeding of one group of user tables, in its own transaction on the exported snapshot.

    Returns the group's share of the finding (figures and problems only: memory stays O(groups))."""
    part = Finding("backfill:activity_seed", len(group))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # pg_export_snapshot()'s id: [0-9A-F-]
        for table_id, relname in group:
            sql = Q["activity_for_table"].replace("{table}", qualified(profile.schema, relname))
            _compare(part, relname, await _one(conn, sql, table_id, SAMPLE))
    return part


async def _activity(
    settings: Settings, snapshot: str, profile: Profile, tables: list[tuple[int, str]], budget: LockBudget
) -> Finding:
    """Every user table's seeding, group by group on up to ``concurrency`` connections, in table order."""
    finding = Finding("backfill:activity_seed", len(tables))
    groups = list(budget.groups(tables))
    results: list[Finding | None] = [None] * len(groups)
    todo = iter(range(len(groups)))

    async def worker() -> None:
        conn = await connect(settings, role="validate")
        try:
            await conn.execute("SET statement_timeout = 0")  # a giant user table's anti-join takes a while
            for index in todo:  # one iterator shared by the workers: each group is read once
                results[index] = await _activity_group(conn, snapshot, profile, groups[index])
        finally:
            await conn.close()

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(settings.concurrency, len(groups)))):
            tg.start_soon(worker)
    for part in results:  # in table order, whichever connection read the group
        assert part is not None, "every group is read"
        for key in ("expected", "actual"):
            finding.figures[key] = finding.figures.get(key, 0) + part.figures.get(key, 0)
        finding.problems += part.problems
    return finding


async def _triggers(conn: asyncpg.Connection, profile: Profile, tables: list[tuple[int, str]]) -> Finding:
    """Every user table logs inserts, updates and deletes through the activity functions; no other table does."""
    finding = Finding("triggers", len(tables))
    functions = list(expected_schema().functions)
    have = {r["relname"]: r for r in await conn.fetch(Q["triggers"], profile.schema, functions)}
    wanted = {relname for _id, relname in tables}
    for relname in sorted(wanted):
        row = have.get(relname)
        if row is None:
            finding.fail(relname, "activity trigger missing")
        elif row["events"] != ALL_EVENTS:
            finding.fail(relname, f"activity trigger(s) {row['names']} do not cover insert, update and delete")
        elif not row["enabled"]:
            finding.fail(relname, f"activity trigger(s) {row['names']} disabled")
    for relname in sorted(set(have) - wanted):
        finding.fail(relname, f"activity trigger on a table that is not a user table ({have[relname]['names']})")
    return finding


async def _orphans(
    conn: asyncpg.Connection, exp: ExpectedSchema, schema: str, tables: list[tuple[int, str]]
) -> Finding:
    """Rows pointing nowhere: through foreign keys the server has not validated, and polymorphic references."""
    validated = {
        r["name"]
        for r in await conn.fetch(Q["constraints"], schema, [c.name for c in exp.foreign_keys])
        if r["validated"]
    }
    unproven = [c for c in exp.foreign_keys if c.name not in validated and len(c.columns) == 1 and c.ref_table]
    finding = Finding("orphans", len(unproven) + 2)
    for con in unproven:
        ref_column = con.ref_columns[0] if con.ref_columns else "id"
        sql = (
            Q["fk_orphans"]
            .replace("{table}", qualified(schema, con.table))
            .replace("{column}", quote_ident(con.columns[0]))
            .replace("{ref_table}", qualified(schema, str(con.ref_table)))
            .replace("{ref_column}", quote_ident(ref_column))
        )
        try:
            row = await _one(conn, sql, SAMPLE)
        except asyncpg.UndefinedTableError:
            continue  # reported as a missing table already
        if row["n"]:
            finding.fail(
                f"{con.table}.{con.columns[0]}",
                f"{row['n']} row(s) point at no {con.ref_table} row ({con.name} is not validated)",
                [f"{con.columns[0]}={v}" for v in row["sample"] or []],
            )
    row = await _one(conn, Q["permission_orphans"], SAMPLE)
    if row["n"]:
        finding.fail(
            "database_permission.resource_id", f"{row['n']} table permission(s) of deleted tables", list(row["sample"])
        )
    row = await _one(conn, Q["activity_orphan_tables"], [tid for tid, _rel in tables])
    if row["n"]:
        ids = ", ".join(str(i) for i in (row["ids"] or [])[:SAMPLE])
        finding.fail(
            "database_activitylog.table_id",
            f"{row['n']} row_created entries of tables that are no user table (ids {ids})",
        )
    return finding


async def validate(conn: asyncpg.Connection, settings: Settings, profile: Profile = GUIDE) -> ValidationReport:
    """Every check, in one read-only snapshot: ``conn`` holds it; the user tables are read in groups on
    connections of their own (``settings``: DSN, ``concurrency``, ``table_group_size``)."""
    exp = expected_schema()
    budget = await lock_budget(conn, settings, profile.schema)
    shown = progress.bar(settings, 4, "validate", unit="part")  # catalog, backfills, triggers, orphans
    try:
        return await _validate(conn, settings, profile, exp, budget, shown)
    finally:
        shown.close()


async def _validate(
    conn: asyncpg.Connection, settings: Settings, profile: Profile, exp: ExpectedSchema, budget: LockBudget, shown: Any
) -> ValidationReport:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # a giant user table's anti-join takes a while; the holder then waits idle for the groups, and
        # its snapshot dies with it (a server-wide idle timeout must not end it)
        await conn.execute("SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0")
        snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
        findings = await _structure(conn, exp, profile.schema)
        shown.update(1)
        if any(not f.ok for f in findings[:2]):
            return ValidationReport(findings)  # tables or columns missing: the data checks cannot run
        tables = await user_tables(conn, profile)
        activity: list[Finding] = []

        async def per_table() -> None:
            activity.append(await _activity(settings, snapshot, profile, tables, budget))

        async with anyio.create_task_group() as tg:  # the holder's own checks run meanwhile
            tg.start_soon(per_table)
            findings += await _backfills(conn, profile)
            shown.update(1)
            findings.append(await _triggers(conn, profile, tables))
            shown.update(1)
            findings.append(await _orphans(conn, exp, profile.schema, tables))
            shown.update(1)
    # the report's order: structure, backfills, triggers, orphans
    return ValidationReport([*findings[:-2], *activity, *findings[-2:]])


async def validate_database(settings: Settings, profile: Profile = GUIDE) -> ValidationReport:
    conn = await connect(settings, role="validate")
    try:
        report = await validate(conn, settings, profile)
    finally:
        await conn.close()
    log = get_logger("bxbatch")
    (log.info if report.ok else log.error)("validation_finished", ok=report.ok, **report.figures())
    return report


def raise_for(report: ValidationReport) -> None:
    if report.ok:
        return
    first = report.problems()[0]
    more = len(report.problems()) - 1
    raise ValidationFailed(
        f"validation failed: {first['check']}: {first['object']}: {first['reason']}"
        + (f" (and {more} more problem(s))" if more else ""),
        hint="`bxbatch validate` prints every problem with sample keys",
    )


async def run(ctx: RunContext) -> dict[str, Any]:
    report = await validate(ctx.conn, ctx.settings, ctx.profile)
    for problem in report.problems():
        ctx.log.error("validation_problem", **problem)
    ctx.summary["validation"] = report.as_dict()
    await save_validation(ctx.conn, ctx.run_id, ctx.summary["validation"])  # for the run's report, failed or not
    raise_for(report)
    return report.figures()
