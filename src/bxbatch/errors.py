"""The exception tree: every failure a user can meet, each with a one-line message and an exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (README, "Exit codes")."""

    OK = 0
    FAILURE = 1  # unexpected internal error (a bug): run with --debug and report it
    USAGE = 2  # bad flag, bad DSN syntax, bad setting
    CONNECTION = 3  # server unreachable, authentication failed, database missing
    PREFLIGHT = 4  # the database is not ready for the migration (missing base tables, version, ...)
    CHANGED_FILE = 5  # an applied SQL file was edited since it was applied
    SQL_FILE = 6  # a SQL file does not parse or a statement in it failed
    BUSY = 7  # another bxbatch process holds the run lock
    COMPLETED_WITH_FAILURES = 8  # run finished, but some keys failed; see `bxbatch status`
    VALIDATION = 9  # validation found differences
    NOTHING_TO_RESUME = 10  # `resume` found no unfinished run
    BACKUP = 11  # pg_dump missing or older than the server, or the backup failed or did not verify
    ROLLBACK_REFUSED = 12  # rollback refused: no --yes, or new tables hold application data (see --force)
    NEEDS_FIX = 13  # stopped: a table, column or function the run needs is gone, or a privilege; fix, then resume
    LOCKS_EXHAUSTED = 14  # the server's lock table is full: lower --table-group-size (resumable)
    # `bxbatch status --check` only (0 = completed): the run is going on, healthy (RUNNING, THROTTLED);
    # it needs an operator (PAUSED, HELD, STALLED, FAILED, INTERRUPTED, COMPLETED_WITH_FAILURES);
    # no run yet.
    STATUS_IN_PROGRESS = 20
    STATUS_ATTENTION = 21
    STATUS_NO_RUN = 22
    RESUMABLE = 75  # interrupted (signal, cancel, lost server): `bxbatch resume` continues (EX_TEMPFAIL)


class BxbatchError(Exception):
    """Base class. ``str(err)`` is the user-facing one-line message."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(BxbatchError):
    exit_code = ExitCode.USAGE


class MigrationError(UsageError):
    """The migration directory or its manifest is missing or malformed (--migration / BXBATCH_MIGRATION)."""


class ConnectionFailed(BxbatchError):
    exit_code = ExitCode.CONNECTION


class PreflightFailed(BxbatchError):
    exit_code = ExitCode.PREFLIGHT


class ChangedFileError(BxbatchError):
    exit_code = ExitCode.CHANGED_FILE


class SqlFileError(BxbatchError):
    exit_code = ExitCode.SQL_FILE


class LockBusy(BxbatchError):
    exit_code = ExitCode.BUSY


class CompletedWithFailures(BxbatchError):
    exit_code = ExitCode.COMPLETED_WITH_FAILURES


class ValidationFailed(BxbatchError):
    exit_code = ExitCode.VALIDATION


class OrphansFound(ValidationFailed):
    """The constraint phase found rows referencing missing rows; nothing was changed (exit 9)."""


class NothingToResume(BxbatchError):
    exit_code = ExitCode.NOTHING_TO_RESUME


class Interrupted(BxbatchError):
    """The run stopped early but its ledger is consistent: `bxbatch resume` continues it."""

    exit_code = ExitCode.RESUMABLE


class BackupFailed(BxbatchError):
    exit_code = ExitCode.BACKUP


class LocksExhausted(BxbatchError):
    """The server's shared lock table ran out ("out of shared memory"); nothing half-done, resumable (exit 14)."""

    exit_code = ExitCode.LOCKS_EXHAUSTED


class RollbackRefused(BxbatchError):
    exit_code = ExitCode.ROLLBACK_REFUSED


class StoppedForFix(BxbatchError):
    """No retry can cure it (an object the run needs was dropped, a privilege revoked): resumable after the fix."""

    exit_code = ExitCode.NEEDS_FIX
