"""Library entry points behind the CLI: run/resume a migration, status, plan. The CLI is a veneer over these."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import asyncpg

from bxbatch.db.locks import exhausted
from bxbatch.db.retry import is_connection_lost, is_hopeless, needs_fix
from bxbatch.db.session import connect
from bxbatch.errors import (
    BxbatchError,
    ChangedFileError,
    CompletedWithFailures,
    Interrupted,
    LockBusy,
    NothingToResume,
    OrphansFound,
    SqlFileError,
    ValidationFailed,
)
from bxbatch.ledger import runs as ledger
from bxbatch.ledger.repair import forget_missing
from bxbatch.live import control, health
from bxbatch.migrations.loader import load_migration
from bxbatch.observe.console import heartbeat, phase_summary
from bxbatch.observe.log import get_logger
from bxbatch.observe.observatory import observatory
from bxbatch.ops.plan import record_estimate
from bxbatch.phases import (
    PHASE_ORDER,
    backfill,
    backup,
    cleanup,
    constraints,
    indexes,
    preflight,
    schema,
    triggers,
    validate,
)
from bxbatch.phases.context import RunContext
from bxbatch.settings import Settings

T = TypeVar("T")
PhaseFn = Callable[[RunContext], Awaitable[dict[str, Any]]]


def _ddl_phase(phase: str) -> PhaseFn:
    async def run_ddl(ctx: RunContext) -> dict[str, Any]:
        results = await schema.apply_phase(ctx.conn, ctx.settings, ctx.run_id, ctx.log, phase=phase)
        applied = [r for r in results if r.status == "applied"]
        return {
            "files_applied": len(applied),
            "files_skipped": len(results) - len(applied),
            "statements": sum(r.statements for r in applied),
            "retries": sum(r.retries for r in applied),
        }

    return run_ddl


# The phases of a run, in order. Later work replaces or adds entries here.
PHASES: list[tuple[str, PhaseFn]] = list(
    zip(
        PHASE_ORDER,
        [
            preflight.run,
            backup.run,
            _ddl_phase("schema"),
            triggers.run,
            backfill.run,
            indexes.run,
            constraints.run,
            validate.run,
            cleanup.run,
        ],
        strict=True,
    )
)

ALWAYS_RERUN = {"preflight"}


@dataclass
class RunSummary:
    run_id: int
    status: str
    resumed: bool
    seconds: float
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    joined: bool = False  # this process joined a run another one owns (`run --join`)


async def run_migration(
    settings: Settings, *, resume_only: bool = False, command: str = "run", join: bool = False
) -> RunSummary:
    """Run (or continue) the migration, phase by phase; every phase is safe to kill and re-run.

    ``join``: add this process to the run another process owns, with that run's settings.
    """
    log = get_logger("bxbatch")
    migration = load_migration(settings.migration)
    migration.ddl_files()  # parse every DDL file before touching the database
    migration.jobs  # noqa: B018  (and every backfill job file)
    started = time.monotonic()
    conn = await connect(settings, role="main")
    record: ledger.RunRecord | None = None
    try:
        # Preflight's essentials first: nothing (not even the ledger) is created in a database
        # that is not an install of the migration's application.
        await preflight.check_essentials(conn, settings)  # the whole check table
        await health.check_probe(settings)  # a --probe-sql typo or a writing probe: refused before any change
        if resume_only and not await ledger.ledger_exists(conn):  # nothing to resume: create nothing either
            raise NothingToResume(
                "nothing to resume: no run was ever started here", hint="start one with `bxbatch run`"
            )
        if await ledger.ledger_exists(conn):
            await ledger.repair(conn, log)  # tables dropped by hand come back empty (validate checks the result)
        await ledger.ensure_schema(conn)
        record = await ledger.start_or_continue_run(conn, settings, command, resume_only=resume_only, join=join)
        if record.joined and record.settings is not None:
            settings = ledger.joined_settings(record.settings, settings)
        log = log.bind(run_id=record.id)
        if not record.resumed:  # a new run rebuilds what `validate` would find missing (repair.py)
            await forget_missing(conn, settings, log)
        # a new attempt spends a cancel and earlier `set`s; a joiner leaves the owner's alone
        control_state = None if record.joined else await control.prepare_attempt(conn, record.id, settings)
        log.info(
            "run_joined" if record.joined else "run_started",
            resumed=record.resumed,
            paused=control_state == "paused" or None,
        )
        ctx = RunContext(settings=settings, conn=conn, run_id=record.id, log=log, migration=migration)
        summary = RunSummary(
            run_id=record.id, status="running", resumed=record.resumed, seconds=0.0, joined=record.joined
        )
        done = await ledger.phase_states(conn, record.id)
        name = "preflight"
        current: str | None = None
        if not record.resumed:  # what `bxbatch plan` expects, for the report's estimate vs actual
            await record_estimate(conn, settings, record.id, log)
        try:
            try:
                async with observatory(settings, record.id, command, log) as observer:
                    for name, fn in PHASES:
                        if done.get(name) in ("done", "skipped") and name not in ALWAYS_RERUN:
                            log.debug("phase_skipped", phase=name, reason="done in an earlier attempt")
                            continue
                        # pause / cancel / hold-before
                        await control.between_phases(conn, record.id, settings, log, name)
                        t0 = time.monotonic()
                        current = name
                        await ledger.start_phase(conn, record.id, name)
                        observer.phase(name, "running")
                        log.debug("phase_started", phase=name)
                        detail = await _with_heartbeat(settings, record.id, name, t0, fn(ctx))
                        detail["seconds"] = round(time.monotonic() - t0, 3)
                        status = "skipped" if detail.get("backup") == "skipped" else "done"
                        await ledger.finish_phase(conn, record.id, name, status, detail)
                        observer.phase(name, "done")
                        current = None
                        summary.phases[name] = detail
                        message = phase_summary(name, detail)
                        log.info("phase_finished", phase=name, message=message, seconds=detail["seconds"])
            except BaseExceptionGroup as group:  # from a task group (workers, helpers): its telling leaf
                raise _telling_leaf(group) from group
        except Interrupted:
            await _mark(conn, record.id, "interrupted", None, settings)
            raise
        except CompletedWithFailures as exc:
            await _mark(conn, record.id, "completed_with_failures", str(exc), settings)
            raise
        except LockBusy:
            raise  # another process holds the run or its lock and works on: its state is not this process's to mark
        except OrphansFound as exc:  # resumable as is, once orphans are cleaned (`resume --clean-orphans`)
            await _mark(conn, record.id, "interrupted", str(exc), settings)
            raise
        except (ValidationFailed, SqlFileError, ChangedFileError) as exc:
            # resuming as is cannot help: the run is failed, its phase too (`run` repairs, status says so)
            await _mark(conn, record.id, "failed", str(exc), settings, phase=current)
            raise
        except BxbatchError as exc:
            await _mark(conn, record.id, "interrupted", str(exc), settings)
            raise
        except Exception as exc:
            locks_error = exhausted(exc)  # the lock table is full: a setting to change, resumable
            if locks_error is not None:
                await _mark(conn, record.id, "interrupted", str(locks_error), settings)
                raise locks_error from exc
            if is_hopeless(exc):  # a table, column or function gone, a privilege revoked: no retry cures it
                stopped = needs_fix(exc, f"in the {name} phase")
                await _mark(conn, record.id, "interrupted", str(stopped), settings)
                raise stopped from exc
            if not is_connection_lost(exc):
                await _mark(conn, record.id, "interrupted", f"{type(exc).__name__}: {exc}", settings)
                raise
            # The server restarted or our backend was terminated past the retries: resumable.
            await _mark(conn, record.id, "interrupted", f"lost the server: {type(exc).__name__}", settings)
            raise Interrupted(
                f"lost the connection to the server ({type(exc).__name__}); every committed chunk is recorded",
                hint="run `bxbatch resume` once the server is back",
            ) from exc
        except BaseException as exc:
            await _mark(conn, record.id, "interrupted", f"{type(exc).__name__}: {exc}", settings)
            raise
        await ledger.set_run_status(conn, record.id, "completed")
        summary.status = "completed"
        summary.seconds = round(time.monotonic() - started, 3)
        log.debug("run_finished", status="completed", seconds=summary.seconds)  # the summary says it
        return summary
    finally:
        if settings.report_path and record is not None:
            await _write_report(conn, record.id, settings.report_path, log)
        await conn.close()


async def _write_report(conn: asyncpg.Connection, run_id: int, path: str, log: Any) -> None:
    """``run --report FILE``: the run's report, however the run ended (shielded, bounded, never raises)."""
    from bxbatch.observe.report import write_report

    with anyio.CancelScope(shield=True), anyio.move_on_after(60) as scope:
        try:
            if not conn.is_closed():
                written = await write_report(conn, run_id, path)
                log.info("report_written", path=written)
        except Exception as exc:
            log.warning("report_not_written", path=path, error=f"{type(exc).__name__}: {exc}"[:300])
    if scope.cancelled_caught:
        log.warning("report_not_written", path=path, error="took longer than 60 s")


