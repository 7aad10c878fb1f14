"""Control from anywhere: the operator's control row, the throttle's ledger records, and the run's safety guard.

``bxbatch pause|continue|cancel|set concurrency=N`` (any host) write ``bxbatch.control`` and
``NOTIFY bxbatch_control``; every process of the run reads the row on its own connection about
every ``control_interval_s`` and at once on the notification, so workers obey before their next
chunk. The same loop writes the throttle's state and decisions to the ledger for ``status``.

``guard`` wraps the engine's work: health monitor, control loop, signal registration, and a
final, shielded, time-bounded save of the throttle's state.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from bxbatch.db.retry import Retry, RetryPolicy, retry
from bxbatch.db.session import connect
from bxbatch.errors import ConnectionFailed, Interrupted, NothingToResume, UsageError
from bxbatch.ledger import control as cl
from bxbatch.live import stopping
from bxbatch.live.health import HealthMonitor
from bxbatch.live.throttle import Throttle
from bxbatch.observe.observer import current as observer
from bxbatch.settings import MAX_CONCURRENCY, Settings

CHANNEL = "bxbatch_control"
ACTIONS = ("pause", "continue", "cancel", "set", "hold", "release")
# The control reader outlives a server restart: it reconnects with backoff, for as long as the run lasts,
# and logs the first failure of an outage only.
CONTROL_RECONNECT = RetryPolicy(
    event="control_unavailable", also=(ConnectionFailed,), max_attempts=None, base_ms=200, max_ms=5_000, first_only=True
)


class ControlLoop:
    """Reads the control row and applies it to the throttle; writes the throttle's state and decisions."""

    def __init__(
        self, settings: Settings, run_id: int, throttle: Throttle, log: Any, monitor: HealthMonitor | None = None
    ) -> None:
        self.monitor = monitor  # its thresholds follow `bxbatch set max_*=...`
        self.settings = settings
        self.run_id = run_id
        self.throttle = throttle
        self.log = log
        self.pid = os.getpid()
        self._wake = asyncio.Event()
        self.seen: tuple[str, int | None] | None = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if str(payload) in (str(self.run_id), ""):
            self._wake.set()

    def apply(self, state: str, concurrency: int | None, by: str | None, knobs: dict[str, Any] | None = None) -> None:
        """Make the throttle match the control row (idempotent: called on every poll)."""
        who = f" by {by}" if by else ""
        if knobs:
            self.throttle.apply_knobs(knobs, f"set{who}")
            if self.monitor is not None:
                thresholds = {k: v for k, v in knobs.items() if k in THRESHOLD_KNOBS}
                if thresholds:
                    self.monitor.settings = self.monitor.settings.with_(**thresholds)
        if concurrency is not None:
            self.throttle.set_ceiling(concurrency, f"concurrency set to {concurrency}{who}")
        if state == "paused":
            self.throttle.operator_pause(f"paused{who} (`bxbatch continue` resumes)")
        elif state == "running":
            self.throttle.operator_continue(f"continued{who}")
        elif state == "cancelled":
            self.throttle.request_stop(f"cancelled{who}")
        if self.seen != (state, concurrency):
            self.seen = (state, concurrency)

    async def poll_once(self, conn: asyncpg.Connection) -> None:
        row = await cl.control_row(conn, self.run_id)
        if row is not None:
            knobs = row["knobs"]
            self.apply(
                row["state"],
                row["concurrency"],
                row["updated_by"],
                json.loads(knobs) if isinstance(knobs, str) else knobs,
            )
        if self.throttle.rate_total > 0:  # the rate limit is the run's: shared by its live processes
            self.throttle.set_processes(await cl.live_processes(conn, self.run_id, 3.0))
        await self.save(conn)

    async def save(self, conn: asyncpg.Connection) -> None:
        state = self.throttle.state()
        unsaved, self.throttle.unsaved = self.throttle.unsaved, []
        try:
            async with conn.transaction():
                await cl.save_throttle_state(conn, self.run_id, self.settings.host, self.pid, state)
                if unsaved:
                    await cl.add_throttle_events(
                        conn, self.run_id, self.settings.host, self.pid, [d.as_dict() for d in unsaved]
                    )
        except BaseException:
            self.throttle.unsaved[:0] = unsaved  # keep them for the next attempt
            raise

    async def run(self) -> None:
        conn: asyncpg.Connection | None = None

        async def poll() -> None:
            nonlocal conn
            if conn is None or conn.is_closed():
                conn = await connect(self.settings, role="control")
                await conn.add_listener(CHANNEL, self._on_notify)
            await self.poll_once(conn)

        def lost(_scheduled: Retry) -> None:
            nonlocal conn
            if conn is not None:
                conn.terminate()
                conn = None

        try:
            while True:  # a poller: one read of the control row per interval (its reconnects go through retry)
                await retry(poll, CONTROL_RECONNECT, log=self.log, on_retry=lost)
                self._wake.clear()
                with anyio.move_on_after(self.settings.control_interval_s):
                    await self._wake.wait()
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(3):
                    try:
                        await self.save(conn)
                    except Exception as exc:
                        self.log.warning("throttle_state_not_saved", error=type(exc).__name__)
                    await conn.close()


