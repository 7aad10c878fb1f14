"""The index build monitor: polls pg_stat_progress_create_index for one build and says who holds it up.

A second connection samples the build's backend about once a second, drives a tqdm bar per index
(phase, blocks and tuples done/total, percent, ETA), logs ``index_progress`` events, and when the
build waits for lockers or old snapshots, names the backends it waits for (pid, application,
state, transaction age, query start) so the operator knows what to end.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio
import asyncpg

from bxbatch.db.retry import is_connection_lost
from bxbatch.db.session import connect
from bxbatch.db.sqlfiles import queries
from bxbatch.ledger import ddl as ddl_ledger
from bxbatch.observe import progress
from bxbatch.observe.observer import current as observer
from bxbatch.settings import Settings

Q = queries("monitor")
LOCK_WAIT_PHASE = "waiting for a lock on the table"  # not a server phase: before the first progress row


@dataclass(frozen=True)
class ProgressSample:
    """One row of pg_stat_progress_create_index, taken at ``at`` (server epoch seconds)."""

    pid: int
    phase: str
    at: float
    blocks_total: int = 0
    blocks_done: int = 0
    tuples_total: int = 0
    tuples_done: int = 0
    lockers_total: int = 0
    lockers_done: int = 0
    current_locker_pid: int | None = None
    index_name: str | None = None
    table_name: str | None = None

    @property
    def waiting(self) -> bool:
        return self.phase.startswith("waiting")

    @property
    def unit(self) -> str:
        """What the current phase counts: blocks when the server reports them, else tuples."""
        return "blocks" if self.blocks_total > 0 else "tuples"

    @property
    def done_total(self) -> tuple[int, int]:
        if self.blocks_total > 0:
            return self.blocks_done, self.blocks_total
        if self.tuples_total > 0:
            return self.tuples_done, self.tuples_total
        if self.lockers_total > 0:
            return self.lockers_done, self.lockers_total
        return 0, 0

    @property
    def percent(self) -> float | None:
        done, total = self.done_total
        return round(100.0 * min(done, total) / total, 1) if total > 0 else None

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "at": self.at,
            "blocks_done": self.blocks_done,
            "blocks_total": self.blocks_total,
            "tuples_done": self.tuples_done,
            "tuples_total": self.tuples_total,
        }

    @classmethod
    def from_row(cls, row: Any, pid_column: str = "pid") -> ProgressSample:
        return cls(
            pid=int(row[pid_column]),
            phase=str(row["phase"]),
            at=float(row["at"]),
            blocks_total=int(row["blocks_total"] or 0),
            blocks_done=int(row["blocks_done"] or 0),
            tuples_total=int(row["tuples_total"] or 0),
            tuples_done=int(row["tuples_done"] or 0),
            lockers_total=int(row["lockers_total"] or 0),
            lockers_done=int(row["lockers_done"] or 0),
            current_locker_pid=row["current_locker_pid"],
            index_name=row.get("index_name") if hasattr(row, "get") else None,
            table_name=row.get("table_name") if hasattr(row, "get") else None,
        )


def restarted_count(prev: ProgressSample | None, now: ProgressSample) -> bool:
    """Same phase, but the count fell back from its total: a new count started (see ``poll``)."""
    return (
        prev is not None
        and prev.phase == now.phase
        and prev.blocks_total > 0
        and prev.blocks_done >= prev.blocks_total
        and now.blocks_done < prev.blocks_done
    )


def eta_seconds(first: dict[str, Any] | ProgressSample | None, now: ProgressSample) -> float | None:
    """Seconds left in the current phase, from the rate since ``first`` (an earlier sample of that phase)."""
    if first is None:
        return None
    f = first.as_json() if isinstance(first, ProgressSample) else first
    if f.get("phase") != now.phase:
        return None
    done, total = now.done_total
    prev_done = int(f["blocks_done"] if now.blocks_total > 0 else f["tuples_done"])
    elapsed = now.at - float(f["at"])
    if elapsed <= 0 or done <= prev_done or total <= 0:
        return None
    rate = (done - prev_done) / elapsed
    return round(max(0, total - done) / rate, 1)


@dataclass(frozen=True)
class Blocker:
    """A backend a build waits for."""

    pid: int
    reasons: tuple[str, ...]
    application_name: str | None
    usename: str | None
    client_addr: str | None
    state: str | None
    backend_type: str | None
    xact_age_s: float | None
    xact_start: datetime | None
    query_start: datetime | None
    wait_event: str | None

    def describe(self) -> str:
        app = self.application_name or "unknown application"
        age = f", transaction open {self.xact_age_s:.0f}s" if self.xact_age_s is not None else ""
        started = f", query started {self.query_start:%H:%M:%S}" if self.query_start else ""
        return f"pid {self.pid} ({app}, {self.state or self.backend_type}{age}{started})"

    def as_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "reasons": list(self.reasons),
            "application_name": self.application_name,
            "usename": self.usename,
            "client_addr": self.client_addr,
            "state": self.state,
            "xact_age_s": round(self.xact_age_s, 1) if self.xact_age_s is not None else None,
            "xact_start": self.xact_start.isoformat() if self.xact_start else None,
            "query_start": self.query_start.isoformat() if self.query_start else None,
            "wait_event": self.wait_event,
        }


async def sample(conn: asyncpg.Connection, pid: int) -> ProgressSample | None:
    row = await conn.fetchrow(Q["progress_sample"], pid)
    return ProgressSample.from_row(row) if row is not None else None


async def blockers(conn: asyncpg.Connection, pid: int) -> list[Blocker]:
    """The backends build ``pid`` waits for (empty when it is not waiting on anyone)."""
    rows = await conn.fetch(Q["build_blockers"], pid)
    return [
        Blocker(
            pid=int(r["pid"]),
            reasons=tuple(r["reasons"] or ()),
            application_name=r["application_name"] or None,
            usename=r["usename"],
            client_addr=r["client_addr"],
            state=r["state"],
            backend_type=r["backend_type"],
            xact_age_s=r["xact_age_s"],
            xact_start=r["xact_start"],
            query_start=r["query_start"],
            wait_event=r["wait_event"],
        )
        for r in rows
    ]


@dataclass
class WatchResult:
    """What the monitor saw of one build."""

    samples: list[ProgressSample] = field(default_factory=list)
    blockers_seen: dict[int, Blocker] = field(default_factory=dict)
    waited_s: float = 0.0
    phases: list[str] = field(default_factory=list)


class IndexMonitor:
    """Watches one build's backend until ``stop`` is set. One instance per build."""

    def __init__(
        self,
        settings: Settings,
        log: Any,
        *,
        index_name: str,
        table_name: str,
        show_bar: bool,
        build_id: int | None = None,
        interval_s: float | None = None,
        log_every_s: float = 10.0,
        blocker_log_every_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self.log = log.bind(index=index_name, table=table_name)
        self.index_name = index_name
        self.table_name = table_name
        self.show_bar = show_bar
        self.build_id = build_id
        self.interval_s = settings.monitor_interval_s if interval_s is None else interval_s
        self.log_every_s = log_every_s
        self.blocker_log_every_s = blocker_log_every_s
        self.result = WatchResult()
        self._bar: Any = None
        self._phase_first: ProgressSample | None = None
        self._last_mono = 0.0
        self._last_blocker_log = 0.0
        self._last_blocker_pids: frozenset[int] = frozenset()

    async def watch(self, conn: asyncpg.Connection | None, pid: int, stop: anyio.Event) -> WatchResult:
        """Poll until ``stop`` is set. ``conn`` None: open (and reopen) a connection of its own."""
        own = conn is None
        try:
            while not stop.is_set():
                try:
                    if conn is None or conn.is_closed():
                        conn = await connect(self.settings, role="monitor")
                    await self.poll(conn, pid)
                except Exception as exc:
                    # Losing the monitor's connection must not cost a long build: log and reconnect.
                    if not is_connection_lost(exc):
                        raise
                    self.log.warning("index_monitor_reconnect", error=type(exc).__name__)
                    if conn is not None and not own:
                        own = True  # the caller's connection is gone: from now on we own a new one
                    conn = None
                with anyio.move_on_after(self.interval_s):
                    await stop.wait()
        finally:
            observer().index_finished(self.index_name)
            if self.result.samples and self.result.samples[-1].waiting:
                self.result.waited_s += time.monotonic() - self._last_mono
            if self._bar is not None:
                self._bar.close()
            if own and conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close()
        return self.result

    async def poll(self, conn: asyncpg.Connection, pid: int) -> ProgressSample | None:
        s = await sample(conn, pid)
        if s is None:
            # Before its first progress report a build takes its table lock (SHARE UPDATE
            # EXCLUSIVE): a session holding a conflicting lock stalls it there.
            at = await conn.fetchval(Q["backend_lock_wait"], pid)
            if at is None:
                return None
            s = ProgressSample(pid=pid, phase=LOCK_WAIT_PHASE, at=float(at))
        now = time.monotonic()
        prev = self.result.samples[-1] if self.result.samples else None
        self.result.samples.append(s)
        if prev is not None and prev.waiting:
            self.result.waited_s += now - self._last_mono
        self._last_mono = now
        phase_changed = prev is None or prev.phase != s.phase
        if phase_changed:
            self._phase_first = s
            self.result.phases.append(s.phase)
        elif restarted_count(prev, s):
            # A synchronized heap scan that starts mid-table (another scan of the table is under
            # way, common on a live database) reports blocks_done = blocks_total at its first block,
            # then counts up from its start: measure the rate from here, or the ETA stays unknown.
            self._phase_first = s
        eta = eta_seconds(self._phase_first, s)
        waiting_for: list[Blocker] = []
        if s.waiting:
            waiting_for = await blockers(conn, pid)
            for b in waiting_for:
                self.result.blockers_seen[b.pid] = b
            pids = frozenset(b.pid for b in waiting_for)
            # An empty set is a locker that ended between the two queries: nothing to tell the operator.
            if pids and (pids != self._last_blocker_pids or now - self._last_blocker_log >= self.blocker_log_every_s):
                self.log.warning(
                    "index_waiting",
                    phase=s.phase,
                    lockers_done=s.lockers_done,
                    lockers_total=s.lockers_total,
                    blockers=[b.as_json() for b in waiting_for],
                    hint="end these sessions' transactions (or wait) for the build to continue",
                )
                self._last_blocker_pids = pids
                self._last_blocker_log = now
        # a debug event: the phase's heartbeat line (console.py) and the bar say how far a build is
        self.log.debug(
            "index_progress",
            phase=s.phase,
            blocks_done=s.blocks_done,
            blocks_total=s.blocks_total,
            tuples_done=s.tuples_done,
            tuples_total=s.tuples_total,
            percent=s.percent,
            eta_s=eta,
        )
        done, total = s.done_total
        observer().index_progress(self.index_name, self.table_name, s.phase, done, total, s.unit)
        if self.build_id is not None:
            await ddl_ledger.save_build_progress(conn, self.build_id, s.as_json())
        self._draw(s, phase_changed, waiting_for)
        return s

    def _draw(self, s: ProgressSample, phase_changed: bool, waiting_for: list[Blocker]) -> None:
        if not self.show_bar:
            return
        done, total = s.done_total
        if progress.another_open(self._bar):
            # a job's bar (the backfill phase's early builds run beside the loads) or another build's: this
            # one waits until the terminal is free, and shows again at the next sample after
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return
        if self._bar is None:
            self._bar = progress.bar(self.settings, total or None, f"{self.index_name}", unit=s.unit)
            phase_changed = True  # drawn from a later sample than the build's first: describe it whole
        if phase_changed:
            self._bar.reset(total=total or None)
            self._bar.unit = s.unit
            self._bar.set_description_str(f"{self.index_name}: {s.phase}", refresh=False)
        self._bar.n = min(done, total) if total else done
        postfix = f"blocks {s.blocks_done}/{s.blocks_total} tuples {s.tuples_done}/{s.tuples_total}"
        if waiting_for:
            postfix = "waiting for " + "; ".join(b.describe() for b in waiting_for[:3])
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()


async def builds_in_progress(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Ledger rows of running index builds with live figures and, when waiting, the blockers (for status)."""
    out: list[dict[str, Any]] = []
    for r in await ddl_ledger.running_builds(conn):  # none on a ledger older than the index phase
        item: dict[str, Any] = {
            k: r[k]
            for k in (
                "id",
                "run_id",
                "index_name",
                "table_name",
                "action",
                "attempt",
                "backend_pid",
                "host",
                "client_pid",
                "started_at",
                "table_rows_estimate",
                "live",
            )
        }
        item["running_s"] = round(float(r["running_s"]), 1)
        if r["live"]:
            s = ProgressSample.from_row(r, pid_column="backend_pid")
            last = json.loads(r["last_sample"]) if isinstance(r["last_sample"], str) else r["last_sample"]
            item.update(
                phase=s.phase,
                blocks_done=s.blocks_done,
                blocks_total=s.blocks_total,
                tuples_done=s.tuples_done,
                tuples_total=s.tuples_total,
                percent=s.percent,
                eta_s=eta_seconds(last, s),
                blockers=[b.as_json() for b in await blockers(conn, s.pid)] if s.waiting else [],
            )
        out.append(item)
    return out


def render_builds(builds: list[dict[str, Any]]) -> list[str]:
    """Lines for `bxbatch status`."""
    lines: list[str] = []
    for b in builds:
        if not b.get("live"):
            lines.append(
                f"  index {b['index_name']} on {b['table_name']}: recorded running (backend {b['backend_pid']}), "
                "but no build is in progress: the next run drops and rebuilds it"
            )
            continue
        pct = f"{b['percent']:.1f}%" if b.get("percent") is not None else "-"
        eta = f", ETA {b['eta_s']:.0f}s" if b.get("eta_s") is not None else ""
        lines.append(
            f"  index {b['index_name']} on {b['table_name']}: {b['phase']} {pct} "
            f"(blocks {b['blocks_done']}/{b['blocks_total']}, tuples {b['tuples_done']}/{b['tuples_total']}"
            f"{eta}, running {b['running_s']:.0f}s, backend {b['backend_pid']})"
        )
        for blk in b.get("blockers") or []:
            age = f"{blk['xact_age_s']:.0f}s" if blk.get("xact_age_s") is not None else "?"
            lines.append(
                f"    waiting for pid {blk['pid']} ({blk['application_name'] or 'unknown application'}, "
                f"{blk['state']}, transaction open {age}, query started {blk['query_start']})"
            )
    return lines
