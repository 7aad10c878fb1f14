"""Health signals: what the database says about the load bxbatch puts on it, polled on its own connections.

Signals (each with a threshold in Settings, a flag and an env var): sessions waiting on locks held
by bxbatch's backends, replication lag (bytes and seconds), WAL generation rate, the oldest other
transaction, active backends against a ceiling, and an optional application probe query whose
latency is compared with its own baseline measured before the run. The monitor only measures;
the Throttle turns readings into decisions.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import asyncpg

from bxbatch.db.retry import Retry, RetryPolicy, retry
from bxbatch.db.session import connect
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import ConnectionFailed, UsageError
from bxbatch.settings import Settings

Level = Literal["ok", "bad", "critical"]
Q = queries("health")
# A poller outlives a server restart or a failing probe: it reconnects with backoff for as long as the run
# lasts (any server error, our own ConnectionFailed), and logs the first failure of an outage only.
HEALTH_RECONNECT = RetryPolicy(
    event="health_unavailable",
    also=(asyncpg.PostgresError, ConnectionFailed),
    max_attempts=None,
    base_ms=200,
    max_ms=5_000,
    first_only=True,
)

LABELS = {
    "blocked_sessions": "sessions waiting on bxbatch's locks",
    "replication_lag_bytes": "replication lag",
    "replication_lag_s": "replication lag",
    "wal_rate": "WAL rate",
    "xmin_age": "oldest transaction",
    "active_backends": "active backends",
    "probe_latency": "probe latency",
    "lock_timeouts": "lock timeouts",
}


def _fmt(value: float, unit: str) -> str:
    if unit in ("bytes", "bytes/s"):
        suffix = "/s" if unit == "bytes/s" else ""
        for name, size in (("GB", 1024**3), ("MB", 1024**2), ("kB", 1024)):
            if abs(value) >= size:
                return f"{value / size:.3g} {name}{suffix}"
        return f"{value:.0f} B{suffix}"
    if unit == "s":
        return f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.0f}"


@dataclass(frozen=True)
class Signal:
    """One reading: value against its threshold (bad) and its critical level (pause)."""

    name: str
    value: float
    limit: float
    critical: float
    unit: str = ""

    @property
    def level(self) -> Level:
        if self.value > self.critical:
            return "critical"
        if self.value > self.limit:
            return "bad"
        return "ok"

    def describe(self) -> str:
        """e.g. ``replication lag 12 MB > 8 MB``."""
        label = LABELS.get(self.name, self.name.replace("_", " "))
        over = self.critical if self.level == "critical" else self.limit
        op = ">" if self.level != "ok" else "<="
        return f"{label} {_fmt(self.value, self.unit)} {op} {_fmt(over, self.unit)}"


def signals_from_snapshot(
    snap: dict[str, Any], settings: Settings, previous: tuple[float, float] | None, now: float
) -> list[Signal]:
    """Turn one ``health.snapshot`` row into signals. ``previous`` is the last (monotonic time, WAL LSN)."""
    f = settings.critical_factor
    out = [
        Signal(
            "blocked_sessions",
            float(snap["blocked_sessions"]),
            settings.max_blocked_sessions,
            settings.max_blocked_sessions + 3,
            "sessions",
        ),
        Signal(
            "replication_lag_bytes",
            float(snap["replication_lag_bytes"]),
            settings.max_replication_lag_bytes,
            settings.max_replication_lag_bytes * f,
            "bytes",
        ),
        Signal(
            "replication_lag_s",
            float(snap["replication_lag_s"]),
            settings.max_replication_lag_s,
            settings.max_replication_lag_s * f,
            "s",
        ),
        Signal("xmin_age", float(snap["xmin_age_s"]), settings.max_xmin_age_s, settings.max_xmin_age_s * f, "s"),
    ]
    ceiling = settings.max_active_backends or max(4, int(snap["max_connections"]) // 2)
    out.append(Signal("active_backends", float(snap["active_backends"]), ceiling, ceiling * f, "backends"))
    if settings.max_wal_bytes_per_second > 0 and previous is not None and now > previous[0]:
        rate = max(0.0, (float(snap["wal_lsn"]) - previous[1]) / (now - previous[0]))
        limit = float(settings.max_wal_bytes_per_second)
        out.append(Signal("wal_rate", rate, limit, limit * f, "bytes/s"))
    return out


async def check_probe(settings: Settings) -> None:
    """Refuse a --probe-sql that does not parse, fails, or writes, before the run changes anything.

    The probe's session is read-only (db: ``default_transaction_read_only`` for the "probe" role), so
    a probe that writes fails here rather than writing rows every second of the run.
    """
    if not settings.probe_sql:
        return
    conn = await connect(settings, role="probe")
    try:
        try:
            statement = await conn.prepare(settings.probe_sql)
            async with conn.transaction(readonly=True):
                await statement.fetch()
        except asyncpg.ReadOnlySQLTransactionError as exc:
            raise UsageError(
                "--probe-sql writes to the database; the probe must only read",
                hint="give a SELECT the application runs, e.g. --probe-sql 'SELECT count(*) FROM database_view'",
            ) from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            text = (getattr(exc, "message", None) or str(exc)).splitlines()[0]
            raise UsageError(
                f"--probe-sql does not run: {type(exc).__name__}: {text}",
                hint="give one SELECT that runs on its own (test it in psql); nothing was changed",
            ) from exc
    finally:
        await conn.close()


def probe_limit_ms(baseline_ms: float, settings: Settings) -> float:
    """Latency above which the probe counts as slow: ratio x baseline, and never within the noise floor."""
    return max(baseline_ms * settings.probe_max_ratio, baseline_ms + settings.probe_min_ms)


Sink = Callable[[str, list[Signal]], object]
Connector = Callable[[Settings, str], Awaitable[asyncpg.Connection]]


async def _default_connect(settings: Settings, role: str) -> asyncpg.Connection:
    return await connect(settings, role=role)


class HealthMonitor:
    """Polls the signals and hands every reading to ``sink(source, signals)`` (the Throttle's ``observe``)."""

    def __init__(self, settings: Settings, sink: Sink, log: Any, connector: Connector = _default_connect) -> None:
        self.settings = settings
        self.sink = sink
        self.log = log
        self.connector = connector
        self.baseline_ms: float | None = None
        self.probe_latencies: list[float] = []  # every completed probe, ms (for the benchmark and tests)
        self._wal: tuple[float, float] | None = None

    # --- the application probe --------------------------------------------------------------
    async def measure_baseline(self, samples: int = 9) -> float | None:
        """The probe's median latency before any chunk runs (None without --probe-sql)."""
        if not self.settings.probe_sql:
            return None
        conn = await self.connector(self.settings, "probe")
        try:
            try:
                await conn.fetch(self.settings.probe_sql)  # warm the plan cache and the buffers
            except asyncpg.PostgresError as exc:
                raise UsageError(
                    f"--probe-sql failed: {type(exc).__name__}: {exc}", hint="give a query that runs on its own"
                ) from exc
            timings = []
            for _ in range(samples):
                t0 = time.perf_counter()
                await conn.fetch(self.settings.probe_sql)
                timings.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.02)
        finally:
            await conn.close()
        self.baseline_ms = statistics.median(timings)
        self.log.debug(
            "probe_baseline",
            baseline_ms=round(self.baseline_ms, 3),
            limit_ms=round(probe_limit_ms(self.baseline_ms, self.settings), 3),
        )
        return self.baseline_ms

    async def _probe_once(self, conn: asyncpg.Connection, limit_ms: float, crit_ms: float) -> float:
        """Run the probe; while it is still running past the limit, report it slow at once."""
        assert self.settings.probe_sql is not None
        task = asyncio.ensure_future(conn.fetch(self.settings.probe_sql))
        t0 = time.perf_counter()
        try:
            while True:  # watching one probe run (not a retry)
                done, _ = await asyncio.wait({task}, timeout=0.1)
                elapsed = (time.perf_counter() - t0) * 1000
                if done:
                    task.result()
                    return elapsed
                if elapsed > limit_ms:  # still running: no need to wait for it to know it is slow
                    self.sink("probe", [Signal("probe_latency", elapsed, limit_ms, crit_ms, "ms")])
        finally:
            if not task.done():
                task.cancel()
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await asyncio.gather(task, return_exceptions=True)

    async def run_probe(self) -> None:
        if not self.settings.probe_sql:
            return
        if self.baseline_ms is None:
            await self.measure_baseline()
        assert self.baseline_ms is not None
        limit = probe_limit_ms(self.baseline_ms, self.settings)
        crit = limit * self.settings.critical_factor
        probe_sql = self.settings.probe_sql
        await self._loop(
            "probe",
            self.settings.probe_interval_s,
            lambda conn: self._probe_reading(conn, limit, crit),
            warm=lambda conn: conn.fetch(probe_sql),
        )

    async def _probe_reading(self, conn: asyncpg.Connection, limit: float, crit: float) -> list[Signal]:
        latency = await self._probe_once(conn, limit, crit)
        self.probe_latencies.append(latency)
        return [Signal("probe_latency", latency, limit, crit, "ms")]

    # --- the database signals -----------------------------------------------------------------
    async def _snapshot_reading(self, conn: asyncpg.Connection) -> list[Signal]:
        row = await conn.fetchrow(Q["snapshot"])
        assert row is not None
        now = time.monotonic()
        signals = signals_from_snapshot(dict(row), self.settings, self._wal, now)
        self._wal = (now, float(row["wal_lsn"]))
        return signals

    async def run_signals(self) -> None:
        await self._loop("health", self.settings.health_interval_s, self._snapshot_reading)

    async def run(self) -> None:
        """Both loops until cancelled. A lost connection is reconnected with backoff, never fatal."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run_signals, name="health-signals")
            if self.settings.probe_sql:
                tg.start_soon(self.run_probe, name="health-probe")

    async def _loop(
        self,
        role: str,
        interval: float,
        read: Callable[[asyncpg.Connection], Awaitable[list[Signal]]],
        warm: Callable[[asyncpg.Connection], Awaitable[object]] | None = None,
    ) -> None:
        conn: asyncpg.Connection | None = None

        async def reading() -> list[Signal]:
            nonlocal conn
            if conn is None or conn.is_closed():
                conn = await self.connector(self.settings, role)
                if warm is not None:  # a new backend's first run is cold (catalog caches, prepare)
                    await warm(conn)
            return await read(conn)

        def failed(_scheduled: Retry) -> None:
            nonlocal conn
            self.sink(role, [])  # forget stale readings: no data is not "healthy", but not "bad"
            if conn is not None:
                conn.terminate()
                conn = None

        try:
            while True:  # a poller: one reading per interval (its reconnects go through retry)
                started = time.monotonic()
                signals = await retry(reading, HEALTH_RECONNECT, log=self.log, fields={"source": role}, on_retry=failed)
                self.sink(role, signals)
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await conn.close()
