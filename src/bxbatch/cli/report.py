"""`bxbatch report | history`: a run's HTML report, and every run and rollback this database remembers."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from bxbatch.cli.app import command
from bxbatch.cli.options import BASIC, Flags
from bxbatch.cli.signals import drive
from bxbatch.settings import Settings


@command()
def report(
    settings: Annotated[Settings, Flags(*BASIC)],
    run_id: Annotated[
        int | None, typer.Option("--run", help="The run (number from `bxbatch history`); default: the newest.")
    ] = None,
    html_path: Annotated[
        str | None,
        typer.Option(
            "--html",
            envvar="BXBATCH_REPORT",
            help="Write the self-contained HTML report (charts included, opens offline) to this file "
            "(a directory: bxbatch-run-N.html in it). Default: bxbatch-run-N.html here.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report's data as JSON instead.")] = False,
) -> None:
    """Draw a run's report from the ledger (or its archive after a rollback): throughput, throttle holds,
    concurrency, chunk latency, probe latency, timeline, plan estimate vs actual, validation."""
    from bxbatch.db.session import connect
    from bxbatch.observe.report import collect, write_report

    async def go() -> Any:
        conn = await connect(settings, role="report")
        try:
            if as_json:
                return await collect(conn, run_id)
            data = await collect(conn, run_id)
            return await write_report(conn, data["run"]["id"], html_path or f"bxbatch-run-{data['run']['id']}.html")
        finally:
            await conn.close()

    result = drive(go, settings.stop_grace_s)
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(f"report written: {result}")


@command()
def history(
    settings: Annotated[Settings, Flags(*BASIC)],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every run and rollback recorded in this database (kept across rollbacks): outcome, duration, rows, host."""
    from bxbatch.db.session import connect
    from bxbatch.observe.history import collect_history, render_history

    async def go() -> Any:
        conn = await connect(settings, role="history")
        try:
            return await collect_history(conn)
        finally:
            await conn.close()

    entries = drive(go, settings.stop_grace_s)
    print(json.dumps(entries, indent=2, default=str) if as_json else render_history(entries))
