"""The lock budget: bxbatch's share of the server's lock table, per transaction, and the groups it allows."""

from __future__ import annotations

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from bxbatch.db.locks import FIXED_LOCKS, MAX_GROUP, budget_from, exhausted
from bxbatch.db.retry import is_out_of_locks
from bxbatch.errors import ExitCode


def test_default_server_gives_groups_of_a_hundred_tables_or_more() -> None:
    # PostgreSQL's defaults (64 x 100 connections) and bxbatch at --concurrency 4 (9 connections)
    budget = budget_from(64, 100, 0, 9, 5)
    assert budget.lock_table == 6400
    assert budget.per_transaction == 6400 // 18
    assert budget.group_size == (6400 // 18 - FIXED_LOCKS) // 5
    # every bxbatch connection at its bound together use at most half of the lock table
    assert budget.per_transaction * budget.connections <= budget.lock_table // 2


def test_tiny_lock_table_gives_one_table_per_transaction() -> None:
    budget = budget_from(10, 20, 0, 7, 5)
    assert budget.per_transaction == 14 and budget.group_size == 1


def test_override_wins() -> None:
    budget = budget_from(10, 20, 0, 7, 5, override=500)
    assert budget.group_size == 500 and budget.overridden


@given(
    st.integers(10, 10_000),
    st.integers(5, 10_000),
    st.integers(0, 100),
    st.integers(1, 300),
    st.integers(1, 60),
)
def test_a_group_stays_below_the_bound(locks: int, conns: int, prepared: int, ours: int, per_table: int) -> None:
    budget = budget_from(locks, conns, prepared, ours, per_table)
    assert 1 <= budget.group_size <= MAX_GROUP
    assert budget.per_transaction >= locks  # never less than the per-backend average
    if budget.group_size > 1:
        assert budget.group_size * per_table + FIXED_LOCKS <= budget.per_transaction
    items = list(range(2 * budget.group_size + 1))
    groups = list(budget.groups(items))
    assert [x for g in groups for x in g] == items and max(len(g) for g in groups) == budget.group_size


def test_out_of_locks_is_told_apart_from_other_out_of_memory() -> None:
    locks = asyncpg.OutOfMemoryError("out of shared memory")
    locks.hint = 'You might need to increase "max_locks_per_transaction".'  # type: ignore[attr-defined]
    other = asyncpg.OutOfMemoryError("out of memory")
    assert is_out_of_locks(locks) and not is_out_of_locks(other)
    error = exhausted(locks, budget_from(10, 20, 0, 7, 5, override=800))
    assert error is not None and error.exit_code == ExitCode.LOCKS_EXHAUSTED
    text = str(error)
    assert "max_locks_per_transaction = 10" in text and "800 user table(s)" in text and "--table-group-size" in text
    assert exhausted(other) is None


def test_out_of_locks_inside_a_task_group_is_found() -> None:
    locks = asyncpg.OutOfMemoryError("out of shared memory")
    locks.hint = 'You might need to increase "max_locks_per_transaction".'  # type: ignore[attr-defined]
    group = ExceptionGroup("workers", [ValueError("x"), ExceptionGroup("inner", [locks])])
    assert is_out_of_locks(group)
    assert not is_out_of_locks(ExceptionGroup("workers", [ValueError("x")]))
