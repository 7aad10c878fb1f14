"""The throttle's decisions (AIMD on health signals, pauses, the operator's ceiling), on a fake clock."""

from __future__ import annotations

import anyio
import pytest

from bxbatch.live.health import Signal, probe_limit_ms, signals_from_snapshot
from bxbatch.live.throttle import DUTY_STEP, MIN_CHUNK_SCALE, MIN_DUTY, RAMP_UP_DUTY, Throttle, eta_seconds
from bxbatch.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make(concurrency: int = 8, **kw: object) -> tuple[Throttle, Clock]:
    clock = Clock()
    return Throttle(Settings(concurrency=concurrency, **kw), clock=clock, wall=clock), clock  # type: ignore[arg-type]


LAG_OK = Signal("replication_lag_bytes", 1 * 2**20, 8 * 2**20, 16 * 2**20, "bytes")
LAG_BAD = Signal("replication_lag_bytes", 12 * 2**20, 8 * 2**20, 16 * 2**20, "bytes")
LAG_CRIT = Signal("replication_lag_bytes", 20 * 2**20, 8 * 2**20, 16 * 2**20, "bytes")


def test_signal_levels_and_descriptions() -> None:
    assert LAG_OK.level == "ok"
    assert LAG_BAD.level == "bad"
    assert LAG_CRIT.level == "critical"
    assert LAG_BAD.describe() == "replication lag 12 MB > 8 MB"
    assert LAG_CRIT.describe() == "replication lag 20 MB > 16 MB"
    assert Signal("probe_latency", 3.25, 2.0, 4.0, "ms").describe() == "probe latency 3.2 ms > 2.0 ms"


def test_a_bad_signal_cuts_at_once_and_again_only_after_the_cut_interval() -> None:
    throttle, clock = make(8)
    decision = throttle.observe("health", [LAG_BAD])
    assert decision is not None and decision.action == "cut"
    assert (throttle.concurrency, throttle.chunk_scale) == (4, 0.5)
    assert throttle.reason == "throttled: replication lag 12 MB > 8 MB"
    assert decision.signals == ["replication lag 12 MB > 8 MB"]
    clock.advance(0.5)
    assert throttle.observe("health", [LAG_BAD]) is None  # still within the cut interval
    assert throttle.concurrency == 4
    clock.advance(0.6)
    throttle.observe("health", [LAG_BAD])
    assert (throttle.concurrency, throttle.chunk_scale) == (2, 0.25)
    for _ in range(10):
        clock.advance(1.1)
        throttle.observe("health", [LAG_BAD])
    assert throttle.concurrency == 1
    assert throttle.chunk_scale == MIN_CHUNK_SCALE  # floors, never zero
    assert not throttle.paused


def test_recovery_is_gradual_and_needs_a_clear_interval() -> None:
    throttle, clock = make(4)
    throttle.observe("health", [LAG_BAD])
    assert (throttle.concurrency, throttle.chunk_scale) == (2, 0.5)
    clock.advance(1.0)
    assert throttle.observe("health", [LAG_OK]) is None  # clear, but not long enough
    steps = []
    for _ in range(20):
        clock.advance(1.0)
        d = throttle.observe("health", [LAG_OK])
        if d is not None:
            steps.append((d.action, d.concurrency, d.chunk_scale))
    assert steps == [("recover", 3, 1.0), ("recover", 4, 1.0)]
    assert not throttle.throttled
    assert throttle.reason is None


def test_a_bad_reading_during_recovery_cuts_again() -> None:
    throttle, clock = make(8)
    throttle.observe("health", [LAG_BAD])
    clock.advance(3)
    throttle.observe("health", [LAG_OK])
    clock.advance(3)
    throttle.observe("health", [LAG_OK])
    assert throttle.concurrency == 5
    throttle.observe("health", [LAG_BAD])
    assert throttle.concurrency == 3


def test_a_critical_signal_pauses_until_it_clears_then_restarts_from_one() -> None:
    throttle, clock = make(6)
    d = throttle.observe("health", [LAG_CRIT])
    assert d is not None and d.action == "pause" and d.paused
    assert throttle.paused
    assert throttle.reason == "paused: replication lag 20 MB > 16 MB"
    clock.advance(5)
    assert throttle.observe("health", [LAG_CRIT]) is None  # no repeated decisions while paused
    d = throttle.observe("health", [LAG_BAD])
    assert d is not None and d.action == "unpause"
    assert not throttle.paused and throttle.concurrency == 1
    assert throttle.paused_seconds == pytest.approx(5.0)


