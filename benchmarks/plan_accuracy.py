"""Accuracy of `bxbatch plan` (default costs and --sample) against the real backfill phase, and rollback cost.

For each scale: a synthetic install (ANALYZEd), `plan` with default costs, `plan --sample`, then
a real `run`; reports the estimated and real seconds of the backfill phase (and per job), the
ratio estimate/real, the estimated vs real row counts, then the time of a full `rollback`.

    .venv/bin/python benchmarks/plan_accuracy.py [--scale 0.1 --scale 0.5] [--concurrency 4] [--pg embedded|system]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import asyncpg
import structlog

from bxbatch.devtools.embedded import start_server
from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install
from bxbatch.observe.log import configure
from bxbatch.ops.plan import build_plan
from bxbatch.ops.rollback import rollback
from bxbatch.ops.run import run_migration
from bxbatch.settings import Settings


async def one_scale(server_dsn: str, dsn_of: object, scale: float, concurrency: int) -> None:
    admin = await asyncpg.connect(server_dsn)
    name = f"plan_{str(scale).replace('.', '_')}"
    await admin.execute(f"DROP DATABASE IF EXISTS {name}")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    dsn = dsn_of(name)  # type: ignore[operator]
    conn = await asyncpg.connect(dsn)
    try:
        report = await build_install(conn, SynthSpec(scale=scale, seed=1))
        await conn.execute("ANALYZE")
        settings = Settings(dsn=dsn, progress=False, no_backup=True, concurrency=concurrency)
        t0 = time.monotonic()
        default = await build_plan(settings)
        t_default = time.monotonic() - t0
        t0 = time.monotonic()
        sampled = await build_plan(settings, sample=True)
        t_sampled = time.monotonic() - t0
        summary = await run_migration(settings)
        real = summary.phases["backfill"]

        def est(plan: dict[str, object]) -> float:
            return next(p["est_seconds"] for p in plan["phases"] if p["phase"] == "backfill")  # type: ignore[attr-defined,index]

        print(
            f"scale {scale}: {report.user_rows} user rows; concurrency {concurrency}; "
            f"plan {t_default:.2f}s, plan --sample {t_sampled:.2f}s"
        )
        print(
            f"  backfill phase: real {real['seconds']:.2f}s | default-cost estimate {est(default):.2f}s "
            f"(x{est(default) / real['seconds']:.2f}) | sampled estimate {est(sampled):.2f}s "
            f"(x{est(sampled) / real['seconds']:.2f})"
        )
        for job in sampled["backfills"]:  # type: ignore[union-attr]
            r = real["jobs"][job["job"]]
            print(
                f"  {job['job']:<16} rows est {job['est_rows']:>9,} real {r['rows']:>9,} | "
                f"seconds est {job['est_seconds']:.2f} real {r['seconds']:.2f} | sampled {job['us_per_row']} us/row"
            )
        t0 = time.monotonic()
        result = await rollback(conn, settings, force=True)
        print(f"  rollback: {result.done} steps in {time.monotonic() - t0:.2f}s")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, action="append")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--pg", default="embedded", choices=["embedded", "system"])
    args = parser.parse_args()
    configure("json")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only
    server = start_server(args.pg)
    try:
        for scale in args.scale or [0.1]:
            await one_scale(server.dsn(), server.dsn, scale, args.concurrency)
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
