"""The observer: what the engine tells about a run as it goes (the one hook interface it calls).

The engine, the phases and the index monitor call ``current()`` and report events on it
(``chunk``, ``retry``, ``phase``, ``index_progress``) or hand it their live objects
(``attach_throttle``, ``attach_health``). The default observer does nothing, so library
callers and benchmarks that open no observatory pay one attribute lookup. A run's observatory
(``observe.observatory``) sets a ``RunObserver`` for its task tree: its counters feed the
Prometheus endpoint and its ``snapshot`` the ledger's time series. Events are plain in-memory
updates (no I/O, no lock held across an await): the hot path stays a few microseconds.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


class Observer:
    """Does nothing: what runs without an observatory (library calls, benchmarks of one job) see."""

    def phase(self, name: str, status: str) -> None:
        """A phase of the run started (``running``) or ended (``done``, ``failed``, ``skipped``)."""

    def chunk(self, job: str, kind: str, status: str, rows: int, seconds: float) -> None:
        """A chunk finished: ``status`` done / split / failed / gone; ``kind`` main / catchup / reconcile."""

    def retry(self, error_class: str) -> None:
        """A chunk is retried after an error of class transient / connection / data (db/retry.py)."""

    def index_progress(self, index: str, table: str, phase: str, done: int, total: int, unit: str) -> None:
        """A sample of an index build (pg_stat_progress_create_index)."""

    def index_finished(self, index: str) -> None:
        """An index build ended (done or failed): it leaves the gauges."""

    def attach_throttle(self, throttle: Any) -> None:
        """The live throttle of this process (read at scrape and sample time)."""

    def attach_health(self, monitor: Any) -> None:
        """The live health monitor of this process (its probe baseline)."""


NOOP = Observer()
_CURRENT: ContextVar[Observer] = ContextVar("bxbatch_observer", default=NOOP)


def current() -> Observer:
    """The observer of the run this task belongs to (a no-op outside an observatory)."""
    return _CURRENT.get()


def install(observer: Observer) -> Any:
    """Make ``observer`` current for this task and the tasks it starts; returns the token for ``uninstall``."""
    return _CURRENT.set(observer)


def uninstall(token: Any) -> None:
    _CURRENT.reset(token)


@dataclass
class JobCounts:
    rows: dict[str, int] = field(default_factory=dict)  # by pass kind: main / catchup / reconcile
    chunks: dict[str, int] = field(default_factory=dict)  # by outcome: done / split / failed / gone
    expected: int | None = None
    eta_s: float | None = None


@dataclass
class IndexState:
    table: str
    phase: str
    done: int
    total: int
    unit: str
    started: float = field(default_factory=time.time)


class RunObserver(Observer):
    """One process's view of a run: counters and live objects, read by the metrics and the sampler."""

    def __init__(self, run_id: int, host: str, pid: int, command: str) -> None:
        self.run_id = run_id
        self.host = host
        self.pid = pid
        self.command = command
        self.current_phase: str | None = None
        self.phases: dict[str, str] = {}
        self.jobs: dict[str, JobCounts] = {}
        self.retries: dict[str, int] = {}
        self.indexes: dict[str, IndexState] = {}
        self.throttle: Any = None
        self.health: Any = None
        self.metrics: Any = None  # observe.metrics.Metrics when a port is served
        self.last_view: dict[str, Any] | None = None  # the throttle view of the last sample (metrics' gauges)

    def job(self, job: str) -> JobCounts:
        counts = self.jobs.get(job)
        if counts is None:
            counts = self.jobs[job] = JobCounts()
        return counts

    def phase(self, name: str, status: str) -> None:
        self.phases[name] = status
        if status == "running":
            self.current_phase = name
        elif self.current_phase == name:
            self.current_phase = None

    def chunk(self, job: str, kind: str, status: str, rows: int, seconds: float) -> None:
        counts = self.job(job)
        counts.chunks[status] = counts.chunks.get(status, 0) + 1
        if status == "done":
            counts.rows[kind] = counts.rows.get(kind, 0) + rows
        if self.metrics is not None:
            self.metrics.chunk(job, kind, status, rows, seconds)

    def retry(self, error_class: str) -> None:
        self.retries[error_class] = self.retries.get(error_class, 0) + 1
        if self.metrics is not None:
            self.metrics.retry(error_class)

    def index_progress(self, index: str, table: str, phase: str, done: int, total: int, unit: str) -> None:
        state = self.indexes.get(index)
        if state is None:
            self.indexes[index] = IndexState(table, phase, done, total, unit)
        else:
            state.phase, state.done, state.total, state.unit = phase, done, total, unit

    def index_finished(self, index: str) -> None:
        self.indexes.pop(index, None)

    def attach_throttle(self, throttle: Any) -> None:
        self.throttle = throttle

    def attach_health(self, monitor: Any) -> None:
        self.health = monitor

    # --- what the sampler and the metrics read ------------------------------------------------
    def throttle_view(self) -> dict[str, Any] | None:
        """The throttle's state and every signal's latest reading (None outside the backfill)."""
        t = self.throttle
        if t is None:
            return None
        state = t.state()
        bad = t.bad_signals()
        if state["stopping"]:
            mode = "stopping"
        elif state["paused"]:
            mode = "paused"
        elif t.throttled:
            mode = "throttled"
        else:
            mode = "full_speed"
        return {
            "mode": mode,
            "holding": ",".join(sorted({s.name for s in bad})),
            "reason": state["reason"] if mode != "full_speed" else None,
            "concurrency": state["concurrency"],
            "max_concurrency": state["max_concurrency"],
            "chunk_scale": state["chunk_scale"],
            "duty": state["duty"],
            "paused_seconds": state["paused_seconds"],
            "throttled_seconds": state["throttled_seconds"],
            "signals": {
                s.name: {"value": s.value, "limit": s.limit, "critical": s.critical, "unit": s.unit}
                for s in t.signals()
            },
        }

    def probe_baseline_ms(self) -> float | None:
        return None if self.health is None else self.health.baseline_ms

    def snapshot(self) -> dict[str, Any]:
        """One sample of the time series (a row of ``bxbatch.sample``)."""
        view = self.throttle_view()
        if view is not None:
            view["probe_baseline_ms"] = self.probe_baseline_ms()
        self.last_view = view
        signals = view["signals"] if view else {}
        probe = signals.get("probe_latency")
        return {
            "at": time.time(),
            "phase": self.current_phase,
            "concurrency": view["concurrency"] if view else None,
            "max_concurrency": view["max_concurrency"] if view else None,
            "chunk_scale": view["chunk_scale"] if view else None,
            "duty": view["duty"] if view else None,
            "mode": view["mode"] if view else None,
            "reason": view["reason"] if view else None,
            "signals": {k: round(v["value"], 4) for k, v in signals.items()},
            "probe_ms": None if probe is None else round(probe["value"], 3),
            "probe_baseline_ms": self.probe_baseline_ms(),
            "rows": {job: sum(c.rows.values()) for job, c in self.jobs.items()},
            "indexes": {
                name: {"phase": s.phase, "done": s.done, "total": s.total, "unit": s.unit}
                for name, s in self.indexes.items()
            },
        }
