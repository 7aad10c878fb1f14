"""What the operator reads on the console: the target line, the periodic heartbeat line, the run summary."""

from __future__ import annotations

import time
from typing import Any

import anyio

from bxbatch.db.dsn import describe_target
from bxbatch.observe.log import get_logger, human_bytes, human_count, human_duration
from bxbatch.settings import Settings


def target_line(command: str, settings: Settings) -> str:
    """The first line of every command: which server, database and user it acts on (never the password)."""
    return f"bxbatch {command}: {describe_target(settings.dsn)}"


# --- the heartbeat: one line per phase every status_interval_s ------------------------------------
async def heartbeat(settings: Settings, run_id: int, phase: str, started: float) -> None:
    """Every ``status_interval_s`` while ``phase`` runs: one gh-ost-style line read from the ledger
    (``backfill permissions 412k/983k 42% 238k rows/s ETA 2m10s throttle: none``)."""
    if settings.status_interval_s <= 0:
        return
    from bxbatch.db.session import connect
    from bxbatch.ops.status import collect_status_on, heartbeat_message

    log = get_logger("bxbatch").bind(run_id=run_id)
    conn = None
    try:
        while True:  # a poller: a failed read is reported as such, the next tick reads again (not a retry)
            await anyio.sleep(settings.status_interval_s)
            try:
                if conn is None or conn.is_closed():
                    conn = await connect(settings, role="status", connect_timeout=5)
                report = await collect_status_on(conn, settings)
                message = heartbeat_message(report, phase, time.monotonic() - started)
            except Exception as exc:  # the heartbeat is a view: it never stops the run
                message = f"{phase} running for {human_duration(time.monotonic() - started)} (status unavailable: "
                message += f"{type(exc).__name__})"
                if conn is not None:
                    conn.terminate()
                    conn = None
            log.info("progress", message=message)
    finally:
        if conn is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                await conn.close()


# --- the summary at the end of `run`, `resume` and `demo` -----------------------------------------
def _n(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int | float) else str(value)


def phase_summary(name: str, d: dict[str, Any]) -> str:
    """One line of figures per phase, in words."""
    if name == "preflight":
        warn = d.get("warnings") or []
        return f"{_n(d.get('checks_passed', 0))} checks passed" + (f", warnings: {', '.join(warn)}" if warn else "")
    if name == "backup":
        if d.get("backup") == "skipped":
            return f"SKIPPED ({d.get('reason')})"
        return (
            f"verified {human_bytes(d.get('bytes') or 0)}, {_n(d.get('toc_entries', 0))} entries, "
            f"{human_duration(d.get('dump_seconds'))}: {d.get('backup')}"
        )
    if name in ("schema",) or "files_applied" in d:
        extra = f", {d['retries']} retries" if d.get("retries") else ""
        return (
            f"{_n(d.get('files_applied', 0))} files applied ({_n(d.get('statements', 0))} statements), "
            f"{_n(d.get('files_skipped', 0))} already applied{extra}"
        )
    if name == "triggers":
        if "label" in d and d["label"] is None:
            return "no per-table trigger in this migration"
        return (
            f"{d.get('label') or 'activity trigger'} installed on {_n(d.get('installed', 0))} user tables "
            f"({_n(d.get('tables_with_trigger', 0))} in all)"
        )
    if name == "backfill":
        failed = f", {d['failed_chunks']} FAILED" if d.get("failed_chunks") else ""
        rec = f", {_n(d['reconciled'])} reconciled" if d.get("reconciled") else ""
        conv = "" if d.get("converged", True) else " (did not converge: the application kept writing)"
        plan = f", {d['plan_retries']} plan retries" if d.get("plan_retries") else ""
        return (
            f"{_n(d.get('rows', 0))} rows in {_n(d.get('chunks', 0))} chunks{failed}{rec}, longest "
            f"{d.get('longest_chunk_ms', 0):.0f} ms, {d.get('settle_rounds', 0)} settle round(s){conv}, "
            f"{d.get('concurrency', '?')} workers{plan}"
        )
    if name == "indexes":
        bits = [f"{_n(d.get('indexes_built', 0))} built"]
        if d.get("built_before"):
            bits.append(f"{_n(d['built_before'])} built earlier in the run")
        for key, label in (("rebuilt_invalid", "rebuilt"), ("skipped_valid", "already valid"), ("adopted", "adopted")):
            if d.get(key):
                bits.append(f"{_n(d[key])} {label}")
        if d.get("slowest"):
            bits.append(f"slowest {d['slowest']}")
        if d.get("retries"):
            bits.append(f"{d['retries']} retries")
        if d.get("waited_s"):
            bits.append(f"waited {human_duration(d['waited_s'])} for other transactions")
        return ", ".join(bits)
    if name == "constraints":
        orphans = f", {_n(d.get('orphans_cleaned', 0))} orphans cleaned" if d.get("orphans_cleaned") else ""
        return (
            f"{_n(d.get('validated', 0))} foreign keys validated, {_n(d.get('already_valid', 0))} already valid, "
            f"{_n(d.get('orphans_found', 0))} orphans{orphans}"
        )
    if name == "cleanup" and d.get("retries"):
        return f"{_n(d.get('tables_vacuumed', 0))} tables vacuumed and analysed, {d['retries']} retries"
    if name == "validate":
        return f"{_n(d.get('checks', 0))} checks, {_n(d.get('problems', 0))} problems"
    if name == "cleanup":
        return f"{_n(d.get('tables_vacuumed', 0))} tables vacuumed and analysed"
    return ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("seconds", "jobs"))


def job_lines(detail: dict[str, Any]) -> list[str]:
    """Per backfill job: rows, rate over this attempt, chunks, longest transaction."""
    lines = []
    for name, j in (detail.get("jobs") or {}).items():
        rate = j.get("rows_per_s") or 0
        attempt = j.get("attempt_rows", j.get("rows", 0))
        resumed = f" ({_n(attempt)} this attempt)" if attempt != j.get("rows") else ""
        lines.append(
            f"    {name:<15} {_n(j['rows']):>10} rows{resumed}, "
            f"{human_count(rate) + ' rows/s' if rate else 'rate -'} over {human_duration(j['seconds'])}; "
            f"{j['chunks']} chunks, longest transaction {j['longest_ms']:.0f} ms "
            f"(p50 {j['p50_ms']:.0f}, p99 {j['p99_ms']:.0f})"
            + (f"; reconciled {_n(j['reconciled'])}" if j.get("reconciled") else "")
        )
    return lines


def summary_lines(summary: Any) -> list[str]:
    """The summary of a finished run: one line per phase, one per backfill job."""
    lines = [
        f"run #{summary.run_id} {summary.status} in {human_duration(summary.seconds)}"
        + (
            " (joined: this process's share; the owner's summary and `bxbatch status` have the whole run)"
            if getattr(summary, "joined", False)
            else " (resumed: phases done earlier are not listed)"
            if summary.resumed
            else ""
        )
    ]
    for name, detail in summary.phases.items():
        lines.append(f"  {name:<12} {human_duration(detail.get('seconds', 0)):>8}  {phase_summary(name, detail)}")
        if name == "backfill":
            lines.extend(job_lines(detail))
    return lines