@asynccontextmanager
async def guard(settings: Settings, run_id: int, throttle: Throttle, log: Any) -> AsyncIterator[HealthMonitor | None]:
    """Health signals, the control loop and signal-driven stopping around the engine's work."""
    if throttle.log is None:
        throttle.log = log
    observer().attach_throttle(throttle)
    monitor: HealthMonitor | None = None
    if settings.throttle:
        monitor = HealthMonitor(settings, throttle.observe, log)
        await monitor.measure_baseline()
        observer().attach_health(monitor)
    control = ControlLoop(settings, run_id, throttle, log, monitor)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(control.run, name="control")
            if monitor is not None:
                tg.start_soon(monitor.run, name="health")
            with stopping.registered(throttle):
                try:
                    yield monitor
                finally:
                    tg.cancel_scope.cancel()
                    observer().attach_throttle(None)  # the throttle acts on the backfill only
    except BaseExceptionGroup as group:
        # the engine's own error (or a dead helper's) as itself, not wrapped by our task group
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def between_phases(conn: asyncpg.Connection, run_id: int, settings: Settings, log: Any, phase: str) -> None:
    """Outside the backfill (whose workers obey the control row chunk by chunk), obey it between phases:
    wait while paused or held before this phase (`bxbatch hold-before`), stop (resumable) when cancelled."""
    if not await cl.control_table_present(conn):
        return
    announced: str | None = None
    while True:  # a poller: until the control row lets this phase go (not a retry)
        row = await cl.control_row(conn, run_id)
        held = row is not None and row["hold_before"] == phase
        if row is None or (row["state"] == "running" and not held):
            if announced:
                log.info("control_continued", phase=phase, by=row["updated_by"] if row else None)
            return
        if row["state"] == "cancelled":
            raise Interrupted(
                f"cancelled by {row['updated_by'] or 'an operator'} before phase {phase}",
                hint="run `bxbatch resume` to continue",
            )
        what = "held" if held else "paused"
        if announced != what:
            hint = "`bxbatch release` lets it go on" if held else "`bxbatch continue` resumes"
            log.warning(f"control_{what}", phase=phase, by=row["updated_by"], hint=hint)
            announced = what
        await anyio.sleep(settings.control_interval_s)


