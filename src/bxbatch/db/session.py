"""asyncpg connections and pools: session setup, error translation, retryable-error classification, quoting."""

from __future__ import annotations

import asyncio
import errno
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.dsn import describe_target, for_asyncpg, redact_dsn, scrub
from bxbatch.errors import ConnectionFailed, StoppedForFix
from bxbatch.migrations.profile import GUIDE
from bxbatch.settings import Settings

T = TypeVar("T")

APP_NAME = "bxbatch"

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


# Errors no retry can cure, about the database's objects or this role's rights (a table, column or
# function the run needs was dropped, a privilege revoked): the run stops at once; every committed
# chunk is recorded, so `bxbatch resume` continues once the cause is fixed.
HOPELESS_ERRORS: tuple[type[BaseException], ...] = (
    pgexc.UndefinedTableError,  # 42P01
    pgexc.UndefinedColumnError,  # 42703
    pgexc.UndefinedFunctionError,  # 42883
    pgexc.UndefinedObjectError,  # 42704
    pgexc.InvalidSchemaNameError,  # 3F000
    pgexc.InsufficientPrivilegeError,  # 42501
)


def is_hopeless(exc: BaseException) -> bool:
    return isinstance(exc, HOPELESS_ERRORS)


def needs_fix(exc: BaseException, doing: str, hint: str | None = None) -> StoppedForFix:
    """The one-line error for a hopeless cause: what is missing, and that resume continues after the fix."""
    text = (getattr(exc, "message", None) or str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, pgexc.InsufficientPrivilegeError):
        default = "grant the privilege to bxbatch's role, then run `bxbatch resume`; every committed chunk is kept"
    else:
        default = "restore what it names (or undo the change), then run `bxbatch resume`; every committed chunk is kept"
    return StoppedForFix(f"stopped while {doing}: {scrub(text)}", hint=hint if hint else default)


# Errors that say "try again later" about the server or the moment, never about the data.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    pgexc.LockNotAvailableError,  # 55P03 lock_timeout
    pgexc.DeadlockDetectedError,  # 40P01
    pgexc.SerializationError,  # 40001
    pgexc.QueryCanceledError,  # 57014 statement_timeout (and pg_cancel_backend)
    pgexc.AdminShutdownError,  # 57P01 server shutting down / pg_terminate_backend
    pgexc.CrashShutdownError,  # 57P02
    pgexc.CannotConnectNowError,  # 57P03 starting up / shutting down
    pgexc.TooManyConnectionsError,  # 53300
    pgexc.ConnectionDoesNotExistError,  # 08003
    pgexc.ConnectionFailureError,  # 08006
    pgexc.PostgresConnectionError,  # class 08
    pgexc.IdleInTransactionSessionTimeoutError,  # 25P03
    asyncpg.InterfaceError,  # connection closed under us ("connection is closed")
    asyncpg.InternalClientError,  # protocol left mid-operation by a backend killed under it
    ConnectionError,
    NetworkError,  # an isinstance() matcher: these tuples are for isinstance(), not except clauses
    asyncio.TimeoutError,
)

# Errors that mean the connection is gone: the caller must take a fresh one.
CONNECTION_LOST_ERRORS: tuple[type[BaseException], ...] = (
    pgexc.AdminShutdownError,
    pgexc.CrashShutdownError,
    pgexc.CannotConnectNowError,
    pgexc.ConnectionDoesNotExistError,
    pgexc.PostgresConnectionError,
    pgexc.IdleInTransactionSessionTimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    ConnectionError,
    NetworkError,
)


def is_retryable(exc: BaseException) -> bool:
    """Decide by exception class (SQLSTATE), never by message text."""
    return isinstance(exc, RETRYABLE_ERRORS)


def is_connection_lost(exc: BaseException) -> bool:
    return isinstance(exc, CONNECTION_LOST_ERRORS)


