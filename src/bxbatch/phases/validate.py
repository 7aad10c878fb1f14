"""Validate phase and ``bxbatch validate``: the catalog and the backfills against what they should be.

Expected objects come from the DDL parse trees (``expected.py``); expected backfill results come
from the base tables, through the migration's named queries (``validate.sql``, listed in its
manifest's ``[validate]``: backfill, per-table and orphan checks). Every comparison is an anti-join
both ways (missing and extra), with a sample of offending keys. All checks read one snapshot, so the
application writing meanwhile cannot produce false differences, without one transaction over every
user table (which would take a lock per table and index and exhaust the server's lock table on a
large install): a holder transaction (REPEATABLE READ, read-only) exports its snapshot
(``pg_export_snapshot()``) and runs the checks that read a fixed set of tables; the per-user-table
checks run in groups of ``LockBudget.group_size`` tables, each group its own read-only transaction
that imports the snapshot (``SET TRANSACTION SNAPSHOT``), on up to ``--concurrency`` connections at
once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
import asyncpg

from bxbatch.db.locks import LockBudget, lock_budget
from bxbatch.db.render import render as render_sql
from bxbatch.db.session import connect
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import ValidationFailed
from bxbatch.ledger.observations import save_validation
from bxbatch.migrations.expected import ExpectedSchema
from bxbatch.migrations.loader import Check, Migration, load_migration
from bxbatch.observe import progress
from bxbatch.observe.log import get_logger
from bxbatch.phases.context import RunContext
from bxbatch.phases.triggers import user_tables
from bxbatch.settings import Settings

Q = queries("validate")
GROUPS_PER_WORKER = 4  # per-table checks: about this many groups of user tables per connection
SAMPLE = 5
EVENT_BITS = {"INSERT": 4, "UPDATE": 16, "DELETE": 8}  # pg_trigger.tgtype bits


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
    columns = Finding("columns", sum(len(c) for c in exp.tables.values()) + len(exp.added_columns))
    present: dict[str, set[str]] = {}
    for r in await conn.fetch(Q["columns"], schema, [*exp.tables, *(t for t, _c in exp.added_columns)]):
        present.setdefault(r["relname"], set()).add(r["attname"])
    for table, col in exp.added_columns:  # added to a base table
        if col not in present.get(table, set()):
            columns.fail(f"{table}.{col}", "column missing")
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


async def _backfills(conn: asyncpg.Connection, migration: Migration) -> list[Finding]:
    """The backfills whose expected rows come from a fixed set of base tables (read in the holder)."""
    findings = []
    for check in (c for c in migration.checks if c.kind == "backfill"):
        finding = Finding(f"backfill:{check.job}", 1)
        params = [migration.profile.params[p] for p in check.params]
        _compare(finding, check.object, await _one(conn, migration.validate_queries[check.query], SAMPLE, *params))
        findings.append(finding)
    return findings


async def _per_table_group(
    conn: asyncpg.Connection, snapshot: str, migration: Migration, check: Check, group: list[tuple[int, str]]
) -> Finding:
    """A per-table check of one group of user tables, in its own transaction on the exported snapshot.

    Returns the group's share of the finding (figures and problems only: memory stays O(groups))."""
    part = Finding(f"backfill:{check.job}", len(group))
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")  # pg_export_snapshot()'s id: [0-9A-F-]
        for table_id, relname in group:
            sql = render_sql(migration.validate_queries[check.query], table=(migration.schema, relname))
            _compare(part, relname, await _one(conn, sql, table_id, SAMPLE))
    return part


def biggest_first(groups: list[list[tuple[int, str]]], sizes: dict[str, int]) -> list[int]:
    """The groups' indexes, the biggest group (bytes of its tables) first; ties in table order."""
    return sorted(range(len(groups)), key=lambda i: -sum(sizes.get(relname, 0) for _id, relname in groups[i]))


async def _per_table(
    settings: Settings,
    snapshot: str,
    migration: Migration,
    check: Check,
    tables: list[tuple[int, str]],
    budget: LockBudget,
    sizes: dict[str, int],
) -> Finding:
    """Every user table's check, group by group on up to ``concurrency`` connections; the report in table order.

    The lock budget only bounds a group (tables per transaction; an operator's ``--table-group-size``
    is used as given): the groups are made small enough to share out (about ``GROUPS_PER_WORKER`` per
    connection) and read biggest first (``sizes``: bytes per relname). With budget-sized groups, 90
    user tables at scale 0.3 made one group, read on one connection while the others had nothing to
    do, its biggest table last."""
    finding = Finding(f"backfill:{check.job}", len(tables))
    workers = max(1, settings.concurrency)
    # an operator's --table-group-size is taken as given
    size = (
        budget.group_size
        if budget.overridden
        else min(budget.group_size, -(-len(tables) // (GROUPS_PER_WORKER * workers)))
    )
    groups = list(budget.groups(tables, size))
    results: list[Finding | None] = [None] * len(groups)
    todo = iter(biggest_first(groups, sizes))

    async def worker() -> None:
        conn = await connect(settings, role="validate")
        try:
            await conn.execute("SET statement_timeout = 0")  # a giant user table's anti-join takes a while
            for index in todo:  # one iterator shared by the workers: each group is read once
                results[index] = await _per_table_group(conn, snapshot, migration, check, groups[index])
        finally:
            await conn.close()

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(workers, len(groups)))):
            tg.start_soon(worker)
    for part in results:  # in table order, whichever connection read the group
        assert part is not None, "every group is read"
        for key in ("expected", "actual"):
            finding.figures[key] = finding.figures.get(key, 0) + part.figures.get(key, 0)
        finding.problems += part.problems
    return finding


