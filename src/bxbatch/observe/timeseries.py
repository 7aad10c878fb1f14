"""The run's time series: a sampler task that records the observer's state in ``bxbatch.sample``.

Every ``TICK_S`` it takes the observer's snapshot (which also refreshes the view the metrics'
gauges read). A snapshot is kept for the ledger when the sampling interval has passed: one a
second for the first hour of this process's attempt, then one per ``elapsed / 3600`` seconds,
so the table grows with the logarithm of the run's length (~15,000 rows per process for a day).
Kept samples are written in one statement every ``FLUSH_S`` on the sampler's own connection,
never on the engine's: the hot path pays nothing. A lost connection costs at most the buffered
samples beyond ``MAX_BUFFER``; the run never stops for its time series. At the end the
observatory flushes what is left (shielded, time-bounded).

The same flush refreshes each backfill job's ETA from the ledger (all processes, as `status`).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncpg

from bxbatch.db.session import connect
from bxbatch.ledger import observations as obs
from bxbatch.observe.observer import RunObserver
from bxbatch.settings import Settings

TICK_S = 1.0
FLUSH_S = 5.0
FULL_RATE_S = 3600.0  # per-second samples for this long, then the interval grows with the elapsed time
MAX_BUFFER = 3600


def sample_interval(elapsed_s: float) -> float:
    """Seconds between kept samples after ``elapsed_s`` seconds of sampling."""
    return max(TICK_S, elapsed_s / FULL_RATE_S)


class Sampler:
    def __init__(self, settings: Settings, observer: RunObserver, log: Any) -> None:
        self.settings = settings
        self.observer = observer
        self.log = log
        self.buffer: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.last_kept = float("-inf")
        self.last_flush = time.monotonic()
        self.conn: asyncpg.Connection | None = None
        self.failures = 0
        self.written = 0

    def tick(self, force: bool = False) -> None:
        snap = self.observer.snapshot()
        now = time.monotonic()
        if force or now - self.last_kept >= sample_interval(now - self.started) - 0.05:
            self.last_kept = now
            self.buffer.append(snap)
            del self.buffer[:-MAX_BUFFER]

    async def _conn(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await connect(self.settings, role="sampler", connect_timeout=5)
        return self.conn

    async def flush(self) -> None:
        self.last_flush = time.monotonic()
        try:
            conn = await self._conn()
            if self.buffer:
                batch, self.buffer = self.buffer, []
                try:
                    await obs.insert_samples(conn, self.observer.run_id, self.observer.host, self.observer.pid, batch)
                except BaseException:
                    self.buffer[:0] = batch
                    raise
                self.written += len(batch)
            if self.observer.current_phase == "backfill":
                await self._refresh_eta(conn)
            else:
                for counts in self.observer.jobs.values():
                    counts.eta_s = None
            self.failures = 0
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.failures += 1
            if self.failures == 1:
                self.log.warning("timeseries_not_saved", error=f"{type(exc).__name__}: {exc}"[:200])
            if self.conn is not None:
                self.conn.terminate()
                self.conn = None
        except Exception as exc:  # ConnectionFailed and the like: the run goes on without its time series
            self.failures += 1
            if self.failures == 1:
                self.log.warning("timeseries_not_saved", error=f"{type(exc).__name__}: {exc}"[:200])

    async def _refresh_eta(self, conn: asyncpg.Connection) -> None:
        from bxbatch.backfill.report import backfill_status

        status = await backfill_status(conn, self.observer.run_id)
        for job in status["backfill"]["jobs"]:
            counts = self.observer.job(job["job"])
            counts.eta_s = job["eta_s"]
            if job["rows_expected"] is not None:
                counts.expected = job["rows_expected"]

    async def run(self) -> None:
        """Ticks and writes in two tasks: a slow write (a busy server) never delays a sample."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._ticks, name="sampler-ticks")
            while True:  # a periodic writer, not a retry
                await anyio.sleep(FLUSH_S)
                await self.flush()

    async def _ticks(self) -> None:
        while True:  # a periodic sampler, not a retry
            self.tick()
            await anyio.sleep(TICK_S)

    async def close(self) -> None:
        """The last sample and what is buffered (shielded, at most a few seconds)."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            self.tick(force=True)
            await self.flush()
            if self.conn is not None and not self.conn.is_closed():
                await self.conn.close()
        self.conn = None
