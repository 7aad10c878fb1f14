"""`bxbatch demo`: throwaway PostgreSQL + the migration's synthetic install + the whole migration + a summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import asyncpg

from bxbatch.db.dsn import describe_target
from bxbatch.devtools.embedded import start_server
from bxbatch.migrations.loader import load_migration
from bxbatch.observe.console import summary_lines
from bxbatch.observe.log import get_logger
from bxbatch.ops.run import run_migration
from bxbatch.phases.validate import render_short, validate
from bxbatch.settings import Settings


async def run_demo(settings: Settings, *, scale: float, flavor: str = "embedded", keep: bool = False) -> Any:
    migration = load_migration(settings.migration)
    generator = migration.generator_module()  # refused before a server starts when there is none
    log = get_logger("bxbatch.devtools.demo")
    t0 = time.monotonic()
    server = start_server(flavor)
    try:
        admin = await asyncpg.connect(server.dsn())
        try:
            version = await admin.fetchval("SHOW server_version")
            await admin.execute("CREATE DATABASE baserow")
        finally:
            await admin.close()
        dsn = server.dsn("baserow")
        log.info(  # the demo's first line names its target, like every command
            "demo_server_started",
            message=f"bxbatch demo: {describe_target(dsn)} (PostgreSQL {version}, {flavor}, throwaway)",
            seconds=round(time.monotonic() - t0, 2),
        )
        conn = await asyncpg.connect(dsn)
        try:
            report = await generator.generate(conn, scale=scale)
        finally:
            await conn.close()
        log.debug(  # the summary header says it
            "demo_install_generated",
            message=report.summary(),
            seconds=report.seconds,
        )
        backup_dir = Path(server.owns_dir or server.datadir.parent) / "backup"  # removed with the server
        backup_dir.mkdir(exist_ok=True)
        # the throttle watches a typical application read (the manifest's [demo] probe_sql), so the run
        # (and its report) shows its latency
        probe = settings.probe_sql or migration.probe_sql
        summary = await run_migration(
            settings.with_(dsn=dsn, backup_path=f"{backup_dir}/", probe_sql=probe), command="demo"
        )
        print(
            f"bxbatch demo: PostgreSQL {version} ({flavor}), synthetic install at scale {scale}: "
            f"{report.summary()}, built in {report.seconds:.1f}s"
        )
        for line in summary_lines(summary):  # one line per phase, one per backfill job
            print(line)
        print(await _validation_report(settings.with_(dsn=dsn)))
        if keep:
            print(f"server left running: {dsn}")
        return summary
    finally:
        if not keep:
            server.close()


async def _validation_report(settings: Settings) -> str:
    """The validation report of the migrated install (what `bxbatch validate` prints)."""
    conn = await asyncpg.connect(settings.dsn)
    try:
        return render_short(await validate(conn, Settings(dsn=settings.dsn, migration=settings.migration)))
    finally:
        await conn.close()