def _telling_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception of a task group that says most about how the run ended."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for wanted in (Interrupted, CompletedWithFailures, BxbatchError):
        for leaf in leaves:
            if isinstance(leaf, wanted):
                return leaf
    for leaf in leaves:
        if is_connection_lost(leaf):
            return leaf
    return leaves[0] if leaves else group


async def _with_heartbeat(settings: Settings, run_id: int, phase: str, started: float, work: Awaitable[T]) -> T:
    """Run a phase with its periodic heartbeat line beside it (console.heartbeat)."""
    result: list[T] = []

    async def body() -> None:
        result.append(await work)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat, settings, run_id, phase, started)
            try:
                await body()
            finally:
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the phase's own error as itself, not wrapped by our task group
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return result[0]


async def _mark(
    conn: asyncpg.Connection,
    run_id: int,
    status: str,
    error: str | None,
    settings: Settings | None = None,
    phase: str | None = None,
) -> None:
    """Record the run's state on the way out (shielded, at most a few seconds); never mask the original error."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            if not conn.is_closed():
                await ledger.set_run_status(conn, run_id, status, error)
                if phase is not None:
                    await ledger.finish_phase(conn, run_id, phase, "failed", {"error": error})
                return
        except Exception:
            pass
        if settings is None:
            return
        try:  # the main connection is gone (server restart, terminated backend): a fresh one
            fresh = await connect(settings, role="main", connect_timeout=3)
            try:
                await ledger.set_run_status(fresh, run_id, status, error)
            finally:
                await fresh.close()
        except Exception:
            pass
