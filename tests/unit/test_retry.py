"""The one retry module: classification by exception class / SQLSTATE (never message text), backoff, the loop."""

from __future__ import annotations

import errno
import random
from typing import Any

import anyio
import asyncpg
import asyncpg.exceptions as pgexc
import pytest

from bxbatch.db.retry import (
    CLASSIFICATION,
    RETRYABLE,
    NetworkError,
    Outcome,
    Retry,
    RetryCount,
    RetryPolicy,
    backoff_delay,
    classify,
    describe,
    is_connection_lost,
    is_retryable,
    retry,
)
from bxbatch.errors import ConnectionFailed
from bxbatch.settings import Settings


def out_of_locks() -> pgexc.OutOfMemoryError:
    exc = pgexc.OutOfMemoryError("out of shared memory")
    exc.hint = 'You might need to increase "max_locks_per_transaction".'  # type: ignore[attr-defined]
    return exc


# (the class the case stands for, an error of it, its outcome): every class CLASSIFICATION names, and more
CASES: list[tuple[type[BaseException], BaseException, Outcome]] = [
    (
        pgexc.AdminShutdownError,
        pgexc.AdminShutdownError("terminating connection due to administrator command"),
        Outcome.RECONNECT,
    ),
    (pgexc.CrashShutdownError, pgexc.CrashShutdownError("terminating connection because of crash"), Outcome.RECONNECT),
    (pgexc.CannotConnectNowError, pgexc.CannotConnectNowError("the database system is starting up"), Outcome.RECONNECT),
    (pgexc.PostgresConnectionError, pgexc.PostgresConnectionError("connection exception"), Outcome.RECONNECT),
    (pgexc.ConnectionDoesNotExistError, pgexc.ConnectionDoesNotExistError("gone"), Outcome.RECONNECT),
    (pgexc.ConnectionFailureError, pgexc.ConnectionFailureError("failure"), Outcome.RECONNECT),
    (
        pgexc.IdleInTransactionSessionTimeoutError,
        pgexc.IdleInTransactionSessionTimeoutError("idle timeout"),
        Outcome.RECONNECT,
    ),
    (asyncpg.InterfaceError, asyncpg.InterfaceError("connection is closed"), Outcome.RECONNECT),
    (asyncpg.InternalClientError, asyncpg.InternalClientError("protocol"), Outcome.RECONNECT),
    (ConnectionError, ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), Outcome.RECONNECT),
    (ConnectionError, ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), Outcome.RECONNECT),
    (ConnectionError, BrokenPipeError(errno.EPIPE, "Broken pipe"), Outcome.RECONNECT),
    (NetworkError, OSError(errno.ENETUNREACH, "Network is unreachable"), Outcome.RECONNECT),
    (NetworkError, FileNotFoundError(errno.ENOENT, "No such file or directory"), Outcome.RECONNECT),  # a socket
    (NetworkError, TimeoutError(), Outcome.RECONNECT),
    (
        pgexc.LockNotAvailableError,
        pgexc.LockNotAvailableError("canceling statement due to lock timeout"),
        Outcome.RETRY,
    ),
    (pgexc.DeadlockDetectedError, pgexc.DeadlockDetectedError("deadlock detected"), Outcome.RETRY),
    (pgexc.SerializationError, pgexc.SerializationError("could not serialize access"), Outcome.RETRY),
    (pgexc.QueryCanceledError, pgexc.QueryCanceledError("canceling statement due to statement timeout"), Outcome.RETRY),
    (pgexc.TooManyConnectionsError, pgexc.TooManyConnectionsError("sorry, too many clients already"), Outcome.RETRY),
    (
        pgexc.IntegrityConstraintViolationError,
        pgexc.CheckViolationError("new row violates check constraint"),
        Outcome.BISECT,
    ),
    (pgexc.IntegrityConstraintViolationError, pgexc.NotNullViolationError("null value in column"), Outcome.BISECT),
    (pgexc.IntegrityConstraintViolationError, pgexc.UniqueViolationError("duplicate key value"), Outcome.BISECT),
    (
        pgexc.IntegrityConstraintViolationError,
        pgexc.ForeignKeyViolationError("violates foreign key constraint"),
        Outcome.BISECT,
    ),
    (pgexc.DataError, pgexc.InvalidTextRepresentationError("invalid input syntax for type integer"), Outcome.BISECT),
    (pgexc.DataError, pgexc.NumericValueOutOfRangeError("integer out of range"), Outcome.BISECT),
    (pgexc.RaiseError, pgexc.RaiseError("raised by a trigger"), Outcome.BISECT),
    (
        pgexc.CardinalityViolationError,
        pgexc.CardinalityViolationError("ON CONFLICT DO UPDATE command cannot affect row a second time"),
        Outcome.BISECT,
    ),
    (pgexc.UndefinedTableError, pgexc.UndefinedTableError("relation does not exist"), Outcome.STOP_FOR_FIX),
    (pgexc.UndefinedColumnError, pgexc.UndefinedColumnError("column does not exist"), Outcome.STOP_FOR_FIX),
    (
        pgexc.UndefinedFunctionError,
        pgexc.UndefinedFunctionError("operator does not exist: character varying ->>"),
        Outcome.STOP_FOR_FIX,
    ),
    (pgexc.UndefinedObjectError, pgexc.UndefinedObjectError("type does not exist"), Outcome.STOP_FOR_FIX),
    (pgexc.InvalidSchemaNameError, pgexc.InvalidSchemaNameError("schema does not exist"), Outcome.STOP_FOR_FIX),
    (pgexc.InsufficientPrivilegeError, pgexc.InsufficientPrivilegeError("permission denied"), Outcome.STOP_FOR_FIX),
    (pgexc.OutOfMemoryError, out_of_locks(), Outcome.LOCKS_EXHAUSTED),
    (pgexc.OutOfMemoryError, pgexc.OutOfMemoryError("out of memory"), Outcome.FATAL),  # work_mem, not the lock table
    (pgexc.InvalidCachedStatementError, pgexc.InvalidCachedStatementError("cached plan"), Outcome.FATAL),
    (pgexc.DiskFullError, pgexc.DiskFullError("could not extend file"), Outcome.FATAL),
    # local file system errors are not connection loss (issue 11, item 3): a read-only backup directory
    (OSError, PermissionError(errno.EACCES, "Permission denied", "/backups/x.dump.partial"), Outcome.FATAL),
    (OSError, OSError(errno.EROFS, "Read-only file system"), Outcome.FATAL),
    (OSError, OSError(errno.ENOSPC, "No space left on device"), Outcome.FATAL),
    (OSError, OSError(errno.ENAMETOOLONG, "File name too long", "/tmp/" + "x" * 300), Outcome.FATAL),
    (OSError, FileNotFoundError(errno.ENOENT, "No such file or directory", "/backups/missing/x.dump"), Outcome.FATAL),
    (ConnectionFailed, ConnectionFailed("cannot reach PostgreSQL"), Outcome.FATAL),  # ours: sites opt in (`also`)
    (ValueError, ValueError("a bug"), Outcome.FATAL),
]


