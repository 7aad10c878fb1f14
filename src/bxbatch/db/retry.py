"""What to do when a chunk fails: retry it, retry on a fresh connection, bisect it, or stop the run.

Decided by exception class (asyncpg maps each SQLSTATE to one), never by message text:

* ``transient``: the moment is bad (lock timeout, deadlock, serialization failure, statement
  timeout, too many connections): back off with jitter and retry the same chunk;
* ``connection``: the connection or the server went away (terminated backend, server shutting
  down or starting up, network error): drop the connection, back off, retry on a fresh one;
* ``data``: something inside the chunk's rows (constraint violation, bad value, an exception
  raised by a trigger): retrying cannot help; bisect the chunk down to the failing key;
* ``hopeless``: a table, column or function the chunk needs is gone, or a privilege: stop the run
  at once (db.HOPELESS_ERRORS), resumable once fixed;
* ``fatal``: anything else (disk full, a bug): the chunk is marked failed.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.session import CONNECTION_LOST_ERRORS, RETRYABLE_ERRORS, backoff_delay, is_hopeless

Kind = Literal["transient", "connection", "data", "hopeless", "fatal"]
T = TypeVar("T")

DATA_ERRORS: tuple[type[BaseException], ...] = (
    pgexc.IntegrityConstraintViolationError,  # class 23: unique, foreign key, not null, check, exclusion
    pgexc.DataError,  # class 22: invalid text representation, numeric out of range, ...
    pgexc.RaiseError,  # P0001: RAISE EXCEPTION in a trigger or function the chunk fires
    pgexc.CardinalityViolationError,  # 21000: ON CONFLICT touching a row twice (duplicate keys in the source)
)


def classify(exc: BaseException) -> Kind:
    if isinstance(exc, CONNECTION_LOST_ERRORS):
        return "connection"
    if isinstance(exc, RETRYABLE_ERRORS):
        return "transient"
    if isinstance(exc, DATA_ERRORS):
        return "data"
    if is_hopeless(exc):
        return "hopeless"
    return "fatal"


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None


def describe(exc: BaseException) -> str:
    """One line for the ledger and logs: SQLSTATE, class and the server's message (never a DSN)."""
    code = sqlstate(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{code + ' ' if code else ''}{type(exc).__name__}: {text}".strip()


@dataclass
class RetryPolicy:
    max_attempts: int = 8
    base_ms: int = 100
    max_ms: int = 10_000
    rng: random.Random | None = None

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.base_ms, self.max_ms, self.rng)


@dataclass(frozen=True)
class KeyFailure:
    """A key (within one segment of a chunk) whose row makes the chunk SQL fail for a data reason."""

    part: int
    key: int
    error: str
    sqlstate: str | None


Range = tuple[int, int]  # half-open (lo, hi]


def split_range(lo: int, hi: int) -> tuple[Range, Range] | None:
    """Halve (lo, hi]; None when it holds a single key."""
    if hi - lo <= 1:
        return None
    mid = lo + (hi - lo) // 2
    return (lo, mid), (mid, hi)


async def bisect(
    lo: int,
    hi: int,
    attempt: Callable[[int, int], Awaitable[None]],
    *,
    count_keys: Callable[[int, int], Awaitable[int]] | None = None,
) -> list[tuple[int, BaseException]]:
    """Apply (lo, hi] piece by piece, isolating each key whose piece fails for a data reason.

    ``attempt(lo, hi)`` applies one sub-range (commit included) and raises on failure; data
    failures are split in two until the failing range is a single key, which is returned with
    its error. Non-data errors propagate (the caller retries or stops). ``count_keys`` lets the
    caller skip empty sub-ranges cheaply (an index-only count), so a sparse key space bisects in
    O(failures x log(rows)) attempts rather than O(log(span)).
    """
    failures: list[tuple[int, BaseException]] = []
    stack: list[Range] = [(lo, hi)]
    while stack:
        a, b = stack.pop()
        if count_keys is not None and await count_keys(a, b) == 0:
            continue
        try:
            await attempt(a, b)
        except Exception as exc:
            if classify(exc) != "data":
                raise
            halves = split_range(a, b)
            if halves is None:
                failures.append((b, exc))
            else:
                stack.extend(reversed(halves))  # left half first: keys come out in order
    return failures


async def with_retries(
    op: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[int, BaseException, float], Awaitable[None] | None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> T:
    """Run ``op``; transient and connection failures are retried with backoff up to ``max_attempts``."""
    import asyncio

    do_sleep = sleep or asyncio.sleep
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except Exception as exc:
            if classify(exc) not in ("transient", "connection") or attempt >= policy.max_attempts:
                raise
            delay = policy.delay(attempt)
            if on_retry is not None:
                maybe = on_retry(attempt, exc, delay)
                if maybe is not None:
                    await maybe
            await do_sleep(delay)
