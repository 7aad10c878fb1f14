"""The safety-net options of `run` and `resume` (backup, preflight), added by ``@safetynet_options``.

Same mechanism as cli_safety: the decorator appends the options to the command's signature
(typer reads it), takes their values out before the command body runs and hands them to
``cli._settings`` through ``safetynet_overrides()``. Every option has an env var.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

_OVERRIDES: ContextVar[dict[str, Any] | None] = ContextVar("bxbatch_safetynet_overrides", default=None)
PANEL = "Backup and preflight"


def _opt(flag: str, env: str, help_: str, **kw: Any) -> Any:
    return typer.Option(flag, envvar=env, help=help_, rich_help_panel=PANEL, **kw)


BACKUP_PATH = _opt(
    "--backup-path",
    "BXBATCH_BACKUP_PATH",
    "Take a verified `pg_dump -Fc` here before changing anything: a directory (a timestamped file "
    "is created in it) or a file name. Without it (and without --no-backup) the backup is skipped "
    "with a warning.",
    show_default=False,
)
NO_BACKUP = _opt(
    "--no-backup",
    "BXBATCH_NO_BACKUP",
    "Skip the backup on purpose (recorded in the ledger).",
)
PG_DUMP = _opt(
    "--pg-dump",
    "BXBATCH_PG_DUMP",
    "pg_dump to use (file or bin directory; pg_restore is taken next to it). Default: the embedded "
    "PostgreSQL 18 client, then PATH. It must not be older (major) than the server.",
    show_default=False,
)
SKIP_DISK_CHECK = _opt(
    "--skip-disk-check",
    "BXBATCH_SKIP_DISK_CHECK",
    "Accept a server whose free disk cannot be measured from here (remote server, or a role that "
    "may not read data_directory): check it yourself (2x the database size).",
)
LONG_TRANSACTION_S = _opt(
    "--long-transaction-s",
    "BXBATCH_LONG_TRANSACTION_S",
    "Preflight fails on transactions open longer than this (they stall CREATE INDEX CONCURRENTLY).",
    min=1.0,
)

# (Settings field, type, default, typer.Option)
SAFETYNET_OPTIONS: list[tuple[str, Any, Any, Any]] = [
    ("backup_path", str | None, None, BACKUP_PATH),
    ("no_backup", bool, False, NO_BACKUP),
    ("pg_dump", str | None, None, PG_DUMP),
    ("skip_disk_check", bool, False, SKIP_DISK_CHECK),
    ("long_transaction_s", float, 300.0, LONG_TRANSACTION_S),
]
FIELDS = [name for name, *_ in SAFETYNET_OPTIONS]


def safetynet_options(fn: F) -> F:
    """Add the backup/preflight options to a typer command; their values reach Settings via the overrides."""
    base = inspect.signature(fn, eval_str=True)
    params = list(base.parameters.values())
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[type_, option])
        for name, type_, default, option in SAFETYNET_OPTIONS
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in FIELDS if name in kwargs}
        token = _OVERRIDES.set(values)
        try:
            return fn(*args, **kwargs)
        finally:
            _OVERRIDES.reset(token)

    wrapper.__signature__ = base.replace(parameters=params + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params + extra} | {"return": base.return_annotation}
    del wrapper.__wrapped__  # typer must read the signature above, not the wrapped function's
    return wrapper  # type: ignore[return-value]


def safetynet_overrides() -> dict[str, Any]:
    """The backup/preflight option values of the command being run ({} elsewhere)."""
    return dict(_OVERRIDES.get() or {})