@pytest.mark.parametrize(("named", "exc", "outcome"), CASES, ids=[f"{type(c[1]).__name__}-{c[2]}" for c in CASES])
def test_classify_by_class(named: type[BaseException], exc: BaseException, outcome: Outcome) -> None:
    if named is not NetworkError:  # an isinstance() matcher of errnos, not a class errors are made of
        assert isinstance(exc, named)
    assert classify(exc) is outcome
    assert is_retryable(exc) == (outcome in RETRYABLE)
    assert is_connection_lost(exc) == (outcome is Outcome.RECONNECT)


def test_every_class_the_classification_names_is_tested() -> None:
    named = {cls for _outcome, classes in CLASSIFICATION for cls in classes}
    assert named <= {case[0] for case in CASES}


def test_outcomes_keep_their_metric_labels() -> None:
    # bxbatch_retries_total{error_class=...} and the status output show these values
    assert [o.value for o in Outcome] == ["connection", "transient", "data", "hopeless", "locks", "fatal"]


def test_classification_ignores_message_text() -> None:
    # a data error whose message talks about timeouts is still a data error, and vice versa
    assert classify(pgexc.CheckViolationError("lock timeout deadlock connection")) is Outcome.BISECT
    assert classify(pgexc.LockNotAvailableError("violates check constraint")) is Outcome.RETRY
    assert classify(pgexc.OutOfMemoryError("max_locks_per_transaction")) is Outcome.FATAL  # the hint, not the text


