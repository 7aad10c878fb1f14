"""asyncpg connections and pools: session setup, connect-error translation, identifier quoting."""

from __future__ import annotations

import asyncio

import asyncpg
import asyncpg.exceptions as pgexc

from bxbatch.db.dsn import describe_target, for_asyncpg, redact_dsn
from bxbatch.db.idents import qualified as qualified  # re-exported: callers quote through db.idents
from bxbatch.db.idents import quote_ident as quote_ident
from bxbatch.errors import ConnectionFailed
from bxbatch.migrations.loader import load_migration
from bxbatch.settings import Settings

APP_NAME = "bxbatch"


def pinned_search_path(schema: str) -> str:
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
    server_settings = {
        "application_name": f"{APP_NAME}:{role}"[:63],
        "search_path": pinned_search_path(load_migration(settings.migration).profile.schema),
    }
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


async def server_version_num(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT current_setting('server_version_num')::int"))
