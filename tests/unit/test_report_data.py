"""Pure parts of the report and the time series: the sampling interval's bound, throughput spread over each
chunk's duration, throttle holds from the decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from bxbatch.observe.report import _clip, _holds, throughput_series
from bxbatch.observe.timeseries import sample_interval


def test_time_series_is_bounded_for_a_long_run() -> None:
    t, kept = 0.0, 0
    while t < 24 * 3600:
        t += sample_interval(t)
        kept += 1
    assert 3600 < kept < 16_000  # one a second for an hour, then logarithmic: a day-long run ~15,000 rows
    assert sample_interval(10) == 1.0 and sample_interval(7200) == 2.0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.floats(1000.0, 1400.0),
            st.floats(0.0, 30.0),
            st.integers(0, 100_000),
        ),
        min_size=1,
        max_size=60,
    )
)
@example([("a", 1000.0, 28.96875, 480), ("a", 1018.0, 22.890625, 4046), ("a", 1193.0, 11.0, 1)])  # 5 s buckets
def test_throughput_keeps_every_row(chunks: list[tuple[str, float, float, int]]) -> None:
    bucket, series = throughput_series(chunks)
    for job in {c[0] for c in chunks}:
        total = sum(rows for j, _end, _dur, rows in chunks if j == job)
        drawn = sum(rate * bucket for _t, rate in series[job])
        # rounding each bucket's rate to 0.1 row/s only: up to 0.05 row/s over each bucket's seconds
        assert abs(drawn - total) <= 0.05 * bucket * len(series[job]) + 1e-6 * total


def test_a_chunk_is_spread_over_its_duration() -> None:
    bucket, series = throughput_series([("a", 1010.0, 10.0, 10_000)])  # 1000 rows/s from 1000 to 1010
    assert bucket == 0.25
    rates = [rate for _t, rate in series["a"]]
    assert max(rates) == min(rates[:-1]) == 1000.0  # flat, no spike at the commit


def _event(at: float, action: str, concurrency: int, paused: bool = False, scale: float = 1.0) -> dict[str, object]:
    t = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=at)).isoformat()
    return {
        "at": t,
        "host": "h",
        "pid": 1,
        "action": action,
        "concurrency": concurrency,
        "max_concurrency": 4,
        "chunk_scale": scale,
        "paused": paused,
        "reason": f"{action} at {at}",
        "signals": [],
    }


def test_holds_from_throttle_decisions() -> None:
    events = [
        _event(10, "cut", 2, scale=0.5),
        _event(11, "cut", 1, scale=0.25),
        _event(12, "pause", 1, paused=True, scale=0.25),
        _event(14, "unpause", 1, scale=0.25),
        _event(15, "recover", 4),  # full speed again
        _event(30, "cut", 2, scale=0.5),
    ]
    end = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=40)).isoformat()
    holds = _holds(events, end)
    assert [(h["paused"], h["start"][17:19], h["end"][17:19]) for h in holds] == [
        (False, "10", "12"),
        (True, "12", "14"),
        (False, "14", "15"),
        (False, "30", "40"),
    ]
    assert holds[0]["reasons"] == ["cut at 10", "cut at 11"] and holds[0]["min_concurrency"] == 1
    # the throttle acts on the backfill only: a hold still open at its end ends there
    backfill_end = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=33)).isoformat()
    assert _clip(holds, backfill_end)[-1]["end"] == backfill_end
