"""The planner's ranges cover every key exactly once, for any key set, part layout, size and interleaving."""

from __future__ import annotations

import asyncio
import bisect
import itertools
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bxbatch.backfill.planner import ChunkPlan, PartCursor, plan_chunks


class ListSource:
    """An in-memory key index per part (what `walk_key` / `count_keys` do, over sorted lists)."""

    def __init__(self, keys: dict[int, list[int]]) -> None:
        self.keys = {p: sorted(set(ks)) for p, ks in keys.items()}
        self.probes = 0

    async def key_at(self, part: PartCursor, after: int, upto: int, offset: int) -> int | None:
        self.probes += 1
        ks = self.keys[part.part]
        j = bisect.bisect_right(ks, after) + offset
        return ks[j] if j < len(ks) and ks[j] <= upto else None

    async def count(self, part: PartCursor, after: int, upto: int, cap: int) -> int:
        self.probes += 1
        ks = self.keys[part.part]
        return min(cap, bisect.bisect_right(ks, upto) - bisect.bisect_right(ks, after))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def plan_all(parts: list[PartCursor], source: ListSource, size: int, per_call: int, segs: int) -> list[ChunkPlan]:
    chunks: list[ChunkPlan] = []
    for _ in range(100_000):
        if not any(p.open for p in parts):
            return chunks
        got = run(plan_chunks(parts, source, size, per_call, segs))
        assert got, "open parts but no chunk planned"
        chunks.extend(got)
    raise AssertionError("planner did not terminate")


def assert_exact_cover(parts: list[PartCursor], chunks: list[ChunkPlan], keys: dict[int, list[int]]) -> None:
    by_part: dict[int, list[tuple[int, int]]] = {p.part: [] for p in parts}
    for chunk in chunks:
        assert chunk.segments
        for s in chunk.segments:
            assert s.lo < s.hi
            by_part[s.part].append((s.lo, s.hi))
    for p in parts:
        ranges = by_part[p.part]
        if p.lo == p.hi:
            assert ranges == []
            continue
        # contiguous, in order, from lo to hi: the ranges partition (lo, hi]
        assert ranges[0][0] == p.lo
        assert ranges[-1][1] == p.hi
        for (_, a_hi), (b_lo, _) in itertools.pairwise(ranges):
            assert a_hi == b_lo
        hits: Counter[int] = Counter()
        for k in set(keys.get(p.part, [])):
            if p.lo < k <= p.hi:
                hits[k] += sum(1 for lo, hi in ranges if lo < k <= hi)
        assert all(n == 1 for n in hits.values()), hits


keysets = st.lists(st.integers(min_value=-50, max_value=400), max_size=120)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.lists(
        st.tuples(keysets, st.integers(-60, 50), st.integers(0, 450), st.booleans()), min_size=1, max_size=6
    ),
    size=st.integers(1, 40),
    per_call=st.integers(1, 5),
    segs=st.integers(1, 8),
)
def test_ranges_cover_every_key_exactly_once(
    layout: list[tuple[list[int], int, int, bool]], size: int, per_call: int, segs: int
) -> None:
    keys: dict[int, list[int]] = {}
    parts: list[PartCursor] = []
    for i, (ks, lo, span, exact) in enumerate(layout):
        keys[i] = ks
        hi = lo + span
        n = sum(1 for k in set(ks) if lo < k <= hi)
        parts.append(PartCursor(i, None, lo, hi, lo, n if exact else None, exact))
    snapshot = [PartCursor(p.part, None, p.lo, p.hi, p.upto) for p in parts]
    source = ListSource(keys)
    chunks = plan_all(parts, source, size, per_call, segs)
    assert_exact_cover(snapshot, chunks, keys)
    for c in chunks:
        assert c.planned_rows <= size
        assert len(c.segments) <= segs
        # with no concurrent writes, the planned row count is the true count of the chunk's keys
        true = sum(1 for s in c.segments for k in set(keys[s.part]) if s.lo < k <= s.hi)
        assert c.planned_rows == true


@settings(max_examples=200, deadline=None)
@given(
    initial=st.lists(st.integers(1, 300), max_size=150),
    edits=st.lists(st.tuples(st.booleans(), st.integers(1, 320)), max_size=80),
    size=st.integers(1, 30),
)
def test_cover_holds_while_keys_are_inserted_and_deleted(
    initial: list[int], edits: list[tuple[bool, int]], size: int
) -> None:
    """Keys added or removed between planner steps never leave a hole or an overlap."""
    source = ListSource({0: initial})
    part = PartCursor(0, None, 0, 300, 0)
    chunks: list[ChunkPlan] = []
    pending = list(edits)
    while part.open:
        chunks.extend(run(plan_chunks([part], source, size, 1)))
        for insert, key in pending[:3]:
            ks = source.keys[0]
            if insert and key not in ks:
                bisect.insort(ks, key)
            elif not insert and key in ks:
                ks.remove(key)
        pending = pending[3:]
    final = {0: source.keys[0]}
    assert_exact_cover([PartCursor(0, None, 0, 300, 0)], chunks, final)


def test_empty_domain_and_empty_table() -> None:
    source = ListSource({0: [], 1: []})
    empty_domain = PartCursor(0, None, 5, 5, 5)
    assert run(plan_chunks([empty_domain], source, 10, 3)) == []
    no_keys = PartCursor(1, None, 0, 100, 0)
    chunks = run(plan_chunks([no_keys], source, 10, 3))
    assert [(s.lo, s.hi) for c in chunks for s in c.segments] == [(0, 100)]
    assert chunks[0].planned_rows == 0


