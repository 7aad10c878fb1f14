"""The throttle: how many workers may run chunks now, how big a chunk may be, and when to pause or stop.

Workers ask it before every chunk (``gate``) and report every committed chunk (``note_chunk``).
Health readings (live/health.py), chunk retries and the operator's control row
(live/control.py) feed it; it decides AIMD style:

* a bad signal cuts at once: concurrency halves and the chunk scale halves, again at most once
  per ``cut_interval`` while the signal stays bad;
* a critical signal (``critical_factor`` x its threshold) pauses every worker until it clears;
* once every signal is clear for ``recover_interval``, one step back up (concurrency +1, chunk
  scale x2) per interval, up to the ceiling (``--concurrency`` or ``bxbatch set concurrency=N``).
* below one worker, a cut halves the *duty*: the share of time the last worker may spend in
  chunks (after a chunk of t seconds it rests t x (1/duty - 1)), down to 1/64. A small chunk on
  one worker still keeps one core busy all the time; on a small server that alone can double an
  application query's latency, so the throttle can back off further, all the way to nearly
  paused, and recovers the duty first when the signals clear: x2 per interval up to the duty
  the last cut left, then +1/16 per interval (TCP's congestion avoidance: near the level that
  hurt, climb slowly).

Every decision is a ``Decision``, logged as a ``throttle_decision`` event and kept for the
control loop to write to the ledger, so ``bxbatch status`` can say why the run is slow.
Time spent paused or cut down is accounted, so the ETA can leave it out.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio

from bxbatch.live.health import Signal
from bxbatch.settings import Settings

MIN_CHUNK_SCALE = 1 / 16
MIN_DUTY = 1 / 64
DUTY_STEP = 1 / 16  # additive duty increase per clear interval above the last cut's level
RAMP_UP_DUTY = 1 / 16  # where --ramp-up starts: full speed on one worker 4 clear intervals later


@dataclass(frozen=True)
class Decision:
    """One change of the throttle's state, and why."""

    at: float  # wall clock (time.time())
    action: str  # cut, recover, pause, unpause, stop, set_ceiling, set, ramp_up
    concurrency: int
    max_concurrency: int
    chunk_scale: float
    paused: bool
    reason: str
    signals: list[str] = field(default_factory=list)
    duty: float = 1.0  # share of time the workers may spend in chunks (1.0: no resting)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Throttle:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        log: Any = None,
        cut_interval: float = 1.0,
        recover_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self.max_concurrency = settings.concurrency  # the ceiling: --concurrency, or `bxbatch set`
        self.workers = settings.concurrency  # worker tasks this process started; the ceiling never exceeds it
        self.concurrency = settings.concurrency  # current limit, 1..max_concurrency
        self.chunk_scale = 1.0  # multiplier the engine applies to its adaptive chunk size
        self.duty = 1.0  # share of time in chunks, cut below 1 only once down to one worker
        self._duty_threshold: float | None = None  # the duty after the last cut (TCP's ssthresh)
        self._pace_free_at = clock()
        self.reason: str | None = None  # why we are throttled or paused, for logs and `status`
        self.stop_reason: str | None = None
        self.clock = clock
        self.wall = wall
        self.log = log
        self.cut_interval = cut_interval
        self.recover_interval = recover_interval
        self.decisions: deque[Decision] = deque(maxlen=500)
        self.unsaved: list[Decision] = []  # drained by the control loop into bxbatch.throttle_event
        self._stop = anyio.Event()
        self._changed = anyio.Event()
        # pause has three independent owners: the engine/library (pause()), the operator (control
        # row) and the health signals; workers run only when none of them holds it.
        self._operator_pause: str | None = None
        self._health_pause: str | None = None
        self._signals: dict[str, list[Signal]] = {}
        self._last_cut = float("-inf")
        self._last_change = clock()
        self._clear_since: float | None = None
        # accounting for the ETA
        self.paused_seconds = 0.0
        self.throttled_seconds = 0.0  # sum over time of the fraction of the ceiling held back
        self._accounted_at = clock()
        # plain rate limit
        # --max-rows-per-second is the run's limit: with N live processes each takes 1/N of it
        self._rate_total = settings.max_rows_per_second
        self._processes = 1
        self._rate = self._rate_total
        self._rate_free_at = clock()
        self.rows = 0
        self.chunks = 0
        self.borrowed = 0  # worker slots lent to other work (an index build during the backfills)
        self.enabled = settings.throttle  # `bxbatch set throttle=off`: health signals are not acted on
        self.knobs: dict[str, Any] = {}  # the live knobs applied so far (`bxbatch set`)
        if settings.ramp_up and settings.throttle:
            # slow start: one worker resting most of the time, then (while every signal stays clear)
            # the duty doubles each recover_interval up to 1, then one more worker per interval
            self.concurrency = 1
            self.duty = RAMP_UP_DUTY
            self.reason = "ramping up"
            self._record("ramp_up", f"starting with 1 of {self.max_concurrency} workers" + self._duty_note())

    # --- state -----------------------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return bool(self._operator_pause or self._health_pause)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    @property
    def throttled(self) -> bool:
        return self.paused or self.concurrency < self.max_concurrency or self.chunk_scale < 1.0 or self.duty < 1.0

    def signals(self) -> list[Signal]:
        return [s for group in self._signals.values() for s in group]

    def bad_signals(self) -> list[Signal]:
        return [s for s in self.signals() if s.level != "ok"]

    def state(self) -> dict[str, Any]:
        """The current state, as stored in bxbatch.throttle_state and shown by `status`."""
        self._account()
        return {
            "concurrency": self.concurrency,
            "max_concurrency": self.max_concurrency,
            "chunk_scale": self.chunk_scale,
            "duty": self.duty,
            "paused": self.paused,
            "stopping": self.stopping,
            "reason": self.stop_reason if self.stopping else self.reason,
            "paused_seconds": round(self.paused_seconds, 3),
            "throttled_seconds": round(self.throttled_seconds, 3),
            "signals": [s.describe() for s in self.bad_signals()],
            "rate_limit": self._rate_total,
            "throttle_on": self.enabled,
            "rows": self.rows,
            "chunks": self.chunks,
        }

    def _account(self) -> None:
        now = self.clock()
        dt = max(0.0, now - self._accounted_at)
        self._accounted_at = now
        if self.paused:
            self.paused_seconds += dt
        elif self.max_concurrency > 0:
            held = 1.0 - (self.concurrency * self.chunk_scale * self.duty) / self.max_concurrency
            self.throttled_seconds += dt * max(0.0, held)

    def _record(self, action: str, reason: str, signals: list[Signal] | None = None) -> Decision:
        self._last_change = self.clock()
        decision = Decision(
            at=self.wall(),
            action=action,
            concurrency=self.concurrency,
            max_concurrency=self.max_concurrency,
            chunk_scale=round(self.chunk_scale, 4),
            paused=self.paused,
            reason=reason,
            signals=[s.describe() for s in (signals or [])],
            duty=round(self.duty, 4),
        )
        self.decisions.append(decision)
        self.unsaved.append(decision)
        if self.log is not None:
            # what the operator must hear of at once; cuts and recoveries are in the heartbeat line
            if action in ("pause", "unpause", "stop", "set_ceiling", "set", "knobs"):
                # one short console line (the reason names the signal); every field is in the ledger and at debug
                self.log.info("throttle_decision", action=action, reason=reason, concurrency=self.concurrency)
            else:
                self.log.debug("throttle_decision", **decision.as_dict())
        self._notify()
        return decision

    # --- decisions from health signals ------------------------------------------------------
    def observe(self, source: str, signals: list[Signal]) -> Decision | None:
        """New readings from one source (replacing its previous ones); decide at once."""
        if not self.enabled:  # `set throttle=off`: measured, not acted on
            self._signals.clear()
            return None
        self._signals[source] = list(signals)
        return self.decide()

    # --- live knobs: `bxbatch set KEY=VALUE` -----------------------------------------------------
    def apply_knobs(self, knobs: dict[str, Any], reason: str) -> Decision | None:
        """Make the throttle (and the settings it hands the engine and monitor) match the knobs."""
        changed = {k: v for k, v in knobs.items() if self.knobs.get(k) != v}
        if not changed:
            return None
        self._account()
        self.knobs.update(changed)
        fields = {k: v for k, v in changed.items() if k != "concurrency" and hasattr(self.settings, k)}
        if fields:
            self.settings = self.settings.with_(**fields)
        if "max_rows_per_second" in changed:
            self._rate_total = float(changed["max_rows_per_second"])
            self._rate = self._rate_total / self._processes
            self._rate_free_at = self.clock()
        if "concurrency" in changed:
            self.set_ceiling(int(changed["concurrency"]), reason)
        if "throttle" in changed:
            self.enabled = bool(changed["throttle"])
            if not self.enabled:  # let go of everything the signals held back
                self._signals.clear()
                self._health_pause = None
                self.concurrency, self.chunk_scale, self.duty = self.max_concurrency, 1.0, 1.0
                self.reason = self._operator_pause
        what = ", ".join(f"{k}={v}" for k, v in changed.items())
        return self._record("knobs", f"{reason}: {what}")

    @property
    def rate_total(self) -> float:
        """The run's rate limit (rows/s over every process; 0: none)."""
        return self._rate_total

    def set_processes(self, count: int) -> None:
        """``count`` live processes share the run: this one's share of the rate limit is 1/count."""
        count = max(1, count)
        if count != self._processes:
            self._processes = count
            self._rate = self._rate_total / count

    def wait_reason(self, worker_index: int) -> str | None:
        """What would hold worker ``worker_index`` at the gate now (None: it may go), for `status`."""
        if self.stopping:
            return "stopping"
        if self.paused:
            return "paused"
        limit = max(1, self.concurrency - self.borrowed)  # as gate: a slot lent to an index build
        if worker_index >= limit:
            lent = f", {self.borrowed} lent to an index build" if self.borrowed else ""
            return f"held (concurrency {self.concurrency}{lent})"
        if self._rate > 0 and self._rate_free_at > self.clock():
            return "rate-limited"
        if self.duty < 1.0 and self._pace_free_at > self.clock():
            return "resting"
        return None

    def decide(self) -> Decision | None:
        self._account()
        now = self.clock()
        bad = self.bad_signals()
        critical = [s for s in bad if s.level == "critical"]
        if critical:
            self._clear_since = None
            reason = "paused: " + "; ".join(s.describe() for s in critical)
            if self._health_pause != reason:
                first = self._health_pause is None
                self._health_pause = reason
                self.reason = reason
                if first:
                    return self._record("pause", reason, critical)
            return None
        if self._health_pause is not None:
            # the critical signal cleared: start again from the bottom and climb back
            self._health_pause = None
            self.concurrency = 1
            self.chunk_scale = max(MIN_CHUNK_SCALE, min(self.chunk_scale, 0.5))
            self._last_cut = now
            self.reason = ("throttled: " + "; ".join(s.describe() for s in bad)) if bad else "recovering"
            return self._record("unpause", self.reason, bad)
        if bad:
            self._clear_since = None
            self.reason = "throttled: " + "; ".join(s.describe() for s in bad)
            if now - self._last_cut >= self.cut_interval:
                return self.cut(self.reason, bad)
            return None
        # all clear
        if self._clear_since is None:
            self._clear_since = now
        if self.concurrency >= self.max_concurrency and self.chunk_scale >= 1.0 and self.duty >= 1.0:
            if self.reason and not self.paused:
                self.reason = None
            return None
        since = max(self._clear_since, self._last_change)
        if now - since >= self.recover_interval:
            if self.duty < 1.0:  # undo the last lever first: rest less, then more chunk, more workers
                if self._duty_threshold is not None and self.duty >= self._duty_threshold:
                    self.duty = min(1.0, self.duty + DUTY_STEP)  # near where it hurt: additive
                else:
                    self.duty = min(1.0, self.duty * 2, self._duty_threshold or 1.0)
            else:
                self.chunk_scale = min(1.0, self.chunk_scale * 2)
                self.concurrency = min(self.max_concurrency, self.concurrency + 1)
            self.reason = "recovering" if self.throttled else None
            return self._record("recover", "signals clear" + self._duty_note())
        return None

    def cut(self, reason: str, signals: list[Signal] | None = None) -> Decision:
        """Multiplicative decrease: half the workers, half the chunk size; at one worker, half the duty too."""
        self._account()
        self._last_cut = self.clock()
        self._clear_since = None
        if self.concurrency <= 1:
            self.duty = max(MIN_DUTY, self.duty / 2)
            self._duty_threshold = self.duty  # climb back above this one step at a time
        self.concurrency = max(1, (self.concurrency + 1) // 2) if self.concurrency > 1 else 1
        self.chunk_scale = max(MIN_CHUNK_SCALE, self.chunk_scale / 2)
        self.reason = reason + self._duty_note()
        return self._record("cut", self.reason, signals)

    def _duty_note(self) -> str:
        return f" (chunks {self.duty:.0%} of the time)" if self.duty < 1.0 else ""

    def note_retry(self, reason: str) -> Decision | None:
        """A chunk hit a lock timeout / deadlock / statement timeout: the database is contended, back off."""
        if self.clock() - self._last_cut >= self.cut_interval:
            return self.cut(f"throttled: {reason}")
        return None

    # --- decisions from the operator and the engine ------------------------------------------
    def set_concurrency(self, value: int, reason: str | None = None) -> None:
        self._account()
        self.concurrency = max(1, min(self.max_concurrency, value))
        self.reason = reason
        self._record("set", reason or f"concurrency {self.concurrency}")

    def set_ceiling(self, value: int, reason: str) -> Decision | None:
        """`bxbatch set concurrency=N`: the new ceiling (never more than the workers this process runs)."""
        value = max(1, min(self.workers, value))
        if value == self.max_concurrency:
            return None
        self._account()
        held_back = self.throttled  # cut by the signals: stay cut, climb to the new ceiling
        self.max_concurrency = value
        self.concurrency = min(self.concurrency, value) if held_back else value
        return self._record("set_ceiling", reason)

    def operator_pause(self, reason: str) -> Decision | None:
        if self._operator_pause is not None:
            return None
        self._account()
        self._operator_pause = reason
        self.reason = reason
        return self._record("pause", reason)

    def operator_continue(self, reason: str) -> Decision | None:
        if self._operator_pause is None:
            return None
        self._account()
        self._operator_pause = None
        self.reason = self._health_pause
        return self._record("unpause", reason)

    def request_stop(self, reason: str) -> None:
        """Stop claiming new chunks; chunks in flight finish (or roll back)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._stop.set()
            self._record("stop", reason)
        self._stop.set()
        self._notify()

    # --- what workers call -------------------------------------------------------------------
    async def gate(self, worker_index: int, retire: Callable[[], bool] | None = None) -> bool:
        """Wait until worker ``worker_index`` (0-based) may run a chunk. False: stop now.

        ``retire()`` true (e.g. "the pass is fully planned") lets a worker held above the current
        limit leave instead of waiting for a recovery that the end of its pass makes pointless;
        a paused worker keeps waiting, and worker 0 is never above the limit.
        """
        while True:  # waiting for a slot (not a retry)
            if self._stop.is_set():
                return False
            limit = max(1, self.concurrency - self.borrowed)  # worker 0 always runs, a slot lent or not
            if not self.paused and worker_index >= limit and retire is not None and retire():
                return False
            if not self.paused and worker_index < limit:
                wait = self._rate_free_at - self.clock() if self._rate > 0 else 0.0
                if self.duty < 1.0:
                    wait = max(wait, self._pace_free_at - self.clock())
                if wait <= 0:
                    return True
                with anyio.move_on_after(min(wait, 1.0)):
                    await self._stop.wait()
                continue
            changed = self._changed
            with anyio.move_on_after(1.0):
                await changed.wait()

    async def borrow_slot(self) -> bool:
        """Take one worker slot for other work that loads the server like a chunk (an index build):
        waits while paused; the workers then run one fewer. False: stopping (nothing taken)."""
        while self.paused and not self._stop.is_set():
            changed = self._changed
            with anyio.move_on_after(1.0):
                await changed.wait()
        if self._stop.is_set():
            return False
        self.borrowed += 1
        self._notify()
        return True

    def return_slot(self) -> None:
        self.borrowed = max(0, self.borrowed - 1)
        self._notify()

    def note_chunk(self, rows: int, seconds: float) -> None:
        """Called after each committed chunk (rate limit, progress figures)."""
        self.rows += rows
        self.chunks += 1
        if self.duty < 1.0:  # rest in proportion to the chunk just done
            self._pace_free_at = max(self.clock(), self._pace_free_at) + seconds * (1.0 / self.duty - 1.0)
        if self._rate > 0:
            self._rate_free_at = max(self.clock(), self._rate_free_at) + rows / self._rate

    def wake(self) -> None:
        """Make waiting workers look again (e.g. their pass was fully planned: they may retire)."""
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


def eta_seconds(rows_left: float, rows_done: float, elapsed: float, paused: float, throttled: float) -> float | None:
    """Time left at the rate seen while the run was neither paused nor held back."""
    effective = elapsed - paused - throttled
    if rows_done <= 0 or effective <= 0:
        return None
    return rows_left / (rows_done / effective)
