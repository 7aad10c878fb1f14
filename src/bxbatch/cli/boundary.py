"""The CLI's one error boundary: any exception becomes one line on stderr and a documented exit code."""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from bxbatch.db.locks import exhausted
from bxbatch.db.retry import is_hopeless, needs_fix
from bxbatch.errors import BxbatchError, ExitCode
from bxbatch.live.stopping import stop_requested
from bxbatch.observe.log import scrub

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from the database (ledger rows, server messages) made safe for a terminal: control characters
    (an ESC sequence could rewrite the screen or the title) shown as escapes."""
    return _CONTROL.sub(lambda m: repr(m.group(0))[1:-1], text)


def _error(message: str) -> None:
    one_line = " ".join(part.strip() for part in scrub(message).splitlines() if part.strip())
    print(f"bxbatch: error: {printable(one_line)}", file=sys.stderr)


def _as_bxbatch_error(exc: Exception) -> BxbatchError | None:
    """A driver error that is the operator's to fix, not a bug: a full lock table, a missing grant."""
    locks_error = exhausted(exc)  # the server's lock table is full: a setting to change
    if locks_error is not None:
        return locks_error
    if is_hopeless(exc):  # e.g. a role without USAGE on the ledger schema
        return needs_fix(exc, "reading the database", hint="grant or restore what it names, then run it again")
    return None


@contextmanager
def error_boundary(*, debug: bool) -> Iterator[None]:
    """Around every command: a BxbatchError -> its message and exit code; any other exception -> "internal
    error", exit 1; the traceback only under --debug. typer's own exits (usage, --check, --help) pass, and so
    does a Ctrl-C outside a run (`status --watch`, a prompt: typer's "Aborted!")."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.BadParameter):
        raise
    except Exception as exc:
        if debug:
            traceback.print_exc()
        error = exc if isinstance(exc, BxbatchError) else _as_bxbatch_error(exc)
        if error is None:
            _error(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)")
            raise typer.Exit(int(ExitCode.FAILURE)) from None
        _error(str(error))
        if stop_requested():  # stopped by a signal: leave now, so a second one cannot land in interpreter shutdown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(error.exit_code))
        raise typer.Exit(int(error.exit_code)) from None
