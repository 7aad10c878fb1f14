"""Every retry decision of bxbatch: what an error means (by exception class / SQLSTATE) and the one retry loop.

Errors are classified by exception class (asyncpg maps each SQLSTATE to one), never by message
text, into one ``Outcome`` (``CLASSIFICATION`` is the table, first match wins):

* ``RECONNECT``: the connection or the server went away (terminated backend, server shutting
  down or starting up, network error): drop the connection, back off, retry on a fresh one;
* ``RETRY``: the moment is bad (lock timeout, deadlock, serialization failure, statement
  timeout, too many connections): back off with jitter and retry on the same connection;
* ``BISECT``: something inside a chunk's rows (constraint violation, bad value, an exception
  raised by a trigger): retrying cannot help; bisect the chunk down to the failing key;
* ``STOP_FOR_FIX``: a table, column or function the run needs is gone, or a privilege: stop at
  once with ``needs_fix`` (exit 13), resumable once fixed;
* ``LOCKS_EXHAUSTED``: the server's lock table is full (exit 14, ``db.locks.exhausted``);
* ``FATAL``: anything else (disk full, a bug).

``retry`` is the one loop that runs an operation again: every call site hands it a
``RetryPolicy`` (which outcomes it retries, how many attempts, the backoff, the log event) and
reacts to what it finally raises. DESIGN.md ("Retries") lists which site uses which policy.
"""

from __future__ import annotations

import errno
import inspect
import random
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.dsn import scrub
from bxbatch.errors import StoppedForFix

if TYPE_CHECKING:
    from bxbatch.settings import Settings

T = TypeVar("T")


class Outcome(StrEnum):
    """What an error means for the operation that met it. Values are the metric labels of retries."""

    RECONNECT = "connection"
    RETRY = "transient"
    BISECT = "data"
    STOP_FOR_FIX = "hopeless"
    LOCKS_EXHAUSTED = "locks"
    FATAL = "fatal"


# --- the network errors of a connection, told apart from local file-system errors ---------------
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
        errno.ENOENT,  # a Unix socket that is gone: the server stopped (a missing *file* carries a filename)
    }
)
_LOCAL_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EISDIR})


