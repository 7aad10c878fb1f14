"""Library entry points behind the CLI: run/resume a migration, status, plan. The CLI is a veneer over these."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import ledger
from .context import RunContext
from .db import connect
from .errors import BxbatchError, Interrupted
from .log import get_logger
from .phases import backfill, backup, cleanup, constraints, indexes, preflight, schema, triggers, validate
from .settings import Settings
from .sqlfiles import ddl_files

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
PHASES: list[tuple[str, PhaseFn]] = [
    ("preflight", preflight.run),
    ("backup", backup.run),
    ("schema", _ddl_phase("schema")),
    ("triggers", triggers.run),
    ("backfill", backfill.run),
    ("indexes", indexes.run),
    ("constraints", constraints.run),
    ("validate", validate.run),
    ("cleanup", cleanup.run),
]

ALWAYS_RERUN = {"preflight"}


@dataclass
class RunSummary:
    run_id: int
    status: str
    resumed: bool
    seconds: float
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)


async def run_migration(settings: Settings, *, resume_only: bool = False, command: str = "run") -> RunSummary:
    """Run (or continue) the migration, phase by phase; every phase is safe to kill and re-run."""
    log = get_logger("bxbatch")
    ddl_files()  # parse every shipped file before touching the database
    started = time.monotonic()
    conn = await connect(settings, role="main")
    try:
        # Preflight's essentials first: nothing (not even the ledger) is created in a database
        # that is not a Baserow install.
        await preflight.check_essentials(conn, ledger_profile(), settings)  # the whole check table
        await ledger.ensure_schema(conn)
        record = await ledger.start_or_continue_run(conn, settings, command, resume_only=resume_only)
        log = log.bind(run_id=record.id)
        log.info("run_started", resumed=record.resumed)
        ctx = RunContext(settings=settings, conn=conn, run_id=record.id, log=log)
        summary = RunSummary(run_id=record.id, status="running", resumed=record.resumed, seconds=0.0)
        done = await ledger.phase_states(conn, record.id)
        try:
            for name, fn in PHASES:
                if done.get(name) == "done" and name not in ALWAYS_RERUN:
                    log.info("phase_skipped", phase=name, reason="done in an earlier attempt")
                    continue
                t0 = time.monotonic()
                await ledger.start_phase(conn, record.id, name)
                log.info("phase_started", phase=name)
                detail = await fn(ctx)
                detail["seconds"] = round(time.monotonic() - t0, 3)
                await ledger.finish_phase(conn, record.id, name, "done", detail)
                summary.phases[name] = detail
                log.info("phase_finished", phase=name, **detail)
        except Interrupted:
            await _mark(conn, record.id, "interrupted", None)
            raise
        except BxbatchError as exc:
            await _mark(conn, record.id, "interrupted", str(exc))
            raise
        except BaseException as exc:
            await _mark(conn, record.id, "interrupted", f"{type(exc).__name__}: {exc}")
            raise
        await ledger.set_run_status(conn, record.id, "completed")
        summary.status = "completed"
        summary.seconds = round(time.monotonic() - started, 3)
        log.info("run_finished", status="completed", seconds=summary.seconds)
        return summary
    finally:
        await conn.close()


def ledger_profile() -> Any:
    from .profile import GUIDE

    return GUIDE


async def _mark(conn: asyncpg.Connection, run_id: int, status: str, error: str | None) -> None:
    """Record the run's state on the way out; never mask the original error."""
    try:
        if not conn.is_closed():
            await ledger.set_run_status(conn, run_id, status, error)
    except Exception:
        pass


async def plan_ddl(settings: Settings) -> list[dict[str, Any]]:
    """Pending DDL files (all files when the database has no ledger yet), without changing anything."""
    conn = await connect(settings, role="plan")
    try:
        pending = await schema.pending_files(conn)
    finally:
        await conn.close()
    return [
        {
            "file": f.name,
            "phase": f.phase,
            "transactional": f.transactional,
            "statements": [s.sql for s in f.statements],
        }
        for f in pending
    ]
