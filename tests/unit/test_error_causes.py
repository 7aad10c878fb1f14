"""Errors classified by cause (issue 11, items 3, 4, 10): local OS errors, lost connections, hopeless errors."""

from __future__ import annotations

import errno

import asyncpg.exceptions as pgexc
import pytest

from bxbatch.db.retry import is_connection_lost, is_hopeless, is_retryable, needs_fix
from bxbatch.errors import ExitCode, SqlFileError, StoppedForFix
from bxbatch.migrations.loader import load_migration
from bxbatch.phases import schema

MIGRATION = load_migration()  # the shipped Baserow expansion


@pytest.mark.parametrize(
    "exc",
    [
        PermissionError(errno.EACCES, "Permission denied", "/backups/x.dump.partial"),
        OSError(errno.EROFS, "Read-only file system"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.ENAMETOOLONG, "File name too long", "/tmp/" + "x" * 300),
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/backups/missing/x.dump"),
    ],
)
def test_a_local_file_system_error_is_not_a_lost_server(exc: OSError) -> None:
    assert not is_connection_lost(exc) and not is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        BrokenPipeError(errno.EPIPE, "Broken pipe"),
        FileNotFoundError(errno.ENOENT, "No such file or directory"),  # the server's Unix socket, gone with it
        TimeoutError(),
    ],
)
def test_a_network_error_is_a_lost_connection(exc: OSError) -> None:
    assert is_connection_lost(exc) and is_retryable(exc)


def test_hopeless_errors_stop_with_exit_13_naming_the_cause() -> None:
    for exc in (
        pgexc.UndefinedTableError('relation "database_activitylog" does not exist'),
        pgexc.UndefinedColumnError("column r.created_on does not exist"),
        pgexc.UndefinedFunctionError("operator does not exist: character varying ->> unknown"),
        pgexc.InsufficientPrivilegeError("permission denied for table database_view"),
    ):
        assert is_hopeless(exc) and not is_retryable(exc)
        stopped = needs_fix(exc, "applying a chunk of activity_seed")
        assert stopped.exit_code == ExitCode.NEEDS_FIX == 13
        assert str(exc) in str(stopped) and "bxbatch resume" in str(stopped)
    assert not is_hopeless(pgexc.UniqueViolationError("duplicate key"))


def test_a_dropped_table_in_a_ddl_file_is_not_reported_as_a_statement_to_fix() -> None:
    f = MIGRATION.ddl_files()[0]
    stmt = f.statements[0]
    dropped = schema._statement_error(f, stmt, pgexc.UndefinedTableError('relation "database_view" does not exist'))
    assert isinstance(dropped, StoppedForFix)
    assert f.name in str(dropped) and "fix the statement" not in str(dropped) and "bxbatch resume" in str(dropped)
    typo = schema._statement_error(f, stmt, pgexc.PostgresSyntaxError('syntax error at or near "CREAT"'))
    assert isinstance(typo, SqlFileError) and "fix the statement" in str(typo)