async def _triggers(conn: asyncpg.Connection, migration: Migration, tables: list[tuple[int, str]]) -> Finding:
    """Every user table fires the migration's functions on the events of its trigger; no other table does."""
    finding = Finding("triggers", len(tables))
    spec = migration.trigger
    assert spec is not None, "only a migration with a [trigger] has this check"
    wanted_events = 0
    for event in spec.events.values():
        wanted_events |= EVENT_BITS[event.split()[1]]
    label = spec.label
    functions = list(migration.expected.functions)
    have = {r["relname"]: r for r in await conn.fetch(Q["triggers"], migration.schema, functions)}
    wanted = {relname for _id, relname in tables}
    for relname in sorted(wanted):
        row = have.get(relname)
        if row is None:
            finding.fail(relname, f"{label} missing")
        elif row["events"] != wanted_events:
            finding.fail(relname, f"{label}(s) {row['names']} do not cover {_event_words(wanted_events)}")
        elif not row["enabled"]:
            finding.fail(relname, f"{label}(s) {row['names']} disabled")
    for relname in sorted(set(have) - wanted):
        finding.fail(relname, f"{label} on a table that is not a user table ({have[relname]['names']})")
    return finding


def _event_words(bits: int) -> str:
    words = [word.lower() for word, bit in EVENT_BITS.items() if bits & bit]
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


async def _orphans(conn: asyncpg.Connection, migration: Migration, tables: list[tuple[int, str]]) -> Finding:
    """Rows pointing nowhere: through foreign keys the server has not validated, and polymorphic references."""
    exp, schema = migration.expected, migration.schema
    validated = {
        r["name"]
        for r in await conn.fetch(Q["constraints"], schema, [c.name for c in exp.foreign_keys])
        if r["validated"]
    }
    unproven = [c for c in exp.foreign_keys if c.name not in validated and len(c.columns) == 1 and c.ref_table]
    checks = [c for c in migration.checks if c.kind == "orphans"]
    finding = Finding("orphans", len(unproven) + len(checks))
    for con in unproven:
        ref_column = con.ref_columns[0] if con.ref_columns else "id"
        sql = render_sql(
            Q["fk_orphans"],
            table=(schema, con.table),
            column=con.columns[0],
            ref_table=(schema, str(con.ref_table)),
            ref_column=ref_column,
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
    ids = [tid for tid, _rel in tables]
    for check in checks:
        statement = await conn.prepare(migration.validate_queries[check.query])
        found = await statement.fetchrow(*[SAMPLE, ids][: len(statement.get_parameters())])  # $1 sample, $2 ids
        assert found is not None, "aggregate queries return one row"
        if found["n"]:
            sample = [str(s) for s in found["sample"] or []]
            reason = check.reason.format(n=found["n"], sample=", ".join(sample))
            finding.fail(check.object, reason, None if "{sample}" in check.reason else sample)
    return finding


async def validate(conn: asyncpg.Connection, settings: Settings) -> ValidationReport:
    """Every check of ``settings.migration``, in one read-only snapshot: ``conn`` holds it; the user tables
    are read in groups on connections of their own (``settings``: DSN, ``concurrency``, ``table_group_size``)."""
    migration = load_migration(settings.migration)
    budget = await lock_budget(conn, settings, migration.schema)
    shown = progress.bar(settings, 4, "validate", unit="part")  # catalog, backfills, triggers, orphans
    try:
        return await _validate(conn, settings, migration, budget, shown)
    finally:
        shown.close()


async def _validate(
    conn: asyncpg.Connection, settings: Settings, migration: Migration, budget: LockBudget, shown: Any
) -> ValidationReport:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        # a giant user table's anti-join takes a while; the holder then waits idle for the groups, and
        # its snapshot dies with it (a server-wide idle timeout must not end it)
        await conn.execute("SET LOCAL statement_timeout = 0; SET LOCAL idle_in_transaction_session_timeout = 0")
        snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
        findings = await _structure(conn, migration.expected, migration.schema)
        shown.update(1)
        if any(not f.ok for f in findings[:2]):
            return ValidationReport(findings)  # tables or columns missing: the data checks cannot run
        tables = await user_tables(conn, migration.profile)
        per_table_checks = [c for c in migration.checks if c.kind == "per_table"]
        per_table_findings: list[Finding | None] = [None] * len(per_table_checks)
        sizes: dict[str, int] = {}
        if per_table_checks:
            rows = await conn.fetch(Q["table_bytes"], migration.schema, [relname for _id, relname in tables])
            sizes = {r["relname"]: r["bytes"] for r in rows}

        async def per_table(i: int) -> None:
            check = per_table_checks[i]
            per_table_findings[i] = await _per_table(settings, snapshot, migration, check, tables, budget, sizes)

        tail: list[Finding] = []
        async with anyio.create_task_group() as tg:  # the holder's own checks run meanwhile
            for i in range(len(per_table_checks)):
                tg.start_soon(per_table, i)
            findings += await _backfills(conn, migration)
            shown.update(1)
            if migration.trigger is not None:
                tail.append(await _triggers(conn, migration, tables))
            shown.update(1)
            tail.append(await _orphans(conn, migration, tables))
            shown.update(1)
    # the report's order: structure, backfills, triggers, orphans
    return ValidationReport([*findings, *(f for f in per_table_findings if f is not None), *tail])


async def validate_database(settings: Settings) -> ValidationReport:
    conn = await connect(settings, role="validate")
    try:
        report = await validate(conn, settings)
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
    report = await validate(ctx.conn, ctx.settings)
    for problem in report.problems():
        ctx.log.error("validation_problem", **problem)
    ctx.summary["validation"] = report.as_dict()
    await save_validation(ctx.conn, ctx.run_id, ctx.summary["validation"])  # for the run's report, failed or not
    raise_for(report)
    return report.figures()