def test_single_row_and_gaps() -> None:
    source = ListSource({0: [7], 1: [1, 2, 3, 1000, 1001, 5000]})
    one = PartCursor(0, None, 0, 7, 0)
    chunks = run(plan_chunks([one], source, 1, 5))
    assert [(s.lo, s.hi) for c in chunks for s in c.segments] == [(0, 7)]
    gappy = PartCursor(1, None, 0, 5000, 0)
    chunks = run(plan_chunks([gappy], source, 2, 10))
    assert [(c.segments[0].lo, c.segments[0].hi, c.planned_rows) for c in chunks] == [
        (0, 2, 2),
        (2, 1000, 2),
        (1000, 5000, 2),
    ]


def test_tiny_parts_share_a_chunk_without_probes() -> None:
    """Small user tables counted when the pass began are grouped: one chunk, no index probe each."""
    keys = {t: list(range(1, 4)) for t in range(50)}
    parts = [PartCursor(t, f"database_table_{t}", 0, 3, 0, 3, True) for t in range(50)]
    source = ListSource(keys)
    chunks = run(plan_chunks(parts, source, 100, 10, max_segments=64))
    # 33 tables of 3 rows fill 99 of 100; the 34th gives one key to the first chunk, the rest to the second
    assert [len(c.segments) for c in chunks] == [34, 17]
    assert [c.planned_rows for c in chunks] == [100, 50]
    assert source.probes == 3  # only the table split between the chunks was probed
    assert sum(c.planned_rows for c in chunks) == 150


def test_huge_part_is_split_and_next_tables_follow() -> None:
    keys = {0: list(range(1, 1001)), 1: [1, 2], 2: [5]}
    parts = [
        PartCursor(0, "big", 0, 1000, 0, 1000, False),
        PartCursor(1, "small", 0, 2, 0, 2, True),
        PartCursor(2, "tiny", 0, 5, 0, 1, True),
    ]
    chunks = run(plan_chunks(parts, ListSource(keys), 300, 100))
    assert [c.planned_rows for c in chunks] == [300, 300, 300, 103]
    assert [(s.part, s.lo, s.hi) for s in chunks[-1].segments] == [(0, 900, 1000), (1, 0, 2), (2, 0, 5)]


class HeavySource:
    """Keys with duplicates (a member in several workspaces) and rows per occurrence: ``weight`` sums them."""

    def __init__(self, entries: list[tuple[int, int]]) -> None:
        self.entries = sorted(entries)  # (key, rows it yields)
        self.keys = [k for k, _ in self.entries]

    async def key_at(self, part: PartCursor, after: int, upto: int, offset: int) -> int | None:
        j = bisect.bisect_right(self.keys, after) + offset
        return self.keys[j] if j < len(self.keys) and self.keys[j] <= upto else None

    async def count(self, part: PartCursor, after: int, upto: int, cap: int) -> int:
        return min(cap, bisect.bisect_right(self.keys, upto) - bisect.bisect_right(self.keys, after))

    def weight(self, after: int, upto: int) -> int:
        return sum(r for k, r in self.entries if after < k <= upto)

    async def cut(self, part: PartCursor, after: int, upto: int, max_rows: int) -> tuple[int, int, int] | None:
        keys = sorted({k for k in self.keys if after < k <= upto})
        if not keys:
            return None
        best = keys[0]
        for k in keys:
            if self.weight(after, k) <= max_rows:
                best = k
        return best, sum(1 for k in self.keys if after < k <= best), self.weight(after, best)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(st.tuples(st.integers(1, 400), st.integers(0, 300)), max_size=300),
    size=st.integers(1, 200),
    max_rows=st.integers(1, 2_000),
)
def test_row_budget_caps_every_range_above_one_key(entries: list[tuple[int, int]], size: int, max_rows: int) -> None:
    """With a row budget, a range yields at most the budget unless it is one key; the cover stays exact."""
    source = HeavySource(entries)
    part = PartCursor(0, None, 0, 400, 0)
    chunks: list[ChunkPlan] = []
    while part.open:
        chunks.extend(run(plan_chunks([part], source, size, 3, 1, max_rows=max_rows)))
    ranges = [(s.lo, s.hi) for c in chunks for s in c.segments]
    assert ranges[0][0] == 0 and ranges[-1][1] == 400
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    for lo, hi in ranges:
        rows = source.weight(lo, hi)
        distinct = {k for k in source.keys if lo < k <= hi}
        assert rows <= max_rows or len(distinct) == 1, (lo, hi, rows, distinct)


def test_a_heavy_key_gets_a_chunk_of_its_own() -> None:
    """Key 5 yields 10,000 rows (a member of many big workspaces): its neighbours are not dragged into its chunk."""
    entries = [(k, 10) for k in range(1, 50)] + [(5, 2_000)] * 5
    source = HeavySource(entries)
    part = PartCursor(0, None, 0, 49, 0)
    chunks: list[ChunkPlan] = []
    while part.open:
        chunks.extend(run(plan_chunks([part], source, 40, 2, 1, max_rows=100)))
    ranges = [(s.lo, s.hi) for c in chunks for s in c.segments]
    assert (4, 5) in ranges
    assert max(source.weight(lo, hi) for lo, hi in ranges if (lo, hi) != (4, 5)) <= 100
