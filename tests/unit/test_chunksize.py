"""Adaptive chunk size: converges toward the target duration, ignores one-off slow chunks, keeps its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bxbatch.backfill.chunksize import ChunkSizer
from bxbatch.settings import Settings


def simulate(sizer: ChunkSizer, per_key_ms: float, overhead_ms: float, chunks: int) -> list[int]:
    sizes = []
    for _ in range(chunks):
        n = sizer.next_size()
        sizer.observe(n, (overhead_ms + per_key_ms * n) / 1000.0)
        sizes.append(sizer.size)
    return sizes


@settings(max_examples=200, deadline=None)
@given(per_key_us=st.floats(min_value=1.0, max_value=2000.0), overhead_ms=st.floats(min_value=0.0, max_value=5.0))
def test_converges_within_twenty_chunks(per_key_us: float, overhead_ms: float) -> None:
    sizer = ChunkSizer(target_ms=300, floor=100, ceiling=100_000, size=5_000)
    sizes = simulate(sizer, per_key_us / 1000.0, overhead_ms, 20)
    ideal = max(100, min(100_000, (300 - overhead_ms) / (per_key_us / 1000.0)))
    assert sizes[-1] == pytest.approx(ideal, rel=0.05)
    # and it stays there
    assert simulate(sizer, per_key_us / 1000.0, overhead_ms, 5)[-1] == pytest.approx(ideal, rel=0.05)


def test_one_slow_chunk_does_not_collapse_the_size() -> None:
    sizer = ChunkSizer(target_ms=300, floor=100, ceiling=100_000, size=5_000)
    simulate(sizer, 0.05, 0.0, 20)  # 50 us a key: 6000 keys
    before = sizer.size
    sizer.observe(before, 30.0)  # a chunk stuck 30 s behind a lock
    assert sizer.size == before
    sizer.observe(before, 0.3)
    assert sizer.size == before


def test_sustained_slowdown_is_followed() -> None:
    sizer = ChunkSizer(target_ms=300, floor=100, ceiling=100_000, size=5_000)
    simulate(sizer, 0.05, 0.0, 20)
    sizes = simulate(sizer, 0.2, 0.0, 8)  # the server got 4x slower for good
    assert sizes[-1] == pytest.approx(1_500, rel=0.05)


def test_floor_and_ceiling() -> None:
    fast = ChunkSizer(target_ms=300, floor=100, ceiling=20_000, size=5_000)
    assert max(simulate(fast, 0.0001, 0.0, 30)) == 20_000
    slow = ChunkSizer(target_ms=300, floor=100, ceiling=20_000, size=5_000)
    assert min(simulate(slow, 50.0, 0.0, 30)) == 100
    assert slow.next_size(scale=1 / 16) == 100  # the throttle's scale never goes below the floor
    fast_half = fast.next_size(scale=0.5)
    assert fast_half == 10_000


def test_empty_chunks_say_nothing() -> None:
    sizer = ChunkSizer(target_ms=300, floor=100, ceiling=100_000, size=5_000)
    assert sizer.observe(0, 0.01) == 5_000
    assert sizer.observations == 0


def test_from_settings_clamps_initial() -> None:
    sizer = ChunkSizer.from_settings(Settings(min_chunk_rows=10, initial_chunk_rows=50, max_chunk_rows=60))
    assert (sizer.floor, sizer.size, sizer.ceiling) == (10, 50, 60)
    with pytest.raises(ValueError, match="floor"):
        ChunkSizer(target_ms=300, floor=0, ceiling=10, size=5)


def test_row_budget_follows_the_cost_per_row_not_per_key() -> None:
    """Keys of 1 and of 1,000 rows alternate: the row budget stays at target / cost per row whatever the keys."""
    sizer = ChunkSizer(target_ms=300, floor=100, ceiling=100_000, size=5_000)
    assert sizer.row_budget(share=5) == 1_000  # nothing measured: the initial size over the lookahead
    for i in range(20):
        rows = 50 if i % 2 else 50_000  # 50 keys each: 1 row a key, then 1,000 rows a key
        sizer.observe(50, rows * 0.02 / 1000.0, rows=rows)  # 20 us a row
    assert sizer.row_budget() == 15_000
    assert sizer.row_budget(scale=0.5) == 7_500  # the throttle's chunk scale applies
    sizer.observe(50, 1.0, rows=None)  # a reconcile chunk: rows changed, not read, teach nothing per row
    assert sizer.row_budget() == 15_000
