"""The safety-net options of `run` and `resume` (backup, preflight), added by ``@safetynet_options``.

One option group (cli_options.settings_options), like cli_safety. Every option has an env var.
"""

from __future__ import annotations

from typing import Any

import typer

from bxbatch.cli.options import settings_options

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
safetynet_options = settings_options(SAFETYNET_OPTIONS)