def test_describe_names_sqlstate_and_class() -> None:
    exc = pgexc.CheckViolationError('new row for relation "t" violates check constraint "c"\nDETAIL: ...')
    assert describe(exc) == '23514 CheckViolationError: new row for relation "t" violates check constraint "c"'


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [backoff_delay(attempt, 100, 1000, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jitter: retries of many workers do not line up


# --- the loop ---------------------------------------------------------------------------------------
class Failing:
    """An operation that raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **kw: self.lines.append((level, event, kw))


async def test_the_loop_retries_up_to_max_attempts_with_growing_backoff() -> None:
    op = Failing(*[pgexc.LockNotAvailableError("lock timeout") for _ in range(10)])
    sleeps = Sleeps()
    with pytest.raises(pgexc.LockNotAvailableError):
        await retry(op, RetryPolicy(max_attempts=4, base_ms=100, max_ms=300), sleep=sleeps, rng=random.Random(1))
    assert op.calls == 4 and len(sleeps.delays) == 3
    for delay, ceiling in zip(sleeps.delays, (0.1, 0.2, 0.3), strict=True):
        assert ceiling / 2 <= delay <= ceiling


async def test_the_loop_takes_its_bounds_from_settings() -> None:
    settings = Settings(max_attempts=3, retry_base_ms=40, retry_max_ms=50)
    policy = RetryPolicy(event="ddl_retry").for_settings(settings)
    assert (policy.max_attempts, policy.base_ms, policy.max_ms, policy.event) == (3, 40, 50, "ddl_retry")
    op = Failing(*[pgexc.DeadlockDetectedError("deadlock") for _ in range(5)])
    sleeps = Sleeps()
    with pytest.raises(pgexc.DeadlockDetectedError):
        await retry(op, policy, sleep=sleeps)
    assert op.calls == 3 and all(0.02 <= d <= 0.05 for d in sleeps.delays)


async def test_the_loop_never_retries_what_its_policy_does_not_cover() -> None:
    for exc in (pgexc.CheckViolationError("bad row"), pgexc.UndefinedTableError("gone"), ValueError("bug")):
        op = Failing(exc)
        with pytest.raises(type(exc)):
            await retry(op, RetryPolicy(max_attempts=5), sleep=Sleeps())
        assert op.calls == 1
    only_locks = RetryPolicy(retry_on=frozenset({Outcome.RETRY}), max_attempts=5)
    op = Failing(pgexc.AdminShutdownError("terminated"))
    with pytest.raises(pgexc.AdminShutdownError):
        await retry(op, only_locks, sleep=Sleeps())
    assert op.calls == 1


async def test_the_loop_hands_each_retry_to_on_retry_and_succeeds_after_a_lost_connection() -> None:
    seen: list[Retry] = []

    async def on_retry(scheduled: Retry) -> None:  # async hooks are awaited (a ledger note)
        seen.append(scheduled)

    op = Failing(pgexc.AdminShutdownError("terminated"), pgexc.LockNotAvailableError("lock timeout"))
    assert await retry(op, RetryPolicy(), on_retry=on_retry, sleep=Sleeps()) == "ok"
    assert [(r.attempt, r.outcome) for r in seen] == [(1, Outcome.RECONNECT), (2, Outcome.RETRY)]
    count = RetryCount()
    assert await retry(Failing(pgexc.SerializationError("x")), RetryPolicy(), on_retry=count, sleep=Sleeps()) == "ok"
    assert count.n == 1


async def test_the_loop_stops_retrying_when_the_run_stops() -> None:
    stopping = False

    def note(_scheduled: Retry) -> None:
        nonlocal stopping
        stopping = True  # e.g. SIGTERM during the first backoff

    op = Failing(*[pgexc.LockNotAvailableError("lock timeout") for _ in range(5)])
    with pytest.raises(pgexc.LockNotAvailableError):
        await retry(op, RetryPolicy(max_attempts=None), on_retry=note, stop=lambda: stopping, sleep=Sleeps())
    assert op.calls == 2


async def test_the_loop_without_an_attempt_limit_retries_until_it_succeeds() -> None:
    op = Failing(*[ConnectionRefusedError(errno.ECONNREFUSED, "refused") for _ in range(50)])
    assert await retry(op, RetryPolicy(max_attempts=None, base_ms=1, max_ms=1), sleep=Sleeps()) == "ok"
    assert op.calls == 51


async def test_races_are_retried_on_the_first_attempts_only_and_also_always() -> None:
    # the worker's races: a foreign key violation is retried on attempts 1 and 2, then its outcome (bisect) decides
    races = RetryPolicy(races=(pgexc.ForeignKeyViolationError,), race_attempts=3, max_attempts=8)
    op = Failing(*[pgexc.ForeignKeyViolationError("raced") for _ in range(5)])
    with pytest.raises(pgexc.ForeignKeyViolationError):
        await retry(op, races, sleep=Sleeps())
    assert op.calls == 3
    assert races.covers(pgexc.ForeignKeyViolationError("x"), 2) and not races.covers(
        pgexc.ForeignKeyViolationError("x"), 3
    )
    pollers = RetryPolicy(also=(ConnectionFailed,), max_attempts=None)
    assert await retry(Failing(ConnectionFailed("down"), ConnectionFailed("down")), pollers, sleep=Sleeps()) == "ok"


async def test_the_loop_logs_the_policy_event_with_the_site_fields() -> None:
    log = Log()
    policy = RetryPolicy(event="trigger_retry", max_attempts=None)
    await retry(Failing(pgexc.LockNotAvailableError("x")), policy, log=log, fields={"table": "t1"}, sleep=Sleeps())
    [(level, event, fields)] = log.lines
    assert (level, event) == ("warning", "trigger_retry")
    assert fields["table"] == "t1" and fields["attempt"] == 1 and fields["error"] == "LockNotAvailableError"
    log = Log()
    outage = RetryPolicy(event="health_unavailable", max_attempts=None, level="info", first_only=True)
    await retry(Failing(*[pgexc.AdminShutdownError("x") for _ in range(4)]), outage, log=log, sleep=Sleeps())
    assert [(lvl, ev) for lvl, ev, _ in log.lines] == [("info", "health_unavailable")]  # once per outage


async def test_the_loop_sleeps_for_real_between_attempts_and_is_cancellable() -> None:
    op = Failing(*[pgexc.LockNotAvailableError("x") for _ in range(100)])
    with anyio.move_on_after(0.3) as scope:
        await retry(op, RetryPolicy(max_attempts=None, base_ms=50, max_ms=50))
    assert scope.cancelled_caught and 3 <= op.calls <= 13  # 25-50 ms apart, cancelled in a backoff