class _NetworkErrorMeta(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return is_network_error(obj)


class NetworkError(OSError, metaclass=_NetworkErrorMeta):
    """``isinstance`` matcher (never in an ``except`` clause, which checks subclasses) for an OSError of the
    connection, never one of a local file."""


def is_network_error(exc: object) -> bool:
    """An OSError from a socket (connection refused or reset, a vanished Unix socket, a timeout).

    A local file-system error (a read-only backup directory, a full disk, a missing file) is not:
    those carry a file name or a local errno, and no reconnection cures them.
    """
    if not isinstance(exc, OSError):
        return False
    if isinstance(exc, ConnectionError | socket.gaierror | TimeoutError):
        return True
    if exc.filename is not None or exc.errno in _LOCAL_ERRNOS:
        return False
    return exc.errno in _NETWORK_ERRNOS


def is_out_of_locks(exc: BaseException) -> bool:
    """SQLSTATE 53200 (out of memory) raised by the lock manager, told from any other out-of-memory by
    its HINT field (the server's structured hint names max_locks_per_transaction; never the message).

    Looks inside exception groups (a task group of workers raises one)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_out_of_locks(inner) for inner in exc.exceptions)
    return isinstance(exc, pgexc.OutOfMemoryError) and "max_locks_per_transaction" in (getattr(exc, "hint", None) or "")


# --- the classification: first row whose classes match wins --------------------------------------
CLASSIFICATION: tuple[tuple[Outcome, tuple[type[BaseException], ...]], ...] = (
    (
        Outcome.RECONNECT,
        (
            pgexc.AdminShutdownError,  # 57P01 server shutting down / pg_terminate_backend
            pgexc.CrashShutdownError,  # 57P02
            pgexc.CannotConnectNowError,  # 57P03 starting up / shutting down
            pgexc.PostgresConnectionError,  # class 08 (08003 connection does not exist, 08006 failure, ...)
            pgexc.IdleInTransactionSessionTimeoutError,  # 25P03: the server closed the session
            asyncpg.InterfaceError,  # connection closed under us ("connection is closed")
            asyncpg.InternalClientError,  # protocol left mid-operation by a backend killed under it
            ConnectionError,
            NetworkError,  # an isinstance() matcher: these tuples are for isinstance(), not except clauses
        ),
    ),
    (
        Outcome.RETRY,
        (
            pgexc.LockNotAvailableError,  # 55P03 lock_timeout
            pgexc.DeadlockDetectedError,  # 40P01
            pgexc.SerializationError,  # 40001
            pgexc.QueryCanceledError,  # 57014 statement_timeout (and pg_cancel_backend)
            pgexc.TooManyConnectionsError,  # 53300 (a timeout, TimeoutError, is a network error above)
        ),
    ),
    (
        Outcome.BISECT,
        (
            pgexc.IntegrityConstraintViolationError,  # class 23: unique, foreign key, not null, check, exclusion
            pgexc.DataError,  # class 22: invalid text representation, numeric out of range, ...
            pgexc.RaiseError,  # P0001: RAISE EXCEPTION in a trigger or function the chunk fires
            pgexc.CardinalityViolationError,  # 21000: ON CONFLICT touching a row twice (duplicate source keys)
        ),
    ),
    (
        Outcome.STOP_FOR_FIX,
        (
            pgexc.UndefinedTableError,  # 42P01
            pgexc.UndefinedColumnError,  # 42703
            pgexc.UndefinedFunctionError,  # 42883
            pgexc.UndefinedObjectError,  # 42704
            pgexc.InvalidSchemaNameError,  # 3F000
            pgexc.InsufficientPrivilegeError,  # 42501
        ),
    ),
)

RETRYABLE = frozenset({Outcome.RETRY, Outcome.RECONNECT})  # what most sites retry: the moment, not the data


def classify(exc: BaseException) -> Outcome:
    """The one classification of an error, by exception class (SQLSTATE), never by message text."""
    for outcome, classes in CLASSIFICATION:
        if isinstance(exc, classes):
            return outcome
    if is_out_of_locks(exc):
        return Outcome.LOCKS_EXHAUSTED
    return Outcome.FATAL


def is_retryable(exc: BaseException) -> bool:
    """Try again later (the server or the moment), never about the data."""
    return classify(exc) in RETRYABLE


def is_connection_lost(exc: BaseException) -> bool:
    """The connection is gone: the caller must take a fresh one."""
    return classify(exc) is Outcome.RECONNECT


def is_hopeless(exc: BaseException) -> bool:
    """No retry can cure it: an object the run needs is gone, or a privilege (exit 13 via ``needs_fix``)."""
    return classify(exc) is Outcome.STOP_FOR_FIX


def needs_fix(exc: BaseException, doing: str, hint: str | None = None) -> StoppedForFix:
    """The one-line error for a hopeless cause: what is missing, and that resume continues after the fix."""
    text = (getattr(exc, "message", None) or str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, pgexc.InsufficientPrivilegeError):
        default = "grant the privilege to bxbatch's role, then run `bxbatch resume`; every committed chunk is kept"
    else:
        default = "restore what it names (or undo the change), then run `bxbatch resume`; every committed chunk is kept"
    return StoppedForFix(f"stopped while {doing}: {scrub(text)}", hint=hint if hint else default)


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, asyncpg.PostgresError) else None


def describe(exc: BaseException) -> str:
    """One line for the ledger and logs: SQLSTATE, class and the server's message (never a DSN)."""
    code = sqlstate(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{code + ' ' if code else ''}{type(exc).__name__}: {text}".strip()


# --- the loop ---------------------------------------------------------------------------------------
def backoff_delay(attempt: int, base_ms: int, max_ms: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter (half to all of the ceiling), in seconds. ``attempt`` counts from 1."""
    rng = rng or random.Random()
    ceiling = min(max_ms, base_ms * (2 ** max(0, attempt - 1)))
    return rng.uniform(ceiling / 2, ceiling) / 1000.0


@dataclass(frozen=True)
class RetryPolicy:
    """One call site's retry policy, as data: what it retries, how often, how long it waits, what it logs."""

    event: str | None = None  # the log event of a retry (None: the site records retries its own way)
    retry_on: frozenset[Outcome] = RETRYABLE
    also: tuple[type[BaseException], ...] = ()  # classes retried whatever their outcome (our ConnectionFailed)
    # races with the live application: retried whatever their outcome on the first ``race_attempts - 1``
    # attempts; met again after that, they are a fact about the data and their outcome decides
    races: tuple[type[BaseException], ...] = ()
    race_attempts: int = 3
    max_attempts: int | None = 8  # attempts in all, the first one included; None: until it succeeds
    base_ms: int = 100
    max_ms: int = 10_000
    level: str = "warning"
    first_only: bool = False  # log only the first retry of a streak (a poller's outage)

    def for_settings(self, settings: Settings) -> RetryPolicy:
        """The same policy bounded by ``--max-attempts``, ``--retry-base-ms`` and ``--retry-max-ms``."""
        return replace(
            self, max_attempts=settings.max_attempts, base_ms=settings.retry_base_ms, max_ms=settings.retry_max_ms
        )

    def covers(self, exc: BaseException, attempt: int = 1) -> bool:
        """Whether this site retries ``exc`` when met on ``attempt`` (attempts left or not)."""
        if isinstance(exc, self.also) or (isinstance(exc, self.races) and attempt < self.race_attempts):
            return True
        return classify(exc) in self.retry_on


@dataclass(frozen=True)
class Retry:
    """One scheduled retry, as handed to ``on_retry``: the attempt that failed, why, and the wait before the next."""

    attempt: int
    error: BaseException
    outcome: Outcome
    delay_s: float


@dataclass
class RetryCount:
    """An ``on_retry`` that counts the retries (the figures phases report)."""

    n: int = 0

    def __call__(self, _scheduled: Retry) -> None:
        self.n += 1


async def retry(
    op: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    log: Any = None,
    fields: Mapping[str, object] | None = None,
    on_retry: Callable[[Retry], object] | None = None,
    stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Run ``op`` until it returns; a failure ``policy`` covers is retried after a jittered backoff.

    The failure is raised as it is when the policy does not cover it, when the attempts are spent,
    or when ``stop()`` says the run is stopping. Before each wait the retry is logged
    (``policy.event`` with ``fields``, the attempt, the error class and the delay) and handed to
    ``on_retry`` (sync or async: count it, note it in the ledger, drop a lost connection so the
    next attempt takes a fresh one). Cancellation is never caught.
    """
    attempt = 0
    while True:  # the one retry loop of bxbatch
        attempt += 1
        try:
            return await op()
        except Exception as exc:
            if not policy.covers(exc, attempt):
                raise
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise
            if stop is not None and stop():
                raise
            scheduled = Retry(attempt, exc, classify(exc), backoff_delay(attempt, policy.base_ms, policy.max_ms, rng))
            if log is not None and policy.event is not None and (attempt == 1 or not policy.first_only):
                getattr(log, policy.level)(
                    policy.event,
                    **(fields or {}),
                    attempt=attempt,
                    error=type(exc).__name__,
                    delay_s=round(scheduled.delay_s, 3),
                )
            if on_retry is not None:
                maybe = on_retry(scheduled)
                if inspect.isawaitable(maybe):
                    await maybe
            await sleep(scheduled.delay_s)
