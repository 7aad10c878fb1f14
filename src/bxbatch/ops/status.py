"""`bxbatch status`: one headline state and what is done and left, read from the ledger and the server alone.

The JSON form (``status --json``) follows the schema in ``status.schema.json`` (README, "Status"):
ISO 8601 timestamps, typed fields, no JSON inside strings. ``status --check`` exits with
``CHECK_EXIT`` of the headline state, for scripts and deploy gates.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

import asyncpg

from bxbatch.backfill.report import backfill_status, render_backfill_lines
from bxbatch.db.dsn import target_parts
from bxbatch.db.session import connect
from bxbatch.errors import ExitCode
from bxbatch.ledger import ddl as ddl_ledger
from bxbatch.ledger import runs as ledger
from bxbatch.live import control
from bxbatch.migrations.loader import load_migration
from bxbatch.observe import monitor
from bxbatch.observe.log import human_count, human_duration, iso
from bxbatch.ops import safety_status
from bxbatch.settings import Settings

SCHEMA_VERSION = 1
PHASE_ORDER = ("preflight", "backup", "schema", "triggers", "backfill", "indexes", "constraints", "validate", "cleanup")
STATES = (
    "NO_RUN",
    "RUNNING",
    "PAUSED",
    "HELD",
    "THROTTLED",
    "STALLED",
    "FAILED",
    "INTERRUPTED",
    "COMPLETED_WITH_FAILURES",
    "COMPLETED",
)
# `status --check`: 0 completed, 20 in progress and healthy, 21 needs attention, 22 no run yet.
CHECK_EXIT = {
    "COMPLETED": ExitCode.OK,
    "RUNNING": ExitCode.STATUS_IN_PROGRESS,
    "THROTTLED": ExitCode.STATUS_IN_PROGRESS,
    "PAUSED": ExitCode.STATUS_ATTENTION,
    "HELD": ExitCode.STATUS_ATTENTION,
    "STALLED": ExitCode.STATUS_ATTENTION,
    "FAILED": ExitCode.STATUS_ATTENTION,
    "INTERRUPTED": ExitCode.STATUS_ATTENTION,
    "COMPLETED_WITH_FAILURES": ExitCode.STATUS_ATTENTION,
    "NO_RUN": ExitCode.STATUS_NO_RUN,
}
OWNER_HEARTBEAT_S = 10.0  # a run whose process shows no sign of life for longer is STALLED


async def collect_status(settings: Settings) -> dict[str, Any]:
    conn = await connect(settings, role="status")
    try:
        return await collect_status_on(conn, settings)
    finally:
        await conn.close()


def _json_field(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


async def _owner(conn: asyncpg.Connection, run: asyncpg.Record) -> dict[str, Any]:
    """Who owns the run and whether that process is alive (its owner lock held, or a fresh heartbeat)."""
    lock_held = await ledger.owner_alive(conn, int(run["id"]))
    beat = await ledger.last_heartbeat(conn, int(run["id"]))
    age = None if beat is None or beat["age_s"] is None else round(float(beat["age_s"]), 1)
    alive = lock_held or (age is not None and age < OWNER_HEARTBEAT_S)
    return {
        "host": run["host"],
        "pid": run["pid"],
        "since": run["owned_since"] or run["started_at"],
        "alive": alive,
        "heartbeat_age_s": age,
    }


async def collect_status_on(conn: asyncpg.Connection, settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "target": target_parts(settings.dsn),
        "generated_at": await conn.fetchval("SELECT now()"),
    }
    files = load_migration(settings.migration).ddl_files()
    if not await ledger.ledger_exists(conn):
        report.update(
            state="NO_RUN",
            run=None,
            phases=[],
            ddl={"applied": 0, "pending": [f.name for f in files], "pending_count": len(files)},
            backfill={"jobs": [], "workers": [], "eta_s": None},
            throttle=[],  # the raw per-process states; _headline sums them up
            control=None,
            index_builds=[],
            failed_keys=[],
            failed_key_count=0,
            backup=None,
            rollback_steps_done=0,
        )
        return _headline(report)
    await ledger.repair(conn)  # a ledger table dropped by hand: recreated empty, never "exit 1 forever"
    run = await ledger.last_run(conn)
    run_id = int(run["id"]) if run else None
    applied = set(await ddl_ledger.applied_files(conn))
    pending = [f.name for f in files if f.name not in applied]
    report["run"] = None
    if run is not None:
        report["run"] = {
            k: run[k] for k in ("id", "status", "command", "started_at", "updated_at", "finished_at", "error")
        }
        report["run"]["settings"] = _json_field(run["settings"])
        report["run"]["owner"] = await _owner(conn, run)
    rows = await ledger.phase_rows(conn, run_id) if run_id else {}
    phases = []
    for name in PHASE_ORDER:
        r = rows.get(name)
        status = r["status"] if r else "pending"
        if status == "running" and run is not None and run["status"] in ("interrupted", "failed"):
            status = "failed" if run["status"] == "failed" else "interrupted"  # not running any more
        detail = _json_field(r["detail"]) if r else {}
        seconds = None
        if r and r["finished_at"] is not None:
            seconds = round((r["finished_at"] - r["started_at"]).total_seconds(), 3)
        phases.append(
            {
                "name": name,
                "status": status,
                "started_at": r["started_at"] if r else None,
                "finished_at": r["finished_at"] if r else None,
                "seconds": seconds,
                "detail": detail,
            }
        )
    report["phases"] = phases
    report["ddl"] = {
        "applied": sum(1 for f in files if f.name in applied),
        "pending": pending,
        "pending_count": len(pending),
    }
    report["index_builds"] = await monitor.builds_in_progress(conn)
    report.update(await control.status_section(conn, run_id))
    report.update(await backfill_status(conn, run_id))
    # a finished job's rate is the one its run measured and printed (over its time in the engine)
    measured: dict[str, Any] = {}
    for p in phases:
        if p["name"] == "backfill" and isinstance(p["detail"], dict):
            measured = p["detail"].get("jobs") or {}
    for job in report["backfill"]["jobs"]:
        figures = measured.get(job["job"]) if isinstance(measured, dict) else None
        if job["status"] in ("done", "failed") and figures and "rows_per_s" in figures:
            job["rows_per_s"] = job["rows_per_s_overall"] = float(figures["rows_per_s"])
    report.update(await safety_status.status_section(conn))
    return _headline(report)


def _live(report: dict[str, Any]) -> bool:
    run = report.get("run")
    return bool(run and run["status"] == "running" and run["owner"]["alive"])


def _throttle_summary(report: dict[str, Any]) -> dict[str, Any]:
    """One state for the throttles of every live process: off, none, rate_limited, throttled, paused."""
    procs = [s for s in report.get("throttle") or [] if s.get("live")]
    signals: list[str] = []
    state, reason = "none", None
    for s in procs:
        signals.extend(s.get("signals") or [])
        if s["paused"]:
            state, reason = "paused", s["reason"]
        elif state != "paused" and (
            s["concurrency"] < s["max_concurrency"] or s["chunk_scale"] < 1 or s.get("duty", 1) < 1
        ):
            state, reason = "throttled", s["reason"] or "throttled"
        elif state == "none" and s.get("rate_limit"):
            state, reason = "rate_limited", f"rate limit {human_count(s['rate_limit'])} rows/s"
        elif state == "none" and not s.get("throttle_on", True):
            state, reason = "off", "throttle off (health signals not acted on)"
    return {"state": state, "reason": reason, "signals": signals, "processes": procs}


def _current_phase(report: dict[str, Any]) -> str | None:
    for p in report["phases"]:
        if p["status"] in ("running", "interrupted", "failed"):
            return str(p["name"])
    return None


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    """The one state an operator (or a deploy gate) acts on, its sentence and the next step."""
    run = report.get("run")
    live = _live(report)
    if not live:  # a dead process's workers, ETAs and rates are history, not the present
        for job in report.get("backfill", {}).get("jobs", []):
            job["eta_s"] = None
            job["rows_per_s_recent"] = 0.0
        report.setdefault("backfill", {})["workers"] = []
    throttle = _throttle_summary(report) if live else {"state": "none", "reason": None, "signals": [], "processes": []}
    report["throttle_state"] = report.pop("throttle", [])
    report["throttle"] = throttle
    report["current_phase"] = _current_phase(report)
    control_row = report.get("control") or {}
    if run is None:
        state, why, next_step = "NO_RUN", "no bxbatch run in this database yet", "bxbatch run"
    elif run["status"] == "completed":
        state, why, next_step = "COMPLETED", f"finished {iso(run['finished_at'])}" if run["finished_at"] else "", None
    elif run["status"] == "completed_with_failures":
        state = "COMPLETED_WITH_FAILURES"
        why = f"{report.get('failed_key_count', 0)} keys failed: {run['error'] or ''}".strip()
        next_step = "fix the rows listed under failed keys, then `bxbatch resume`"
    elif run["status"] == "failed":
        state, why = "FAILED", run["error"] or "failed"
        next_step = "`bxbatch validate` lists every problem; `bxbatch run` repairs what is missing"
    elif run["status"] == "interrupted":
        state, why, next_step = "INTERRUPTED", run["error"] or "stopped", "bxbatch resume"
    elif not live:
        owner = run["owner"]
        age = owner["heartbeat_age_s"]
        state = "STALLED"
        why = f"owner {owner['host']} pid {owner['pid']} shows no sign of life" + (
            f" (last heartbeat {human_duration(age)} ago)" if age is not None else ""
        )
        next_step = "if that process is gone: bxbatch resume"
    elif control_row.get("hold_before") and report["current_phase"] is None:
        state = "HELD"
        why = f"held before phase {control_row['hold_before']} by {control_row.get('updated_by') or 'an operator'}"
        next_step = "bxbatch release"
    elif control_row.get("state") == "paused" or throttle["state"] == "paused":
        state = "PAUSED"
        if control_row.get("state") == "paused":
            why = f"paused by {control_row.get('updated_by') or 'an operator'}"
            next_step = "bxbatch continue"
        else:
            why = throttle["reason"] or "paused by the health signals"
            next_step = "wait: it resumes when the signals clear (`bxbatch set throttle=off` overrides)"
    elif throttle["state"] in ("throttled", "rate_limited"):
        state, why, next_step = "THROTTLED", throttle["reason"] or "", None
    else:
        state, why, next_step = "RUNNING", f"phase {report['current_phase'] or 'between phases'}", None
    report["state"] = state
    report["reason"] = why or None
    report["next_step"] = next_step
    report["attention"] = CHECK_EXIT[state] == ExitCode.STATUS_ATTENTION
    jobs = report.get("backfill", {}).get("jobs", [])
    if state in ("PAUSED", "HELD"):  # nothing moves: no time to arrival, no rate of the moment
        for job in jobs:
            job["eta_s"] = None
            job["rows_per_s_recent"] = 0.0
    etas = [j["eta_s"] for j in jobs if j.get("eta_s") is not None]
    report.setdefault("backfill", {})["eta_s"] = round(sum(etas), 1) if etas and live else None
    return report


# --- rendering -----------------------------------------------------------------------------------
def to_json(report: dict[str, Any]) -> str:
    def default(value: Any) -> Any:
        if isinstance(value, datetime | date):
            return iso(value)
        return str(value)

    return json.dumps(report, indent=2, default=default)


def headline_line(report: dict[str, Any]) -> str:
    run = report.get("run")
    who = f"run #{run['id']}" if run else "no run"
    state = report.get("state") or ("NO_RUN" if run is None else str(run.get("status", "?")).upper())
    line = f"{state}: {who}" + (f" — {report['reason']}" if report.get("reason") else "")
    return line + (f"; next: {report['next_step']}" if report.get("next_step") else "")


def render_status(report: dict[str, Any]) -> str:
    """The headline, then what is done and left; tolerates reports of older ledgers (missing sections)."""
    lines = [headline_line(report)]
    run = report.get("run")
    owner = (run or {}).get("owner")
    if run and owner:
        life = ("alive" if owner["alive"] else "no sign of life") if run["status"] == "running" else "exited"
        lines.append(
            f"  {run['status']}; started {iso(run['started_at'])} by `{run['command']}`; owner {owner['host']} "
            f"pid {owner['pid']} since {iso(owner['since'])} ({life})"
        )
    eta = (report.get("backfill") or {}).get("eta_s")
    if eta is not None:
        lines.append(f"  backfill ETA {human_duration(eta)} (held time left out)")
    for p in report.get("phases") or []:
        took = f" {human_duration(p['seconds'])}" if p.get("seconds") is not None else ""
        lines.append(f"  {p['name']:<12} {p['status']}{took}")
    ddl = report.get("ddl") or {"applied": 0, "pending": []}
    pending = ddl["pending"] if isinstance(ddl["pending"], list) else []
    lines.append(
        f"ddl: {ddl['applied']} files applied, {ddl.get('pending_count', len(pending))} pending"
        + (f": {', '.join(pending)}" if pending else "")
    )
    lines.extend(render_backfill_lines(report))
    t = report.get("throttle")
    if isinstance(t, dict) and t.get("state", "none") != "none":
        lines.append(f"throttle: {t['state']} ({t['reason']})")
    lines.extend(control.render_status_lines({**report, "throttle": report.get("throttle_state") or []}))
    lines.extend(monitor.render_builds(report.get("index_builds") or []))
    lines.extend(safety_status.render_status_lines(report))
    return "\n".join(lines)


def heartbeat_message(report: dict[str, Any], phase: str, elapsed: float) -> str:
    """``backfill permissions 412k/983k 42% 238k rows/s ETA 2m10s throttle: none``."""
    t = report.get("throttle") or {}
    throttle = t.get("state", "none") if t.get("state") in (None, "none") else f"{t['state']} ({t['reason']})"
    if phase == "backfill":
        for j in report.get("backfill", {}).get("jobs", []):
            if j["status"] in ("running", "settling"):
                total = "?" if j["rows_expected"] is None else human_count(j["rows_expected"])
                pct = f" {j['percent']:.0f}%" if j.get("percent") is not None else ""
                eta = human_duration(j["eta_s"]) if j.get("eta_s") is not None else "-"
                return (
                    f"backfill {j['job']} {human_count(j['rows_done'])}/{total}{pct} "
                    f"{human_count(j['rows_per_s_recent'])} rows/s ETA {eta} throttle: {throttle}"
                )
    for b in report.get("index_builds") or []:
        if b.get("live"):
            pct = f" {b['percent']:.0f}%" if b.get("percent") is not None else ""
            return f"{phase} {b['index_name']} {b['phase']}{pct} running {human_duration(elapsed)}"
    return f"{phase} running for {human_duration(elapsed)} throttle: {throttle}"
