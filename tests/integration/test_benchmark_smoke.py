"""The backfill benchmark still runs end to end at a tiny scale, and its methods agree on the rows (not on speed)."""

from __future__ import annotations

from typing import Any

from benchmarks.backfill import JOBS, METHODS, parse_args, run_benchmark


async def test_backfill_benchmark_methods_agree(pg_server: Any) -> None:
    _args, opts = parse_args(
        [
            "--scale",
            "0.005",
            "--concurrency",
            "2",
            "--box-seconds",
            "0.3",
            "--baseline-seconds",
            "0.3",
            "--quiet",
        ]
    )
    opts.dsn = pg_server.admin_dsn
    report = await run_benchmark(opts)

    (scale,) = report["scales"]
    assert scale["synth"]["user_rows"] > 0 and scale["baseline_samples"] > 0
    for job in JOBS:
        results = [r for r in scale["results"] if r["job"] == job]
        assert {r["method"] for r in results} == set(METHODS), job
        (single,) = [r for r in results if r["method"] == "single"]
        assert single["total_rows"] > 0 and single["check"] == "reference"
        for r in results:
            assert r["total_rows"] == single["total_rows"], (job, r["label"])
            if r["extrapolated"]:  # time-boxed: a subset of the reference rows, no duplicates
                assert r["check"] == "subset" and 0 < r["rows"] <= r["total_rows"], (job, r)
            else:
                assert r["check"] in ("identical", "reference") and r["rows"] == r["total_rows"], (job, r)
            assert r["seconds"] > 0 and r["longest_tx_ms"] >= 0
        engine = [r for r in results if r["method"] in ("bxbatch", "throttled")]
        assert all(r["peak_rss_mb"] and r["chunks"] for r in engine), engine
    assert any(t["target"].startswith("no bxbatch transaction") for t in report["targets"])