# --- what the operator commands call -------------------------------------------------------------
# `bxbatch set KEY=VALUE`: each knob with its type, its bounds and what it means.
THRESHOLD_KNOBS = {
    "max_blocked_sessions": (int, 0, "sessions waiting on bxbatch's locks"),
    "max_replication_lag_bytes": (int, 0, "standby replay lag, bytes"),
    "max_replication_lag_s": (float, 0, "standby replay lag, seconds"),
    "max_wal_bytes_per_second": (int, 0, "WAL rate, bytes/s (0: not watched)"),
    "max_xmin_age_s": (float, 1, "oldest other transaction, seconds"),
    "max_active_backends": (int, 0, "other active backends (0: half of max_connections)"),
    "critical_factor": (float, 1, "a signal this many times over its threshold pauses"),
    "probe_max_ratio": (float, 1, "probe latency over its baseline"),
}
KNOBS: dict[str, tuple[type, float, str]] = {
    "concurrency": (int, 1, "workers per process, at most what the run started with"),
    "target_chunk_ms": (int, 10, "chunk duration the adaptive size aims for"),
    "min_chunk_rows": (int, 1, "floor of the chunk size"),
    "max_chunk_rows": (int, 1, "ceiling of the chunk size"),
    "max_rows_per_second": (float, 0, "rate limit over the workers of each process (0: none)"),
    "throttle": (bool, 0, "on/off: act on the health signals"),
    **THRESHOLD_KNOBS,
}
ALIASES = {"chunk_ms": "target_chunk_ms", "rows_per_second": "max_rows_per_second", "rate": "max_rows_per_second"}


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["concurrency=2", "throttle=off"]`` -> typed values within each knob's own range (no run needed).

    Raises UsageError (exit 2) naming the knob and the accepted range; nothing is clamped.
    """
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = ALIASES.get(key.strip().replace("-", "_"), key.strip().replace("-", "_"))
        raw = raw.strip()
        shown = repr(item[:60])
        if not sep or key not in KNOBS:
            raise UsageError(
                f"cannot set {shown}", hint="KEY=VALUE, e.g. concurrency=N; KEY one of " + ", ".join(KNOBS)
            )
        type_, low, what = KNOBS[key]
        high = MAX_CONCURRENCY if key == "concurrency" else None
        value: Any
        try:
            if type_ is bool:
                if raw.lower() not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value = raw.lower() in ("on", "true", "1", "yes")
            elif type_ is int:
                value = int(raw)
            else:
                value = float(raw)
        except ValueError:
            example = "on" if type_ is bool else int(low) or 1
            raise UsageError(
                f"cannot set {shown}: not a valid {type_.__name__}", hint=f"e.g. {key}={example}"
            ) from None
        bounds = f"use {key}=N with {low:g} <= N <= {high}" if high else what
        if type_ is not bool and value < low:
            raise UsageError(f"cannot set {shown}: below its minimum {low:g}", hint=bounds)
        if high is not None and value > high:
            raise UsageError(f"cannot set {shown}: above its maximum {high}", hint=bounds)
        out[key] = value
    return out


def parse_knobs(
    assignments: list[str], run_settings: dict[str, Any], current: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Typed values (``parse_assignments``), then checked against what this run can honour."""
    out = parse_assignments(assignments)
    started = int(run_settings.get("concurrency") or 0)
    if "concurrency" in out and started and out["concurrency"] > started:
        raise UsageError(
            f"concurrency={out['concurrency']} is more than the {started} workers per process the run started with",
            hint=f"set at most concurrency={started}; for more, cancel and resume with a higher --concurrency",
        )
    if out.get("throttle") and run_settings.get("throttle") is False:
        raise UsageError(
            "throttle=on: the run started with --no-throttle and watches no health signals",
            hint="cancel and resume it with --throttle",
        )
    now = {**run_settings, **(current or {})}  # what the run uses now: its options and earlier `set`s
    low_rows = out.get("min_chunk_rows", now.get("min_chunk_rows", 1))
    high_rows = out.get("max_chunk_rows", now.get("max_chunk_rows", low_rows))
    if low_rows > high_rows:
        raise UsageError(
            f"min_chunk_rows {low_rows} is above max_chunk_rows {high_rows}",
            hint="keep min_chunk_rows <= max_chunk_rows",
        )
    return out


async def send(
    settings: Settings,
    action: str,
    concurrency: int | None = None,
    *,
    assignments: list[str] | None = None,
    phase: str | None = None,
) -> dict[str, Any]:
    """Write the control row of the newest unfinished run and notify its processes."""
    if action not in ACTIONS:
        raise UsageError(f"unknown control action {action!r}", hint=", ".join(ACTIONS))
    if action == "set" and concurrency is not None:
        assignments = [*(assignments or []), f"concurrency={concurrency}"]
    if action == "set" and not assignments:
        raise UsageError("set needs KEY=VALUE", hint="e.g. bxbatch set concurrency=2 max_rows_per_second=500")
    state = {"pause": "paused", "continue": "running", "cancel": "cancelled"}.get(action)
    by = f"{settings.host}:{os.getpid()}"
    conn = await connect(settings, role="control-cli")
    try:
        if not await cl.control_table_present(conn):
            raise NothingToResume("no bxbatch run in this database", hint="start one with `bxbatch run`")
        async with conn.transaction():
            run = await cl.target_run(conn)
            if run is None:
                raise NothingToResume(
                    "no unfinished bxbatch run to control", hint="`bxbatch status` shows the last run"
                )
            run_settings = json.loads(run["settings"]) if isinstance(run["settings"], str) else dict(run["settings"])
            if action == "set":
                current = await cl.control_row(conn, run["id"])
                now = json.loads(current["knobs"]) if current is not None else {}  # earlier `set`s count
                knobs = parse_knobs(assignments or [], run_settings, now)
                row = await cl.set_knobs(conn, run["id"], knobs.get("concurrency"), knobs, by)
            elif action in ("hold", "release"):
                row = await cl.set_hold(conn, run["id"], phase if action == "hold" else None, by)
            else:
                row = await cl.set_state(conn, run["id"], state, by)
            await cl.notify(conn, run["id"])
        assert row is not None
        knobs_now = row["knobs"]
        return {
            "run_id": int(run["id"]),
            "run_status": run["status"],
            "state": row["state"],
            "concurrency": row["concurrency"],
            "knobs": json.loads(knobs_now) if isinstance(knobs_now, str) else (knobs_now or {}),
            "hold_before": row["hold_before"],
        }
    finally:
        await conn.close()


