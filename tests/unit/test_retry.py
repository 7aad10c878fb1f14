"""The retry classifier (by exception class / SQLSTATE, never message text), backoff and bisection."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import asyncpg.exceptions as pgexc
import pytest

from bxbatch.db.retry import RetryPolicy, bisect, classify, describe, split_range, with_retries


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (pgexc.LockNotAvailableError("canceling statement due to lock timeout"), "transient"),
        (pgexc.DeadlockDetectedError("deadlock detected"), "transient"),
        (pgexc.SerializationError("could not serialize access"), "transient"),
        (pgexc.QueryCanceledError("canceling statement due to statement timeout"), "transient"),
        (pgexc.TooManyConnectionsError("sorry, too many clients already"), "transient"),
        (pgexc.AdminShutdownError("terminating connection due to administrator command"), "connection"),
        (pgexc.CrashShutdownError("terminating connection because of crash of another server process"), "connection"),
        (pgexc.CannotConnectNowError("the database system is starting up"), "connection"),
        (pgexc.IdleInTransactionSessionTimeoutError("idle-in-transaction timeout"), "connection"),
        (asyncpg.InterfaceError("connection is closed"), "connection"),
        (ConnectionResetError(), "connection"),
        (pgexc.CheckViolationError("new row violates check constraint"), "data"),
        (pgexc.NotNullViolationError("null value in column"), "data"),
        (pgexc.UniqueViolationError("duplicate key value"), "data"),
        (pgexc.ForeignKeyViolationError("violates foreign key constraint"), "data"),
        (pgexc.InvalidTextRepresentationError("invalid input syntax for type integer"), "data"),
        (pgexc.NumericValueOutOfRangeError("integer out of range"), "data"),
        (pgexc.RaiseError("raised by a trigger"), "data"),
        (pgexc.CardinalityViolationError("ON CONFLICT DO UPDATE command cannot affect row a second time"), "data"),
        (pgexc.UndefinedColumnError("column does not exist"), "hopeless"),
        (pgexc.UndefinedTableError("relation does not exist"), "hopeless"),
        (pgexc.UndefinedFunctionError("operator does not exist: character varying ->> unknown"), "hopeless"),
        (pgexc.InsufficientPrivilegeError("permission denied"), "hopeless"),
        # local file system errors are not connection loss (issue 11, item 3): a read-only backup directory
        (PermissionError(13, "Permission denied", "/backups/x.dump.partial"), "fatal"),
        (OSError(30, "Read-only file system"), "fatal"),
        (OSError(36, "File name too long", "/tmp/" + "x" * 300), "fatal"),
        (FileNotFoundError(2, "No such file or directory"), "connection"),  # a Unix socket gone with its server
        (ConnectionRefusedError(111, "Connection refused"), "connection"),
        (pgexc.DiskFullError("could not extend file"), "fatal"),
        (ValueError("a bug"), "fatal"),
    ],
)
def test_classify_by_class(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind


def test_classification_ignores_message_text() -> None:
    # a data error whose message talks about timeouts is still a data error, and vice versa
    assert classify(pgexc.CheckViolationError("lock timeout deadlock connection")) == "data"
    assert classify(pgexc.LockNotAvailableError("violates check constraint")) == "transient"


def test_describe_names_sqlstate_and_class() -> None:
    exc = pgexc.CheckViolationError('new row for relation "t" violates check constraint "c"\nDETAIL: ...')
    assert describe(exc) == '23514 CheckViolationError: new row for relation "t" violates check constraint "c"'


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(base_ms=100, max_ms=1000, rng=random.Random(7))
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jitter: retries of many workers do not line up


async def test_with_retries_retries_transient_up_to_the_bound() -> None:
    calls = 0
    slept: list[float] = []

    async def sleep(d: float) -> None:
        slept.append(d)

    async def op() -> str:
        nonlocal calls
        calls += 1
        raise pgexc.LockNotAvailableError("lock timeout")

    with pytest.raises(pgexc.LockNotAvailableError):
        await with_retries(op, RetryPolicy(max_attempts=4), sleep=sleep)
    assert calls == 4 and len(slept) == 3


async def test_with_retries_never_retries_data_or_fatal() -> None:
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise pgexc.CheckViolationError("bad row")

    with pytest.raises(pgexc.CheckViolationError):
        await with_retries(op, RetryPolicy(max_attempts=5), sleep=lambda d: asyncio.sleep(0))
    assert calls == 1


async def test_with_retries_succeeds_after_connection_loss() -> None:
    outcomes: list[BaseException | None] = [pgexc.AdminShutdownError("terminated"), None]

    async def op() -> str:
        exc = outcomes.pop(0)
        if exc:
            raise exc
        return "ok"

    assert await with_retries(op, RetryPolicy(), sleep=lambda d: asyncio.sleep(0)) == "ok"


def test_split_range() -> None:
    assert split_range(0, 10) == ((0, 5), (5, 10))
    assert split_range(4, 5) is None
    assert split_range(4, 6) == ((4, 5), (5, 6))


async def test_bisect_isolates_each_failing_key() -> None:
    bad = {17, 18, 900}
    applied: set[int] = set()
    attempts = 0

    async def attempt(lo: int, hi: int) -> None:
        nonlocal attempts
        attempts += 1
        if any(lo < k <= hi for k in bad):
            raise pgexc.CheckViolationError(f"row in ({lo}, {hi}]")
        applied.update(range(lo + 1, hi + 1))

    failures = await bisect(0, 1024, attempt)
    assert [k for k, _ in failures] == [17, 18, 900]
    assert applied == set(range(1, 1025)) - bad  # every other key applied exactly once
    assert attempts < 80  # O(failures x log(span)), not O(span)


async def test_bisect_lets_non_data_errors_through() -> None:
    async def attempt(lo: int, hi: int) -> None:
        raise pgexc.LockNotAvailableError("lock timeout")

    with pytest.raises(pgexc.LockNotAvailableError):
        await bisect(0, 8, attempt)
