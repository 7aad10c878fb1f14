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


async def test_many_tables_benchmark_runs_every_command(pg_server: Any) -> None:
    from benchmarks.many_tables import COMMANDS
    from benchmarks.many_tables import parse_args as many_args
    from benchmarks.many_tables import run_benchmark as run_many

    opts = many_args(["--tables", "40", "--giant-rows", "400", "--quiet", "--extra", "--concurrency", "2"])
    opts.dsn = pg_server.admin_dsn
    report = await run_many(opts)

    assert [s["user_tables"] for s in report["sizes"]] == [40]
    for size in report["sizes"]:
        assert set(size["commands"]) == set(COMMANDS)
        assert all(c["exit"] == 0 for c in size["commands"].values()), size["commands"]
        assert size["validation_passed"]
        assert {"triggers", "backfill", "validate"} <= set(size["phases"])
        assert all(c["peak_rss_mb"] > 10 for c in size["commands"].values())
        assert size["commands"]["run"]["lock_samples"] > 0 and size["peak_locks"] > 0
        assert size["below_bound"] and size["budget"]["connections"] == 2 + 1 + 4
        assert size["per_1000_tables"]["triggers_s"] > 0 and size["per_1000_tables"]["validate_phase_s"] > 0
