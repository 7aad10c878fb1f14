"""The lock budget: how many user tables one bxbatch transaction may touch, and the error when locks run out.

PostgreSQL's shared lock table has about ``max_locks_per_transaction x (max_connections +
max_prepared_transactions)`` slots for every session together; a transaction that reads or alters
a user table holds a lock on it and on each of its indexes until it ends. One transaction over
every user table of a large install exhausts the table ("out of shared memory") and, while it
holds them, starves the application. So every place that touches user tables does it in groups:
bxbatch as a whole may use half of the lock table, shared evenly by the connections it holds
(never less than the per-backend average, ``max_locks_per_transaction``), and a group holds as many
user tables as fit in that, at ``1 + indexes + 2`` (its TOAST table and index) locks a table,
after a fixed allowance for the catalog and bxbatch's own tables. ``--table-group-size`` overrides
the computed size.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from bxbatch.db.idents import qualified
from bxbatch.db.retry import is_out_of_locks
from bxbatch.db.sqlfiles import queries
from bxbatch.errors import LocksExhausted
from bxbatch.migrations.loader import load_migration
from bxbatch.settings import Settings

Q = queries("locks")
T = TypeVar("T")

FIXED_LOCKS = 16  # per transaction: catalog, ledger, the activity log and its indexes (mostly fast-path)
MAX_GROUP = 1000  # user tables per group at most (statement size, transaction length)
BXBATCH_SHARE = 2  # bxbatch takes at most 1/BXBATCH_SHARE of the lock table; the application keeps the rest
EXTRA_CONNECTIONS = 4  # beyond the workers and index builds: main, health, control, validation's snapshot holder

_LAST: contextvars.ContextVar[LockBudget | None] = contextvars.ContextVar("bxbatch_lock_budget", default=None)


@dataclass(frozen=True)
class LockBudget:
    """The server's lock table and bxbatch's share of it, per transaction."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int
    connections: int  # connections bxbatch holds at most at once
    locks_per_table: int  # 1 + indexes + 2 (TOAST), the user tables' average, rounded up
    group_size: int  # user tables per transaction in use
    overridden: bool  # group_size comes from --table-group-size

    @property
    def lock_table(self) -> int:
        return self.max_locks_per_transaction * (self.max_connections + self.max_prepared_transactions)

    @property
    def per_transaction(self) -> int:
        """Locks one bxbatch transaction may hold: the bound every grouped transaction stays below."""
        share = self.lock_table // (BXBATCH_SHARE * max(1, self.connections))
        return max(self.max_locks_per_transaction, share)

    def groups(self, items: Sequence[T], size: int | None = None) -> Iterator[list[T]]:
        """``items`` in consecutive groups of at most ``size`` (default: the budget's group size)."""
        step = max(1, size or self.group_size)
        for start in range(0, len(items), step):
            yield list(items[start : start + step])

    def as_dict(self) -> dict[str, int | bool]:
        return {
            "max_locks_per_transaction": self.max_locks_per_transaction,
            "lock_table": self.lock_table,
            "connections": self.connections,
            "locks_per_transaction": self.per_transaction,
            "locks_per_table": self.locks_per_table,
            "table_group_size": self.group_size,
            "overridden": self.overridden,
        }


def bxbatch_connections(settings: Settings) -> int:
    """The connections one bxbatch process holds at most: workers, index builds and the helpers."""
    return settings.concurrency + settings.index_concurrency + EXTRA_CONNECTIONS


def budget_from(
    max_locks_per_transaction: int,
    max_connections: int,
    max_prepared_transactions: int,
    connections: int,
    locks_per_table: int,
    override: int = 0,
) -> LockBudget:
    """The budget for these server settings (pure: the unit tests' entry)."""
    probe = LockBudget(
        max_locks_per_transaction,
        max_connections,
        max_prepared_transactions,
        connections,
        max(1, locks_per_table),
        1,
        override > 0,
    )
    if override > 0:
        size = override
    else:
        size = min(MAX_GROUP, max(1, (probe.per_transaction - FIXED_LOCKS) // probe.locks_per_table))
    return LockBudget(
        max_locks_per_transaction,
        max_connections,
        max_prepared_transactions,
        connections,
        probe.locks_per_table,
        size,
        override > 0,
    )


async def lock_budget(conn: asyncpg.Connection, settings: Settings, schema: str | None = None) -> LockBudget:
    """Read the server's lock settings and the user tables' index counts (one statement); remember the result.

    The user tables are those of ``settings.migration`` (in ``schema``, default the migration's)."""
    profile = load_migration(settings.migration).profile
    row = await conn.fetchrow(Q["lock_settings"], schema or profile.schema, profile.user_table_regex_sql)
    assert row is not None, "one row of settings"
    budget = budget_from(
        int(row["max_locks_per_transaction"]),
        int(row["max_connections"]),
        int(row["max_prepared_transactions"]),
        bxbatch_connections(settings),
        3 + math.ceil(float(row["indexes_per_table"] or 0)),
        settings.table_group_size,
    )
    _LAST.set(budget)
    return budget


def exhausted(exc: BaseException, budget: LockBudget | None = None) -> LocksExhausted | None:
    """The one-line error for a full lock table (None when ``exc`` is something else)."""
    if not is_out_of_locks(exc):
        return None
    budget = budget or _LAST.get()
    if budget is None:
        return LocksExhausted(
            "the server's lock table is full (out of shared memory for locks)",
            hint="raise max_locks_per_transaction, or lower --table-group-size; the run is resumable: `bxbatch resume`",
        )
    return LocksExhausted(
        f"the server's lock table is full: max_locks_per_transaction = {budget.max_locks_per_transaction} "
        f"(x {budget.max_connections + budget.max_prepared_transactions} connections and prepared transactions "
        f"= {budget.lock_table} locks for every session) with {budget.group_size} user table(s) per transaction",
        hint=f"lower --table-group-size (now {budget.group_size}) or raise max_locks_per_transaction; "
        "the run is resumable: `bxbatch resume`",
    )


async def cancel_autovacuum(conn: asyncpg.Connection, schema: str, table: str, log: Any = None) -> int:
    """Cancel the autovacuum workers on ``schema.table`` (never an anti-wraparound one); how many were.

    Called before bxbatch alters or builds on a table it has just filled: the load started an
    autovacuum there, and the lock bxbatch asks for would wait deadlock_timeout for PostgreSQL to
    cancel it (1 s on the default settings, on the run's critical path). Best effort: a role
    that may not signal autovacuum workers (a superuser may; from PostgreSQL 18, a member of
    pg_signal_autovacuum_worker too) leaves it to PostgreSQL.
    """
    try:
        rows = await conn.fetch(Q["cancel_autovacuum"], qualified(schema, table))
    except asyncpg.PostgresError as exc:
        if log is not None:
            log.debug("autovacuum_not_cancelled", table=table, error=type(exc).__name__)
        return 0
    n = sum(1 for r in rows if r["cancelled"])
    if n and log is not None:
        log.info("autovacuum_cancelled", table=table, workers=n)
    return n
