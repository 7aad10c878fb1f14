"""Constraint phase: orphan report, optional cleaning, then VALIDATE CONSTRAINT for each NOT VALID foreign key.

The statements come from the ``phase=constraints`` DDL files (pglast gives table and constraint
of each ``ALTER TABLE ... VALIDATE CONSTRAINT``), and each is recorded in ddl_statement in the
transaction that validates it, so `plan`/`status` see the files as the schema runner would.

1. Report first, change nothing: for every foreign key still NOT VALID, count the rows whose key
   has no referenced row (``NOT EXISTS`` anti-join; a NULL key is never an orphan, MATCH SIMPLE,
   and never ``NOT IN``, which a single NULL in the subquery turns into "no rows"), with a sample
   of rows and keys, recorded in ``bxbatch.orphan_report``.
2. Orphans and no ``--clean-orphans``: stop with OrphansFound (exit 9) before touching any data.
   With the flag: ``ON DELETE SET NULL`` (and NO ACTION/RESTRICT on nullable columns) keys are set
   to NULL; ``ON DELETE CASCADE`` foreign keys (the ``*_ptr_id`` primary keys and
   ``database_permission.user_id``, all NOT NULL) delete the row, which is what the key itself
   would have done had the referenced row been deleted after the key existed. Every changed row
   is saved as it was in ``bxbatch.orphan_fix`` first, in the same transaction.
3. ``VALIDATE CONSTRAINT`` in its own transaction under lock_timeout (retried with backoff);
   it holds SHARE UPDATE EXCLUSIVE, which blocks neither reads nor writes, so its scan runs
   without statement_timeout. New orphans cannot appear meanwhile: a NOT VALID key is already
   enforced for every write.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from pglast.enums import AlterTableType

from bxbatch.db.render import set_local_timeouts
from bxbatch.db.retry import is_retryable
from bxbatch.db.session import qualified, quote_ident
from bxbatch.db.sqlfiles import SqlFile, Statement, queries
from bxbatch.errors import ChangedFileError, OrphansFound, SqlFileError
from bxbatch.ledger import ddl as ddl_ledger
from bxbatch.ledger import runs as ledger
from bxbatch.ledger.safety import record_orphan_report
from bxbatch.observe import progress
from bxbatch.phases import schema
from bxbatch.phases.context import RunContext

Q = queries("constraints")

SAMPLE_ROWS = 10
CLEAN_BATCH = 5_000
ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


@dataclass(frozen=True)
class ConstraintTask:
    file: SqlFile
    idx: int
    stmt: Statement
    table: str
    schema: str
    constraint: str | None  # None: not a VALIDATE CONSTRAINT statement (runs as plain DDL)


def constraint_tasks(files: list[SqlFile], default_schema: str) -> list[ConstraintTask]:
    tasks: list[ConstraintTask] = []
    for f in files:
        for idx, stmt in enumerate(f.statements):
            node = stmt.node
            name: str | None = None
            table, schema_name = "", default_schema
            if stmt.kind == "AlterTableStmt":
                cmds = list(node.cmds or ())
                table = str(node.relation.relname)
                schema_name = str(node.relation.schemaname or default_schema)
                if len(cmds) == 1 and cmds[0].subtype == AlterTableType.AT_ValidateConstraint:
                    name = str(cmds[0].name)
            tasks.append(ConstraintTask(f, idx, stmt, table, schema_name, name))
    return tasks


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table_schema: str
    table: str
    ref_schema: str
    ref_table: str
    columns: tuple[str, ...]
    not_null: tuple[bool, ...]
    ref_columns: tuple[str, ...]
    on_delete: str  # pg_constraint.confdeltype
    pk_column: str | None
    validated: bool

    @property
    def qualified_table(self) -> str:
        return qualified(self.table_schema, self.table)

    def orphan_condition(self, alias: str = "r") -> str:
        """SQL: row ``alias`` of the referencing table points at no referenced row (MATCH SIMPLE)."""
        a = quote_ident(alias)
        not_null = " AND ".join(f"{a}.{quote_ident(c)} IS NOT NULL" for c in self.columns)
        match = " AND ".join(
            f"p.{quote_ident(rc)} = {a}.{quote_ident(c)}" for c, rc in zip(self.columns, self.ref_columns, strict=True)
        )
        ref = qualified(self.ref_schema, self.ref_table)
        return f"{not_null} AND NOT EXISTS (SELECT 1 FROM {ref} p WHERE {match})"

    def count_sql(self) -> str:
        return f"SELECT count(*) FROM {self.qualified_table} r WHERE {self.orphan_condition()}"

    def sample_sql(self) -> str:
        row = f"r.{quote_ident(self.pk_column)}" if self.pk_column else "r.ctid::text"
        return (
            f"SELECT {row}::text AS row_key, jsonb_build_object({_literal_keys(self.columns)}) AS key "
            f"FROM {self.qualified_table} r WHERE {self.orphan_condition()} LIMIT $1"
        )

    @property
    def clean_action(self) -> str | None:
        """'set_null', 'delete', or None when the orphans cannot be cleaned automatically."""
        if self.on_delete == "c":
            return "delete"
        if self.on_delete in ("n", "a", "r") and not any(self.not_null):
            return "set_null"
        return None

    def clean_sql(self, action: str) -> str:
        """One batch of cleaning; logs each row as it was in bxbatch.orphan_fix. $1 run, $2 batch size."""
        assert self.pk_column is not None
        t = self.qualified_table
        pk = quote_ident(self.pk_column)
        victims = (
            f"SELECT r.{pk} AS k, to_jsonb(r) AS row_before FROM {t} r "
            f"WHERE {self.orphan_condition()} ORDER BY r.{pk} LIMIT $2 FOR UPDATE OF r"
        )
        if action == "set_null":
            sets = ", ".join(f"{quote_ident(c)} = NULL" for c in self.columns)
            change = f"UPDATE {t} t SET {sets} FROM victims v WHERE t.{pk} = v.k RETURNING v.row_before"
        else:
            change = f"DELETE FROM {t} t USING victims v WHERE t.{pk} = v.k RETURNING v.row_before"
        return (
            f"WITH victims AS ({victims}), changed AS ({change}), logged AS ("
            "INSERT INTO bxbatch.orphan_fix (run_id, constraint_name, table_name, action, row_before) "
            f"SELECT $1, $3, $4, $5, row_before FROM changed RETURNING 1) SELECT count(*) FROM logged"
        )


def _literal_keys(columns: tuple[str, ...]) -> str:
    # jsonb_build_object('col', r.col, ...): the key names are SQL string literals of catalog names.
    parts = []
    for c in columns:
        literal = "'" + c.replace("'", "''") + "'"
        parts.append(f"{literal}, r.{quote_ident(c)}")
    return ", ".join(parts)


async def foreign_key(conn: asyncpg.Connection, schema_name: str, table: str, name: str) -> ForeignKey | None:
    r = await conn.fetchrow(Q["fk_info"], schema_name, table, name)
    if r is None:
        return None
    return ForeignKey(
        name=r["conname"],
        table_schema=r["table_schema"],
        table=r["table_name"],
        ref_schema=r["ref_schema"],
        ref_table=r["ref_table"],
        columns=tuple(r["columns"]),
        not_null=tuple(r["not_null"]),
        ref_columns=tuple(r["ref_columns"]),
        on_delete=r["on_delete"],
        pk_column=r["pk_column"],
        validated=r["convalidated"],
    )


@dataclass
class OrphanReport:
    fk: ForeignKey
    orphans: int
    sample: list[dict[str, Any]]

    def describe(self) -> str:
        keys = ", ".join(f"{s['row_key']}->{','.join(str(v) for v in s['key'].values())}" for s in self.sample[:3])
        return (
            f"{self.fk.table}.{'/'.join(self.fk.columns)} ({self.fk.name}): {self.orphans} rows reference missing "
            f"{self.fk.ref_table} rows, e.g. {keys}"
        )


async def orphan_report(conn: asyncpg.Connection, fk: ForeignKey, run_id: int | None) -> OrphanReport:
    t0 = time.monotonic()
    count = int(await conn.fetchval(fk.count_sql()))
    sample: list[dict[str, Any]] = []
    if count:
        for r in await conn.fetch(fk.sample_sql(), SAMPLE_ROWS):
            key = r["key"] if isinstance(r["key"], dict) else json.loads(r["key"])
            sample.append({"row_key": r["row_key"], "key": key})
    await record_orphan_report(
        conn,
        run_id,
        fk.name,
        fk.table,
        list(fk.columns),
        fk.ref_table,
        count,
        sample,
        int((time.monotonic() - t0) * 1000),
    )
    return OrphanReport(fk, count, sample)


class ConstraintPhase:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.log = ctx.log.bind(phase="constraints")
        self.detail: dict[str, Any] = {
            "validated": 0,
            "already_valid": 0,
            "orphans_found": 0,
            "orphans_cleaned": 0,
            "retries": 0,
        }

    async def _record(self, conn: asyncpg.Connection, task: ConstraintTask, started: float) -> None:
        await ddl_ledger.record_statement(conn, task.file, task.idx, started, self.ctx.run_id)

    async def _in_transaction(self, task: ConstraintTask, sql: str, *, what: str) -> None:
        """Run ``sql`` and record ``task`` in one transaction under lock_timeout, retrying lock waits."""
        conn = self.ctx.conn
        started = time.monotonic()

        async def attempt() -> None:
            async with conn.transaction():
                # VALIDATE holds SHARE UPDATE EXCLUSIVE: no reader or writer waits for its scan.
                stmt_ms = 0 if task.constraint else self.settings.statement_timeout_ms
                await set_local_timeouts(conn, lock=self.settings.lock_timeout_ms, statement=stmt_ms)
                try:
                    await conn.execute(sql)
                except asyncpg.ForeignKeyViolationError as exc:
                    raise OrphansFound(
                        f"validating {task.constraint} on {task.table} found a row without its referenced row: "
                        f"{getattr(exc, 'detail', None) or exc}",
                        hint="run again: the orphan report lists them (clean them with --clean-orphans)",
                    ) from exc
                except asyncpg.PostgresError as exc:
                    if is_retryable(exc):
                        raise
                    raise schema._statement_error(task.file, task.stmt, exc) from exc
                await self._record(conn, task, started)

        self.detail["retries"] += await schema.with_retry(attempt, self.settings, self.log, what)

    async def _clean(self, report: OrphanReport) -> int:
        fk = report.fk
        action = fk.clean_action
        if action is None or fk.pk_column is None:
            raise OrphansFound(
                f"cannot clean {report.describe()} automatically: ON DELETE {ON_DELETE.get(fk.on_delete)} on "
                f"{'a NOT NULL column' if any(fk.not_null) else 'a table without a single-column primary key'}",
                hint="fix those rows by hand (the report is in bxbatch.orphan_report), then run again",
            )
        conn = self.ctx.conn
        sql = fk.clean_sql(action)
        total = 0
        while True:  # batches until one is short (each batch retries through schema.with_retry)
            changed = 0

            async def batch() -> None:
                nonlocal changed
                async with conn.transaction():
                    await set_local_timeouts(
                        conn, lock=self.settings.lock_timeout_ms, statement=self.settings.statement_timeout_ms
                    )
                    changed = int(await conn.fetchval(sql, self.ctx.run_id, CLEAN_BATCH, fk.name, fk.table, action))

            self.detail["retries"] += await schema.with_retry(batch, self.settings, self.log, f"clean {fk.name}")
            total += changed
            if changed < CLEAN_BATCH:
                break
        self.log.warning(
            "orphans_cleaned",
            constraint=fk.name,
            table=fk.table,
            columns=list(fk.columns),
            action=action,
            rows=total,
            saved_in="bxbatch.orphan_fix",
        )
        return total

    async def _apply(self, task: ConstraintTask, fk: ForeignKey | None, report: OrphanReport | None) -> None:
        started = time.monotonic()
        if task.constraint is None or fk is None:
            await self._in_transaction(task, task.stmt.sql, what=f"{task.file.name}#{task.idx}")
            return
        if fk.validated:
            async with self.ctx.conn.transaction():
                await self._record(self.ctx.conn, task, started)
            self.detail["already_valid"] += 1
            return
        if report is not None:
            self.detail["orphans_cleaned"] += await self._clean(report)
        await self._in_transaction(task, task.stmt.sql, what=f"validate {fk.name}")
        self.detail["validated"] += 1
        self.log.debug(
            "constraint_validated",
            constraint=fk.name,
            table=fk.table,
            seconds=round(time.monotonic() - started, 3),
        )

    async def run(self, files: list[SqlFile]) -> dict[str, Any]:
        conn = self.ctx.conn
        tasks = await _pending(conn, files, self.ctx.profile.schema)
        # 1. the report, before anything changes
        reports: dict[int, OrphanReport] = {}
        fks: dict[int, ForeignKey] = {}
        for i, task in enumerate(tasks):
            if task.constraint is None:
                continue
            fk = await foreign_key(conn, task.schema, task.table, task.constraint)
            if fk is None:
                raise SqlFileError(
                    f"ddl/{task.file.name}, line {task.stmt.line}: no foreign key {task.constraint} on {task.table}",
                    hint="the schema phase adds it NOT VALID; was it dropped by hand?",
                )
            fks[i] = fk
            if fk.validated:
                continue
            report = await orphan_report(conn, fk, self.ctx.run_id)
            self.log.debug("orphan_check", constraint=fk.name, table=fk.table, orphans=report.orphans)
            if report.orphans:
                reports[i] = report
        self.detail["orphans_found"] = sum(r.orphans for r in reports.values())
        if reports and not self.settings.clean_orphans:
            for r in reports.values():
                self.log.error(
                    "orphans_found", constraint=r.fk.name, table=r.fk.table, orphans=r.orphans, sample=r.sample
                )
            shown = "; ".join(r.describe() for r in list(reports.values())[:3])
            more = f" (and {len(reports) - 3} more constraints)" if len(reports) > 3 else ""
            raise OrphansFound(
                f"{len(reports)} foreign keys cannot be validated, nothing was changed: {shown}{more}",
                hint="review bxbatch.orphan_report, fix the rows, or re-run with --clean-orphans "
                "(sets the reference to NULL; CASCADE keys delete the row; every changed row is saved "
                "in bxbatch.orphan_fix)",
            )
        # 2. clean (only with the flag), 3. validate, one constraint at a time
        bar = progress.bar(self.settings, len(tasks), "foreign keys", unit="fk") if tasks else None
        try:
            for i, task in enumerate(tasks):
                await self._apply(task, fks.get(i), reports.get(i))
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return self.detail


async def _pending(conn: asyncpg.Connection, files: list[SqlFile], schema_name: str) -> list[ConstraintTask]:
    applied = set(await ddl_ledger.applied_files(conn))
    pending: list[ConstraintTask] = []
    for f in files:
        if f.name in applied:
            continue
        done = await ddl_ledger.applied_statements(conn, f.name)
        if any(sha != f.sha256 for sha in done.values()):
            raise ChangedFileError(
                f"ddl/{f.name} was changed after some of its statements were applied",
                hint="restore the applied version and put the change in a new, higher-numbered file",
            )
        pending += [t for t in constraint_tasks([f], schema_name) if t.idx not in done]
    return pending


async def run(ctx: RunContext) -> dict[str, Any]:
    all_files = ctx.migration.ddl_files()
    files = [f for f in all_files if f.phase == "constraints"]
    conn = ctx.conn
    async with ledger.advisory_lock(conn, ledger.LOCK_DDL, "applying DDL", wait_for_bxbatch=True, log=ctx.log):
        await schema.check_checksums(conn, all_files)
        detail = await ConstraintPhase(ctx).run(files)
        applied = set(await ddl_ledger.applied_files(conn))
        for f in files:
            if f.name in applied:
                continue
            done = set(await ddl_ledger.applied_statements(conn, f.name))
            if done >= set(range(len(f.statements))):
                duration = await ddl_ledger.file_duration(conn, f.name)
                await ddl_ledger.record_file(conn, f, duration, ctx.run_id)
    return detail