def test_signals_from_several_sources_combine() -> None:
    throttle, _ = make(8)
    probe = Signal("probe_latency", 30.0, 10.0, 20.0, "ms")
    throttle.observe("health", [LAG_OK])
    throttle.observe("probe", [probe])
    assert throttle.paused  # the probe is critical
    throttle.observe("health", [LAG_BAD])  # health's own reading does not clear the probe's
    assert throttle.paused
    throttle.observe("probe", [])  # the probe loop lost its connection: its readings are forgotten
    assert not throttle.paused


def test_operator_pause_is_independent_of_health() -> None:
    throttle, _ = make(4)
    throttle.operator_pause("paused by ops")
    throttle.observe("health", [LAG_CRIT])
    throttle.observe("health", [LAG_OK])
    assert throttle.paused  # health cleared, the operator's pause holds
    assert throttle.operator_continue("continued") is not None
    assert not throttle.paused
    assert throttle.operator_continue("continued") is None  # idempotent: polled every half second


def test_ceiling_from_the_operator_is_capped_by_the_workers_started() -> None:
    throttle, clock = make(4)
    throttle.set_ceiling(2, "set by ops")
    assert (throttle.concurrency, throttle.max_concurrency) == (2, 2)
    throttle.set_ceiling(10, "set by ops")
    assert (throttle.concurrency, throttle.max_concurrency) == (4, 4)
    assert throttle.set_ceiling(4, "again") is None
    throttle.observe("health", [LAG_BAD])
    throttle.set_ceiling(3, "lower while cut")
    assert throttle.concurrency == 2  # stays cut; recovery climbs to the new ceiling
    for _ in range(10):
        clock.advance(2.1)
        throttle.observe("health", [LAG_OK])
    assert throttle.concurrency == 3


def test_every_decision_is_recorded_and_logged() -> None:
    events: list[tuple[str, str, dict[str, object]]] = []

    class Log:
        def info(self, event: str, **kw: object) -> None:
            events.append(("info", event, kw))

        def debug(self, event: str, **kw: object) -> None:
            events.append(("debug", event, kw))

    throttle, _ = make(4)
    throttle.log = Log()
    throttle.observe("health", [LAG_BAD])
    throttle.request_stop("SIGINT received")
    throttle.request_stop("again")  # the first reason stands
    assert [d.action for d in throttle.unsaved] == ["cut", "stop"]
    assert throttle.stop_reason == "SIGINT received"
    assert [e for _, e, _ in events] == ["throttle_decision", "throttle_decision"]
    assert events[0][2]["reason"] == "throttled: replication lag 12 MB > 8 MB"
    # a cut is in the heartbeat line (debug); a stop is news the operator must see (info)
    assert [level for level, _, _ in events] == ["debug", "info"]
    assert set(events[1][2]) == {"action", "reason", "concurrency"}  # a short console line, not every field


def test_retries_cut_like_a_bad_signal() -> None:
    throttle, clock = make(8)
    assert throttle.note_retry("lock timeout on a chunk") is not None
    assert throttle.note_retry("lock timeout on a chunk") is None
    clock.advance(1.0)
    throttle.note_retry("deadlock")
    assert throttle.concurrency == 2


def test_throttled_time_is_accounted_for_the_eta() -> None:
    throttle, clock = make(4)
    throttle.observe("health", [LAG_BAD])  # half the workers, half the chunk: a quarter of full speed
    clock.advance(4)
    state = throttle.state()
    assert state["throttled_seconds"] == pytest.approx(3.0)
    throttle.operator_pause("paused")
    clock.advance(10)
    state = throttle.state()
    assert state["paused_seconds"] == pytest.approx(10.0)
    # 100 rows in 20 s of which 10 paused and 3 held back: 100 rows per 7 effective seconds
    assert eta_seconds(200, 100, 20, 10, 3) == pytest.approx(14.0)
    assert eta_seconds(200, 0, 20, 0, 0) is None


async def test_gate_holds_workers_above_the_limit_and_wakes_them_on_change() -> None:
    throttle = Throttle(Settings(concurrency=3))
    assert await throttle.gate(2)
    throttle.set_concurrency(1, "test")
    opened: list[int] = []

    async def worker(i: int) -> None:
        if await throttle.gate(i):
            opened.append(i)

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, 0)
        tg.start_soon(worker, 2)
        await anyio.sleep(0.05)
        assert opened == [0]
        throttle.set_concurrency(3, "test")
    assert sorted(opened) == [0, 2]