async def prepare_attempt(conn: asyncpg.Connection, run_id: int, settings: Settings) -> str | None:
    """At the start of a (re)attempt: a cancel and a `set` are spent; a pause stays. Returns the state."""
    if not await cl.control_table_present(conn):
        return None
    await cl.reset_cancelled(conn, run_id, f"{settings.host}:{os.getpid()} (new attempt)")
    return await cl.control_state(conn, run_id)


# --- what `bxbatch status` shows ------------------------------------------------------------------
async def status_section(conn: asyncpg.Connection, run_id: int | None, live_seconds: float = 10.0) -> dict[str, Any]:
    if run_id is None or not await cl.control_table_present(conn):
        return {"control": None, "throttle": [], "throttle_events": [], "failed_keys": [], "failed_key_count": 0}
    row = await cl.control_row(conn, run_id)
    control = dict(row) if row else None
    if control is not None:
        control["knobs"] = json.loads(control["knobs"]) if isinstance(control["knobs"], str) else control["knobs"]
    states = await cl.throttle_states(conn, run_id, live_seconds)
    for s in states:
        s["signals"] = json.loads(s["signals"]) if isinstance(s["signals"], str) else s["signals"]
    events = await cl.recent_throttle_events(conn, run_id, 5)
    for e in events:
        e["signals"] = json.loads(e["signals"]) if isinstance(e["signals"], str) else e["signals"]
    keys = await cl.failed_keys(conn, run_id, 50)
    return {
        "control": control,
        "throttle": states,
        "throttle_events": events,
        "failed_keys": keys,
        "failed_key_count": await cl.count_failed_keys(conn, run_id),
    }


def render_status_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    control = report.get("control")
    if control and (control["state"] != "running" or control["concurrency"] is not None):
        extra = f", concurrency ceiling {control['concurrency']}" if control["concurrency"] else ""
        by = f" by {control['updated_by']}" if control["updated_by"] else ""
        lines.append(f"control: {control['state']}{extra} (set {control['updated_at']:%H:%M:%S}{by})")
    if control and control.get("knobs"):
        lines.append("live knobs: " + ", ".join(f"{k}={v}" for k, v in control["knobs"].items()))
    if control and control.get("hold_before"):
        lines.append(f"hold: the run waits before phase {control['hold_before']} (`bxbatch release` lets it go on)")
    for s in report.get("throttle", []):
        if not s["live"]:
            continue
        if s["stopping"]:
            what = f"stopping: {s['reason']}"
        elif s["paused"] or s["concurrency"] < s["max_concurrency"] or s["chunk_scale"] < 1:
            what = s["reason"] or "throttled"
        else:
            what = "full speed"
        lines.append(
            f"throttle {s['host']}:{s['pid']}: concurrency {s['concurrency']}/{s['max_concurrency']}, "
            f"chunk scale {s['chunk_scale']:.2g}; {what}"
            + (
                f" (paused {s['paused_seconds']:.0f}s, held back {s['throttled_seconds']:.0f}s)"
                if s["paused_seconds"] or s["throttled_seconds"]
                else ""
            )
        )
    count = report.get("failed_key_count", 0)
    if count:
        lines.append(f"failed keys: {count} (fix the rows, then `bxbatch resume` retries them)")
        for k in report.get("failed_keys", []):
            table = f" {k['relname']}" if k["relname"] else ""
            lines.append(f"  {k['job']}{table} key {k['key']}: {k['error']}")
    return lines