def backoff_delay(attempt: int, base_ms: int, max_ms: int, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter, in seconds. ``attempt`` counts from 1."""
    rng = rng or random.Random()
    ceiling = min(max_ms, base_ms * (2 ** max(0, attempt - 1)))
    return rng.uniform(ceiling / 2, ceiling) / 1000.0


def quote_ident(name: str) -> str:
    """Quote one SQL identifier. The only way a table name reaches SQL text in bxbatch."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def pinned_search_path(schema: str = GUIDE.schema) -> str:
    """The search_path of every bxbatch session: the migration's schema, then pg_temp, nothing else.

    pg_catalog is not named: PostgreSQL then searches it first (built-in functions and types can
    never be shadowed) and creates unqualified objects in the first named schema, the migration's.
    Naming it first would make pg_catalog the creation schema. pg_temp is named last so a
    temporary table cannot shadow a base table (unnamed, it would be searched first of all). So
    the database's or role's own search_path (``ALTER DATABASE ... SET search_path = shadow,
    public``, a ``"$user"`` schema) never redirects a name bxbatch or the migration's SQL uses.
    """
    return f"{quote_ident(schema)}, pg_temp"


def _server_settings(settings: Settings, role: str) -> dict[str, str]:
    server_settings = {"application_name": f"{APP_NAME}:{role}"[:63], "search_path": pinned_search_path()}
    if role == "probe":  # the application probe (--probe-sql) only ever reads
        server_settings["default_transaction_read_only"] = "on"
    return server_settings


def translate_connect_error(exc: BaseException, dsn: str | None) -> ConnectionFailed:
    # with no DSN, name what was tried (libpq variables and defaults), never "(none)"
    where = redact_dsn(dsn) if dsn else describe_target(dsn)
    if isinstance(exc, pgexc.InvalidPasswordError | pgexc.InvalidAuthorizationSpecificationError):
        return ConnectionFailed(
            f"authentication failed connecting to {where}",
            hint="check the user and password (PGPASSWORD, ~/.pgpass or the DSN)",
        )
    if isinstance(exc, pgexc.InvalidCatalogNameError):
        return ConnectionFailed(
            f"database does not exist at {where}",
            hint="create it or fix the database name in the DSN",
        )
    if isinstance(exc, pgexc.CannotConnectNowError):
        return ConnectionFailed(f"server at {where} is starting up or shutting down", hint="retry in a moment")
    if isinstance(exc, pgexc.TooManyConnectionsError):
        return ConnectionFailed(
            f"server at {where} has no free connection slots",
            hint="lower --concurrency or raise max_connections",
        )
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return ConnectionFailed(f"timed out connecting to {where}", hint="check host, port and firewall; set --dsn")
    if isinstance(exc, OSError):
        return ConnectionFailed(
            f"cannot reach PostgreSQL at {where}: {exc.strerror or type(exc).__name__}",
            hint="is the server running? check --dsn / BXBATCH_DSN / DATABASE_URL / PGHOST",
        )
    if isinstance(exc, ValueError | asyncpg.ClientConfigurationError):
        return ConnectionFailed(f"invalid connection string {where}", hint="use postgresql://user@host:port/dbname")
    return ConnectionFailed(f"cannot connect to {where}: {type(exc).__name__}")


async def connect(settings: Settings, role: str = "main", connect_timeout: float = 10.0) -> asyncpg.Connection:
    dsn = for_asyncpg(settings.dsn) if settings.dsn else None
    try:
        return await asyncpg.connect(dsn, timeout=connect_timeout, server_settings=_server_settings(settings, role))
    except Exception as exc:
        raise translate_connect_error(exc, settings.dsn) from exc


async def create_pool(settings: Settings, size: int, role: str = "worker") -> asyncpg.Pool:
    dsn = for_asyncpg(settings.dsn) if settings.dsn else None
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=max(1, size),
            timeout=10.0,
            server_settings=_server_settings(settings, role),
        )
    except Exception as exc:
        raise translate_connect_error(exc, settings.dsn) from exc
    assert pool is not None
    return pool


async def retrying(
    op: Callable[[], Awaitable[T]],
    settings: Settings,
    *,
    on_retry: Callable[[int, BaseException, float], Any] | None = None,
) -> T:
    """Run ``op`` until it succeeds, retrying retryable errors with backoff up to max_attempts."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await op()
        except Exception as exc:
            if not is_retryable(exc) or attempt >= settings.max_attempts:
                raise
            delay = backoff_delay(attempt, settings.retry_base_ms, settings.retry_max_ms)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await asyncio.sleep(delay)


async def server_version_num(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
