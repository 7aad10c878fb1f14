"""The throttle: how many workers may run chunks now, how big a chunk may be, and when to stop.

Workers ask it before every chunk (``gate``). This base version enforces the concurrency limit,
pause and stop; health signals, the control table and AIMD decisions plug into the same methods.
"""

from __future__ import annotations

import time

import anyio

from ..settings import Settings


class Throttle:
    def __init__(self, settings: Settings) -> None:
        self.max_concurrency = settings.concurrency
        self.concurrency = settings.concurrency  # current limit, 1..max_concurrency
        self.chunk_scale = 1.0  # multiplier the engine applies to its adaptive chunk size
        self.paused = False
        self.reason: str | None = None  # why we are throttled or paused, for logs and `status`
        self.stop_reason: str | None = None
        self._stop = anyio.Event()
        self._changed = anyio.Event()
        self.paused_seconds = 0.0
        self._paused_since: float | None = None

    # --- decisions -------------------------------------------------------------------------
    def set_concurrency(self, value: int, reason: str | None = None) -> None:
        self.concurrency = max(1, min(self.max_concurrency, value))
        self.reason = reason
        self._notify()

    def pause(self, reason: str) -> None:
        if not self.paused:
            self._paused_since = time.monotonic()
        self.paused = True
        self.reason = reason
        self._notify()

    def unpause(self) -> None:
        if self.paused and self._paused_since is not None:
            self.paused_seconds += time.monotonic() - self._paused_since
        self.paused = False
        self._paused_since = None
        self.reason = None
        self._notify()

    def request_stop(self, reason: str) -> None:
        """Stop claiming new chunks; chunks in flight finish (or roll back)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()
        self._notify()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # --- what workers call -------------------------------------------------------------------
    async def gate(self, worker_index: int) -> bool:
        """Wait until worker ``worker_index`` (0-based) may run a chunk. False: stop now."""
        while True:
            if self._stop.is_set():
                return False
            if not self.paused and worker_index < self.concurrency:
                return True
            changed = self._changed
            with anyio.move_on_after(1.0):
                await changed.wait()

    def note_chunk(self, rows: int, seconds: float) -> None:
        """Called after each committed chunk (for rate limits and signal baselines)."""

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
