"""Plan: every phase listed without changing anything; --sample estimates the backfills within a factor of 2."""

from __future__ import annotations

import asyncpg
from tests.safety_support import bxbatch_traces, catalog_snapshot

from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install
from bxbatch.ops.plan import build_plan
from bxbatch.ops.run import PHASES, run_migration
from bxbatch.settings import Settings


async def _build_scale_01(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await build_install(conn, SynthSpec(scale=0.1, seed=3))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def test_sampled_plan_predicts_the_backfills(pg_server, db_factory, conn_to):
    dsn = await db_factory(template=await pg_server.template("synth_0.1_analyzed", _build_scale_01))
    conn = await conn_to(dsn)
    settings = Settings(dsn=dsn, progress=False, no_backup=True)
    before = await catalog_snapshot(conn)

    plan = await build_plan(settings, sample=True)
    assert await catalog_snapshot(conn) == before, "plan --sample must change nothing"
    assert await bxbatch_traces(conn) == []
    assert [p["phase"] for p in plan["phases"]] == [name for name, _fn in PHASES]
    assert len(plan["pending_ddl"]) > 5 and len(plan["indexes"]) > 20 and len(plan["constraints"]) > 40
    jobs = {b["job"]: b for b in plan["backfills"]}
    assert set(jobs) == {"enhanced_views", "permissions", "activity_seed"}
    assert all(b["sampled"] and b["sample"]["chunks"] > 0 for b in jobs.values())

    summary = await run_migration(settings)
    real = summary.phases["backfill"]
    for name, job in jobs.items():
        actual_rows = real["jobs"][name]["rows"]
        assert actual_rows / 2 <= job["est_rows"] <= actual_rows * 2, (name, job["est_rows"], actual_rows)
    # The backfill phase starts the activity log's index builds as soon as its seeding is done, so work
    # moves between the two phases: compare the estimate of both with what both took.
    both = ("backfill", "indexes")
    estimated = sum(p["est_seconds"] for p in plan["phases"] if p["phase"] in both)
    took = sum(summary.phases[name]["seconds"] for name in both)
    ratio = estimated / took
    # loosely: other tests share the 2 cores; benchmarks/plan_accuracy.py measures it properly
    assert 1 / 3 <= ratio <= 3, f"estimated {estimated}s, real {took}s"
