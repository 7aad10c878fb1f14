"""Validation's per-table checks: the biggest groups of user tables are read first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bxbatch.phases.validate import biggest_first


def test_the_group_of_the_biggest_table_goes_first_and_ties_keep_table_order() -> None:
    groups = [[(1, "t1"), (2, "t2")], [(3, "t3")], [(4, "t4"), (5, "t5")], [(6, "t6")]]
    sizes = {"t1": 10, "t2": 10, "t3": 500, "t4": 5, "t5": 15, "t6": 20}
    assert biggest_first(groups, sizes) == [1, 0, 2, 3]


def test_a_table_of_unknown_size_counts_as_empty() -> None:
    assert biggest_first([[(1, "gone")], [(2, "t2")]], {"t2": 1}) == [1, 0]


@given(st.lists(st.lists(st.integers(0, 10**9), min_size=1, max_size=4), max_size=30))
def test_every_group_is_read_once_biggest_first(group_sizes: list[list[int]]) -> None:
    groups = [[(g * 10 + t, f"t{g}_{t}") for t in range(len(sz))] for g, sz in enumerate(group_sizes)]
    sizes = {f"t{g}_{t}": b for g, sz in enumerate(group_sizes) for t, b in enumerate(sz)}
    order = biggest_first(groups, sizes)
    assert sorted(order) == list(range(len(groups)))
    totals = [sum(group_sizes[i]) for i in order]
    assert totals == sorted(totals, reverse=True)
