"""`bxbatch status`: what is done and what is left, read from the ledger alone."""

from __future__ import annotations

from typing import Any

from . import ledger, monitor, safety_status
from .db import connect
from .engine import control
from .engine.report import backfill_status, render_backfill_lines
from .settings import Settings
from .sqlfiles import ddl_files


async def collect_status(settings: Settings) -> dict[str, Any]:
    conn = await connect(settings, role="status")
    try:
        if not await ledger.ledger_exists(conn):
            return {
                "ledger": False,
                "run": None,
                "phases": [],
                "ddl": {"applied": 0, "pending": len(ddl_files())},
            }
        await ledger.repair(conn)  # a ledger table dropped by hand: recreated empty, never "exit 1 forever"
        run = await conn.fetchrow(ledger.Q["last_run"])
        phases = [dict(r) for r in await conn.fetch(ledger.Q["phase_status"], run["id"])] if run else []
        applied = {r["file"] for r in await conn.fetch(ledger.Q["applied_files"])}
        files = ddl_files()
        return {
            "ledger": True,
            "run": dict(run) if run else None,
            "phases": phases,
            "ddl": {
                "applied": sum(1 for f in files if f.name in applied),
                "pending": [f.name for f in files if f.name not in applied],
            },
            # index builds in progress: ledger rows + pg_stat_progress_create_index (monitor.py)
            "index_builds": await monitor.builds_in_progress(conn),
            # live safety: control row, throttle state and decisions, failed keys (engine/control.py)
            **(await control.status_section(conn, run["id"] if run else None)),
            # backfill jobs: rows, rate, ETA, chunks, active workers (engine/report.py)
            **(await backfill_status(conn, run["id"] if run else None)),
            # the last backup and an unfinished rollback (safety_status.py)
            **(await safety_status.status_section(conn)),
        }
    finally:
        await conn.close()


def render_status(report: dict[str, Any]) -> str:
    if not report["ledger"]:
        return "no bxbatch run in this database yet (start one with `bxbatch run`)"
    lines: list[str] = []
    run = report["run"]
    if run:
        lines.append(
            f"run #{run['id']}: {run['status']} (started {run['started_at']:%Y-%m-%d %H:%M:%S}, host {run['host']})"
        )
        if run.get("error"):
            lines.append(f"  last error: {run['error']}")
    for phase in report["phases"]:
        lines.append(f"  {phase['name']:<12} {phase['status']}")
    ddl = report["ddl"]
    pending = ddl["pending"]
    lines.append(
        f"ddl: {ddl['applied']} files applied, {len(pending)} pending" + (f": {', '.join(pending)}" if pending else "")
    )
    lines.extend(render_backfill_lines(report))
    lines.extend(control.render_status_lines(report))
    lines.extend(monitor.render_builds(report.get("index_builds") or []))
    lines.extend(safety_status.render_status_lines(report))
    return "\n".join(lines)
