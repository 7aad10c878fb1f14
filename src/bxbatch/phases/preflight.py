"""Preflight: is this database ready for the migration? A table of pass/warn/fail checks, run before any change.

``check_essentials`` is the first thing a run does (before the ledger exists); the same table is
recorded as the "preflight" phase and printed alone by ``bxbatch preflight``. Checks only read:
catalogs, settings, pg_stat_activity, pg_locks, and the local filesystem when the server is local.
The checks themselves live in ``preflight_schema`` (the database against the migration) and
``preflight_server`` (the server and this host).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from bxbatch.errors import LockBusy, PreflightFailed
from bxbatch.ledger.preexisting import record_preexisting
from bxbatch.migrations.loader import Migration, load_migration
from bxbatch.phases.checks import FAIL, PASS, WARN, Check
from bxbatch.phases.context import RunContext
from bxbatch.phases.preflight_schema import check_base_schema, check_catalog, check_privileges, check_search_path
from bxbatch.phases.preflight_server import (
    check_backup_space,
    check_disk,
    check_lock_budget,
    check_long_transactions,
    check_other_run,
    check_settings,
    check_version,
)
from bxbatch.settings import Settings


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


async def collect(conn: asyncpg.Connection, settings: Settings, migration: Migration | None = None) -> PreflightReport:
    """Every check, in order, for ``migration`` (default: the one ``settings`` names). Read-only."""
    migration = migration or load_migration(settings.migration)
    checks = [await check_version(conn)]
    base = await check_base_schema(conn, migration)
    checks.append(base)
    if base.status != FAIL:
        checks.append(await check_privileges(conn, migration))
    checks.append(await check_search_path(conn, migration))
    if base.status != FAIL:
        checks.append(await check_catalog(conn, migration, settings))
    checks.append(await check_disk(conn, settings))
    if settings.backup_path and not settings.no_backup:
        checks.append(await check_backup_space(conn, settings.backup_path))
    checks.extend(await check_settings(conn))
    checks.append(await check_lock_budget(conn, settings))
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


async def check_essentials(conn: asyncpg.Connection, settings: Settings, *, everything: bool = True) -> dict[str, Any]:
    """Refuse to start unless the database is ready: the whole check table, or with ``everything``
    False only the server version and base schema (nothing may be created in a database that is
    not an install of the migration's application)."""
    if not everything:
        checks = [await check_version(conn)]
        if checks[0].status != FAIL:
            checks.append(await check_base_schema(conn, load_migration(settings.migration)))
        report = PreflightReport(checks)
    else:
        report = await collect(conn, settings)
    raise_for(report)
    return {"server_version_num": report.checks[0].detail["num"], **report.figures()}


async def run(ctx: RunContext) -> dict[str, Any]:
    report = await collect(ctx.conn, ctx.settings, ctx.migration)
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
    await record_preexisting(ctx.conn, ctx.run_id, ctx.migration)  # rollback never drops what the install had
    return {"server_version_num": report.checks[0].detail["num"], **report.figures()}