async def test_gate_returns_false_when_stopping_even_while_paused() -> None:
    throttle = Throttle(Settings(concurrency=2))
    throttle.operator_pause("paused")
    results: list[bool] = []

    async def worker() -> None:
        results.append(await throttle.gate(0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(worker)
        await anyio.sleep(0.05)
        assert results == []
        throttle.request_stop("cancelled")
    assert results == [False]


async def test_rate_limit_spaces_chunks() -> None:
    clock = Clock()
    throttle = Throttle(Settings(concurrency=1, max_rows_per_second=1000.0), clock=clock)
    throttle.note_chunk(500, 0.01)  # half a second's budget
    with anyio.move_on_after(0.2) as scope:
        await throttle.gate(0)
    assert scope.cancelled_caught  # the fake clock never reaches the free time
    clock.advance(0.5)
    assert await throttle.gate(0)


def test_snapshot_signals_and_wal_rate() -> None:
    settings = Settings(max_replication_lag_bytes=8 * 2**20, max_wal_bytes_per_second=1000, max_active_backends=0)
    snap = {
        "blocked_sessions": 1,
        "replication_lag_bytes": 12 * 2**20,
        "replication_lag_s": 0.0,
        "xmin_age_s": 5.0,
        "active_backends": 3,
        "max_connections": 100,
        "wal_lsn": 10_000.0,
    }
    first = {s.name: s for s in signals_from_snapshot(snap, settings, None, 0.0)}
    assert "wal_rate" not in first  # needs two readings
    assert first["blocked_sessions"].level == "bad"  # any session waiting on bxbatch is bad by default
    assert first["replication_lag_bytes"].describe() == "replication lag 12 MB > 8 MB"
    assert first["active_backends"].limit == 50  # half of max_connections by default
    second = {s.name: s for s in signals_from_snapshot(snap | {"wal_lsn": 13_000.0}, settings, (0.0, 10_000.0), 1.0)}
    assert second["wal_rate"].value == 3000.0
    assert second["wal_rate"].level == "critical"


def test_probe_limit_has_a_noise_floor() -> None:
    settings = Settings(probe_max_ratio=2.0, probe_min_ms=5.0)
    assert probe_limit_ms(0.2, settings) == pytest.approx(5.2)
    assert probe_limit_ms(40.0, settings) == pytest.approx(80.0)


async def test_a_worker_held_above_the_limit_retires_when_told_but_a_paused_one_waits() -> None:
    throttle = Throttle(Settings(concurrency=3))
    throttle.set_concurrency(1, "cut")
    with anyio.fail_after(1):
        assert await throttle.gate(2, retire=lambda: True) is False  # the pass is planned: leave
    assert await throttle.gate(0, retire=lambda: True) is True  # worker 0 is never above the limit
    throttle.operator_pause("paused")
    with anyio.move_on_after(0.1) as scope:
        await throttle.gate(2, retire=lambda: True)
    assert scope.cancelled_caught  # paused: waits for `continue`, does not retire


def test_backfill_rate_for_the_eta_leaves_out_held_time() -> None:
    from datetime import UTC, datetime, timedelta

    from bxbatch.backfill.report import _rate

    now = datetime(2026, 1, 1, tzinfo=UTC)
    started = now - timedelta(seconds=60)
    assert _rate(6000, 3000, started, now) == pytest.approx(100.0)  # 3000 rows in the last 30 s
    assert _rate(6000, 3000, started, now, held_s=20.0) == pytest.approx(300.0)  # paused 20 of those 30 s
    assert _rate(6000, 0, started, now, held_s=30.0) == 0.0  # paused all along: no rate, no ETA
    # throttled all along, yet writing: the pace it keeps (an ETA at that pace, not none)
    assert _rate(6000, 1500, started, now, held_s=30.0) == pytest.approx(50.0)
    assert _rate(6000, 1500, started, now, held_s=29.8) == pytest.approx(50.0)


def test_status_lines_name_the_reason_and_the_failed_keys() -> None:
    from datetime import datetime

    from bxbatch.live.control import render_status_lines

    at = datetime(2026, 11, 24, 7, 0, 0)
    report = {
        "control": {"state": "paused", "concurrency": 2, "updated_at": at, "updated_by": "ops:42"},
        "throttle": [
            {
                "host": "h",
                "pid": 7,
                "live": True,
                "stopping": False,
                "paused": False,
                "concurrency": 2,
                "max_concurrency": 4,
                "chunk_scale": 0.5,
                "reason": "throttled: replication lag 12 MB > 8 MB",
                "paused_seconds": 0.0,
                "throttled_seconds": 3.2,
            },
            {"host": "gone", "pid": 1, "live": False},
        ],
        "failed_key_count": 1,
        "failed_keys": [{"job": "permissions", "relname": None, "key": 8, "error": "23514 CheckViolationError: no"}],
    }
    assert render_status_lines(report) == [
        "control: paused, concurrency ceiling 2 (set 07:00:00 by ops:42)",
        "throttle h:7: concurrency 2/4, chunk scale 0.5; throttled: replication lag 12 MB > 8 MB "
        "(paused 0s, held back 3s)",
        "failed keys: 1 (fix the rows, then `bxbatch resume` retries them)",
        "  permissions key 8: 23514 CheckViolationError: no",
    ]


def test_below_one_worker_a_cut_halves_the_duty_and_recovery_restores_it_first() -> None:
    throttle, clock = make(2)
    throttle.observe("health", [LAG_BAD])
    assert (throttle.concurrency, throttle.duty) == (1, 1.0)  # 2 -> 1 worker: no resting yet
    clock.advance(1.1)
    decision = throttle.observe("health", [LAG_BAD])
    assert decision is not None and decision.action == "cut"
    assert (throttle.concurrency, throttle.duty, decision.duty) == (1, 0.5, 0.5)
    assert throttle.reason is not None and throttle.reason.endswith("(chunks 50% of the time)")
    for _ in range(20):
        clock.advance(1.1)
        throttle.observe("health", [LAG_BAD])
    assert throttle.duty == MIN_DUTY  # floors above zero: the run always progresses
    assert throttle.throttled
    # recovery: the duty climbs back to 1 before the chunk scale or the workers grow; the last cut
    # left it at the floor, so it climbs from there one DUTY_STEP per clear interval
    assert throttle.observe("health", [LAG_OK]) is None  # clear from now on
    duties = []
    while throttle.duty < 1.0:
        clock.advance(1.1)
        decision = throttle.observe("health", [LAG_OK])
        assert decision is not None and decision.action == "recover"
        assert (throttle.concurrency, throttle.chunk_scale) == (1, MIN_CHUNK_SCALE)
        duties.append(throttle.duty)
    assert duties[0] == MIN_DUTY + DUTY_STEP and len(duties) == 16
    clock.advance(1.1)
    throttle.observe("health", [LAG_OK])
    assert (throttle.concurrency, throttle.chunk_scale) == (2, 2 * MIN_CHUNK_SCALE)


def test_the_duty_doubles_up_to_the_last_cut_level_then_climbs_by_steps() -> None:
    throttle, clock = make(1, ramp_up=True)  # ramp-up: duty 1/16, no cut yet
    throttle.observe("health", [LAG_OK])
    clock.advance(1.1)
    throttle.observe("health", [LAG_OK])
    clock.advance(1.1)
    throttle.observe("health", [LAG_OK])
    assert throttle.duty == 0.25  # doubling: nothing has hurt yet
    throttle.observe("health", [LAG_BAD])  # hurt at 0.25: back to 0.125, remembered
    assert throttle.duty == 0.125
    throttle.observe("health", [LAG_OK])
    seen = []
    for _ in range(3):
        clock.advance(1.1)
        throttle.observe("health", [LAG_OK])
        seen.append(throttle.duty)
    assert seen == [0.125 + DUTY_STEP, 0.125 + 2 * DUTY_STEP, 0.125 + 3 * DUTY_STEP]


async def test_the_duty_makes_the_worker_rest_in_proportion_to_its_chunk() -> None:
    throttle = Throttle(Settings(concurrency=1))
    throttle.duty = 0.25
    throttle.note_chunk(rows=100, seconds=0.05)  # a 50 ms chunk at 25%: rest 150 ms
    with anyio.fail_after(2):
        t0 = anyio.current_time()
        assert await throttle.gate(0)
        rested = anyio.current_time() - t0
    assert 0.12 <= rested <= 0.5, rested
    throttle.duty = 1.0
    with anyio.fail_after(0.05):
        assert await throttle.gate(0)  # no duty: no rest


def test_ramp_up_starts_with_one_worker_and_climbs_while_clear() -> None:
    throttle, clock = make(4, ramp_up=True)
    assert (throttle.concurrency, throttle.duty) == (1, RAMP_UP_DUTY) and throttle.throttled
    assert throttle.decisions[0].action == "ramp_up"
    assert throttle.observe("health", [LAG_OK]) is None  # clear from now on
    levels = []
    for _ in range(8):
        clock.advance(1.1)
        throttle.observe("health", [LAG_OK])
        levels.append((throttle.concurrency, throttle.duty))
    assert levels == [(1, 0.125), (1, 0.25), (1, 0.5), (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (4, 1.0)]
    assert not throttle.throttled
    # off without the throttle: --no-throttle means nothing watches the signals to climb on
    assert make(4, ramp_up=True, throttle=False)[0].concurrency == 4
    assert make(4)[0].concurrency == 4
