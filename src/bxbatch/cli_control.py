"""`bxbatch pause | continue | cancel | set concurrency=N`: control a running migration from any host."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .cli import DebugOpt, DsnOpt, LogFormatOpt, _execute, _settings, app
from .errors import UsageError
from .settings import MAX_CONCURRENCY

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _send(dsn: str | None, log_format: str, debug: bool, as_json: bool, action: str, **kw: Any) -> None:
    settings = _settings(dsn, log_format, True, debug)
    from .engine.control import send

    result = _execute(settings, lambda: send(settings, action, **kw))
    if as_json:
        print(json.dumps(result))
        return
    ceiling = f", concurrency ceiling {result['concurrency']}" if result["concurrency"] else ""
    print(
        f"run #{result['run_id']} ({result['run_status']}): {result['state']}{ceiling}; "
        "obeyed before the next chunk (backfill) or the next phase"
    )


@app.command()
def pause(
    dsn: DsnOpt = None, as_json: JsonOpt = False, log_format: LogFormatOpt = "auto", debug: DebugOpt = False
) -> None:
    """Pause the running migration: every worker (on every host) stops after its chunk in flight."""
    _send(dsn, log_format, debug, as_json, "pause")


@app.command("continue")
def continue_(
    dsn: DsnOpt = None, as_json: JsonOpt = False, log_format: LogFormatOpt = "auto", debug: DebugOpt = False
) -> None:
    """Continue a paused migration."""
    _send(dsn, log_format, debug, as_json, "continue")


@app.command()
def cancel(
    dsn: DsnOpt = None, as_json: JsonOpt = False, log_format: LogFormatOpt = "auto", debug: DebugOpt = False
) -> None:
    """Stop the running migration after its chunks in flight; it exits 75 and `bxbatch resume` continues it."""
    _send(dsn, log_format, debug, as_json, "cancel")


@app.command("set")
def set_(
    assignment: Annotated[str, typer.Argument(help="concurrency=N: the most workers per process from now on.")],
    dsn: DsnOpt = None,
    as_json: JsonOpt = False,
    log_format: LogFormatOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Change a running migration's setting: `bxbatch set concurrency=N` (at most --concurrency it started with)."""
    key, sep, value = assignment.partition("=")
    value = value.strip()
    if key.strip() != "concurrency" or not sep or not value.isdigit() or not 1 <= int(value) <= MAX_CONCURRENCY:
        settings = _settings(dsn, log_format, True, debug)
        hint = f"use concurrency=N with 1 <= N <= {MAX_CONCURRENCY} (the --concurrency range)"
        _execute(settings, _raise(UsageError(f"cannot set {assignment[:60]!r}", hint=hint)))
        return
    _send(dsn, log_format, debug, as_json, "set", concurrency=int(value))


def _raise(exc: Exception) -> Any:
    async def go() -> None:
        raise exc

    return go
