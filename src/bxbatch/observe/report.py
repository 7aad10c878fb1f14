"""`bxbatch report`: the data of one run's report, read from the ledger (or its archive after a rollback).

Everything comes from the database, so a report can be drawn after the fact, from any host, after
the process died: the run and its phases, each job's chunks (throughput per time bucket, latency
distribution against the target), the throttle's decisions (holds and their reasons), the time
series (concurrency, chunk scale, duty, probe latency), index builds and constraint validations,
the plan's estimate taken when the run started, and the validation result. ``collect`` returns
plain JSON-able data (``report --json``); ``observe.html`` draws it.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bxbatch.errors import MigrationError, NothingToResume
from bxbatch.ledger import observations as obs
from bxbatch.migrations.loader import load_migration

MAX_BUCKETS = 400  # throughput points per job
MAX_DURATIONS = 2000  # chunk durations per job kept for the distribution


def _j(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _f(value: Any, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def throughput_bucket(span_s: float) -> float:
    """Seconds per throughput point: about 100 points over the backfill, at most MAX_BUCKETS, at least 0.25 s."""
    target = span_s / 100.0
    for step in (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0):
        if target <= step:
            return step
    return float(int(span_s / MAX_BUCKETS) + 1)


def throughput_series(chunks: list[tuple[str, float, float, int]]) -> tuple[float, dict[str, list[list[Any]]]]:
    """Rows/s per job per time bucket from (job, end epoch s, duration s, rows) of each committed chunk.

    A chunk's rows are spread evenly over its own duration (its statement wrote them then), so a
    bucket shorter than a chunk shows the real rate rather than a spike at the commit."""
    if not chunks:
        return 1.0, {}
    first = min(end - dur for _job, end, dur, _rows in chunks)
    last = max(end for _job, end, _dur, _rows in chunks)
    bucket = throughput_bucket(last - first)
    origin = math.floor(first / bucket) * bucket
    n = int((last - origin) / bucket) + 1
    sums: dict[str, list[float]] = {}
    for job, end, dur, rows in chunks:
        acc = sums.setdefault(job, [0.0] * n)
        start = end - dur
        assigned = 0.0
        k = max(0, int((start - origin) / bucket))
        while start < end and k < n:
            lo = origin + k * bucket
            overlap = min(end, lo + bucket) - max(start, lo)
            if overlap > 0:
                part = rows * overlap / (end - start)
                acc[k] += part
                assigned += part
            if lo + bucket >= end:
                break
            k += 1
        acc[min(n - 1, max(0, int((end - origin) / bucket)))] += rows - assigned  # float dust, or an instant chunk
    series = {
        job: [
            [datetime.fromtimestamp(origin + (k + 0.5) * bucket, tz=UTC).isoformat(), round(v / bucket, 1)]
            for k, v in enumerate(acc)
        ]
        for job, acc in sums.items()
    }
    return bucket, series


def _holds(events: list[dict[str, Any]], run_end: str | None) -> list[dict[str, Any]]:
    """Intervals during which a process's throttle held the run back, each with the decision's reason."""
    holds: list[dict[str, Any]] = []
    by_proc: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for e in events:
        by_proc.setdefault((e["host"], e["pid"]), []).append(e)
    for (host, pid), evs in by_proc.items():
        open_: dict[str, Any] | None = None
        for e in evs:
            held = e["paused"] or e["concurrency"] < e["max_concurrency"] or e["chunk_scale"] < 1
            if e["action"] == "stop":
                held = False
            if open_ is not None:
                open_["end"] = e["at"]
                holds.append(open_)
                open_ = None
            if held:
                open_ = {
                    "start": e["at"],
                    "end": None,
                    "host": host,
                    "pid": pid,
                    "paused": e["paused"],
                    "reason": e["reason"],
                    "signals": e["signals"],
                    "concurrency": e["concurrency"],
                    "max_concurrency": e["max_concurrency"],
                }
        if open_ is not None:
            open_["end"] = run_end or open_["start"]
            holds.append(open_)
    # consecutive decisions of one hold (cut after cut) are merged, keeping every reason
    merged: list[dict[str, Any]] = []
    for h in sorted(holds, key=lambda h: (h["host"], h["pid"], h["start"])):
        last = merged[-1] if merged else None
        same = last is not None and (last["host"], last["pid"], last["paused"]) == (h["host"], h["pid"], h["paused"])
        if last is not None and same and last["end"] == h["start"]:
            last["end"] = h["end"]
            if h["reason"] not in last["reasons"]:
                last["reasons"].append(h["reason"])
            last["min_concurrency"] = min(last["min_concurrency"], h["concurrency"])
        else:
            merged.append({**h, "reasons": [h["reason"]], "min_concurrency": h["concurrency"]})
    return merged


def _backfill_end(phases: list[dict[str, Any]]) -> str | None:
    """The throttle acts on the backfill only: a hold still open when it ended ends there."""
    return next((p["end"] for p in phases if p["name"] == "backfill" and p["end"]), None)


def _clip(holds: list[dict[str, Any]], end: str | None) -> list[dict[str, Any]]:
    if end is None:
        return holds
    stop = datetime.fromisoformat(end)
    kept = []
    for h in holds:
        if datetime.fromisoformat(h["start"]) >= stop:
            continue
        if h["end"] is None or datetime.fromisoformat(h["end"]) > stop:
            h["end"] = end
        kept.append(h)
    return kept


def _constraint_names(migration_dir: str | None) -> dict[tuple[str, int], str]:
    """(file, statement index) -> what the statement validates, for the timeline's labels ({}: the run's
    migration directory is not on this host)."""
    names: dict[tuple[str, int], str] = {}
    try:
        files = load_migration(migration_dir).ddl_files()
    except MigrationError:
        return names
    for f in files:
        if f.phase != "constraints":
            continue
        for idx, stmt in enumerate(f.statements):
            words = stmt.sql.split()
            upper = [w.upper() for w in words]
            label = " ".join(words[:6])
            if "CONSTRAINT" in upper and "VALIDATE" in upper:
                label = words[upper.index("CONSTRAINT") + 1].strip(";")
            names[(f.name, idx)] = label
    return names


async def _live_report(conn: asyncpg.Connection, run_id: int) -> dict[str, Any] | None:
    run = await obs.run_row(conn, run_id)
    if run is None:
        return None
    settings = _j(run["settings"]) or {}
    run_end = _iso(run["finished_at"] or run["updated_at"])
    phases = [
        {
            "name": p["name"],
            "status": p["status"],
            "start": _iso(p["started_at"]),
            "end": _iso(p["finished_at"]),
            "seconds": _f(p["seconds"]),
            "detail": {k: v for k, v in (_j(p["detail"]) or {}).items() if k != "jobs"},
        }
        for p in await obs.phases(conn, run_id)
    ]
    target_ms = float(settings.get("target_chunk_ms") or 300)
    jobs: list[dict[str, Any]] = []
    throughput: dict[str, list[list[Any]]] = {}
    durations: dict[str, list[float]] = {}
    bucket_s = 1.0
    if await obs.relation_exists(conn, "bxbatch.job"):
        for r in await obs.jobs(conn, run_id):
            span = None
            if r["first_start"] is not None and r["last_done"] is not None:
                span = (r["last_done"] - r["first_start"]).total_seconds()
            jobs.append(
                {
                    "job": r["job"],
                    "status": r["status"],
                    "rows": int(r["rows"]),
                    "reconciled": int(r["reconciled"]),
                    "expected": None if r["expected_rows"] is None else int(r["expected_rows"]),
                    "chunks": int(r["chunks"]),
                    "failed": int(r["failed"]),
                    "retries": int(r["retries"]),
                    "p50_ms": _f(r["p50_ms"], 1),
                    "p90_ms": _f(r["p90_ms"], 1),
                    "p99_ms": _f(r["p99_ms"], 1),
                    "max_ms": _f(r["max_ms"], 1),
                    "target_ms": target_ms,
                    "start": _iso(r["first_start"]),
                    "end": _iso(r["last_done"]),
                    "seconds": _f(span),
                    "rows_per_s": _f(int(r["rows"]) / span, 1) if span else None,
                }
            )
        bucket_s, throughput = throughput_series(
            [
                (r["job"], float(r["done"]), float(r["duration_ms"] or 0.0) / 1000.0, int(r["rows"]))
                for r in await obs.chunk_times(conn, run_id)
            ]
        )
        for r in await obs.chunk_durations(conn, run_id, MAX_DURATIONS):
            durations[r["job"]] = [round(float(v), 2) for v in r["ms"]]
    events: list[dict[str, Any]] = []
    if await obs.relation_exists(conn, "bxbatch.throttle_event"):
        events = [
            {
                "at": _iso(e["at"]),
                "host": e["host"],
                "pid": e["pid"],
                "action": e["action"],
                "concurrency": e["concurrency"],
                "max_concurrency": e["max_concurrency"],
                "chunk_scale": e["chunk_scale"],
                "paused": e["paused"],
                "reason": e["reason"],
                "signals": _j(e["signals"]),
            }
            for e in await obs.throttle_events(conn, run_id)
        ]
    samples: dict[str, dict[str, list[Any]]] = {}
    if await obs.relation_exists(conn, "bxbatch.sample"):
        for s in await obs.samples(conn, run_id):
            series = samples.setdefault(
                f"{s['host']}:{s['pid']}",
                {
                    k: []
                    for k in (
                        "at",
                        "phase",
                        "concurrency",
                        "max_concurrency",
                        "chunk_scale",
                        "duty",
                        "mode",
                        "reason",
                        "probe_ms",
                        "probe_baseline_ms",
                        "signals",
                        "indexes",
                    )
                },
            )
            for key in series:
                value = s[key]
                if key == "at":
                    value = _iso(value)
                elif key in ("signals", "indexes"):
                    value = _j(value)
                series[key].append(value)
    timeline = [
        {"kind": "phase", "name": p["name"], "start": p["start"], "end": p["end"] or run_end, "status": p["status"]}
        for p in phases
    ]
    if await obs.relation_exists(conn, "bxbatch.index_build"):
        for b in await obs.index_builds(conn, run_id):
            if b["action"] == "skip_valid":
                continue
            timeline.append(
                {
                    "kind": "index",
                    "name": b["index_name"],
                    "start": _iso(b["started_at"]),
                    "end": _iso(b["finished_at"]) or run_end,
                    "status": b["status"],
                    "detail": f"on {b['table_name']}, attempt {b['attempt']}, waited {b['waited_ms'] or 0} ms",
                }
            )
    names = _constraint_names(settings.get("migration"))
    for c in await obs.constraint_statements(conn, run_id):
        end: datetime = c["applied_at"]
        start = end.timestamp() - float(c["duration_ms"]) / 1000.0
        timeline.append(
            {
                "kind": "constraint",
                "name": names.get((c["file"], c["idx"]), f"{c['file']}#{c['idx']}"),
                "start": datetime.fromtimestamp(start, tz=end.tzinfo).isoformat(),
                "end": _iso(end),
                "status": "done",
                "detail": f"{c['file']} statement {c['idx'] + 1}",
            }
        )
    estimate = None
    if await obs.relation_exists(conn, "bxbatch.run_estimate"):
        raw = await obs.estimate(conn, run_id)
        estimate = _j(raw) if raw is not None else None
    validation = None
    if await obs.relation_exists(conn, "bxbatch.validation_result"):
        v = await obs.validation(conn, run_id)
        if v is not None:
            validation = {"checked_at": _iso(v["checked_at"]), **(_j(v["result"]) or {})}
    comparison = []
    actual = {p["name"]: p["seconds"] for p in phases if p["status"] == "done"}
    for p in (estimate or {}).get("phases", []):
        comparison.append({"phase": p["phase"], "estimate_s": p["est_seconds"], "actual_s": actual.get(p["phase"])})
    return {
        "format": "bxbatch-report/1",
        "run": {
            "id": int(run["id"]),
            "status": run["status"],
            "command": run["command"],
            "host": run["host"],
            "pid": run["pid"],
            "version": run["bxbatch_version"],
            "start": _iso(run["started_at"]),
            "end": run_end,
            "finished": run["finished_at"] is not None,
            "seconds": _f(run["seconds"]),
            "error": run["error"],
            "settings": {
                k: settings.get(k)
                for k in (
                    "concurrency",
                    "target_chunk_ms",
                    "max_rows_per_second",
                    "throttle",
                    "ramp_up",
                    "probe_sql",
                    "probe_max_ratio",
                    "probe_min_ms",
                    "index_concurrency",
                    "host",
                )
                if k in settings
            },
        },
        "phases": phases,
        "jobs": jobs,
        "throughput": {"bucket_s": bucket_s, "series": throughput},
        "chunk_durations_ms": durations,
        "throttle_events": events,
        "holds": _clip(_holds(events, _backfill_end(phases) or run_end), _backfill_end(phases)),
        "samples": samples,
        "timeline": timeline,
        "estimate": estimate,
        "estimate_vs_actual": comparison,
        "validation": validation,
    }


async def collect(conn: asyncpg.Connection, run_id: int | None = None) -> dict[str, Any]:
    """The report data of run ``run_id`` (default: the newest), from the ledger, else from the archive."""
    if run_id is None:
        run_id = await obs.latest_run_id(conn)
        if run_id is None:
            raise NothingToResume("no bxbatch run recorded in this database", hint="start one with `bxbatch run`")
    if await obs.relation_exists(conn, "bxbatch.run"):
        data = await _live_report(conn, run_id)
        if data is not None:
            return data
    if await obs.relation_exists(conn, "bxbatch_history.run"):
        raw = await obs.archived_report(conn, run_id)
        if raw is not None:
            data = _j(raw)
            data["archived"] = True
            return dict(data)
    raise NothingToResume(f"no run #{run_id} in this database", hint="`bxbatch history` lists the runs")


async def write_report(conn: asyncpg.Connection, run_id: int | None, path: str) -> str:
    """Write the run's self-contained HTML report to ``path``; returns the path written."""
    from bxbatch.observe.html import render

    data = await collect(conn, run_id)
    return _write(Path(path), data["run"]["id"], render(data))


def _write(out: Path, run_id: int, page: str) -> str:
    if out.is_dir():
        out = out / f"bxbatch-run-{run_id}.html"
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return str(out)
