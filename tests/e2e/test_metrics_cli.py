"""`bxbatch run --metrics-port`: /metrics scraped during a real run, parsed with prometheus_client's text
parser; the counters move while the backfill runs and match the ledger once it is over; the time series
(bxbatch.sample) holds the run's samples."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from bxbatch.observe.metrics import exported_names
from tests.backfill_support import synth_template
from tests.e2e.clirun import run_cli, spawn_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return series


def _total(scrape: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in scrape.get(name, []) if all(lab.get(k) == want for k, want in labels.items()))


def _active_phase(scrape: dict[str, list[tuple[dict[str, str], float]]]) -> str | None:
    return next((lab["phase"] for lab, v in scrape.get("bxbatch_phase", []) if v == 1), None)


async def test_metrics_scraped_during_a_run_match_the_ledger(pg_server: Any, db_factory: Any) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 11))
    port = _free_port()
    proc = spawn_cli(
        "run",
        "--dsn",
        dsn,
        "--log-format",
        "json",
        "--no-progress",
        "--concurrency",
        "2",
        "--target-chunk-ms",
        "20",
        "--initial-chunk-rows",
        "150",
        "--min-chunk-rows",
        "20",
        "--max-rows-per-second",
        "6000",
        "--probe-sql",
        "SELECT count(*) FROM database_view",
        "--metrics-port",
        str(port),
        "--metrics-addr",
        "127.0.0.1",
    )
    during: list[dict[str, Any]] = []
    after: dict[str, Any] | None = None
    watch = await asyncpg.connect(dsn)
    held = False
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            # as soon as the run exists, hold it before the phase after the backfill (`bxbatch hold-before
            # indexes`): once the ledger says the backfill is done, every chunk of this (only) process is
            # counted, and the held run serves one more scrape however fast its later phases are (a `pause`
            # sent when the backfill was seen done could land after the run had ended)
            present = await watch.fetchval("SELECT to_regclass('bxbatch.control') IS NOT NULL")
            if present and not held:
                hold = await asyncio.to_thread(run_cli, "hold-before", "--dsn", dsn, "indexes")
                held = hold.returncode == 0  # the run row may not be there yet: try again
            done = (
                await watch.fetchval("SELECT status = 'done' FROM bxbatch.phase WHERE name = 'backfill'")
                if present
                else False
            )
            if done:
                assert held, "the backfill was over before the run could be held"
            scrape = await asyncio.to_thread(_scrape, port)
            if scrape is not None:
                if done:
                    after = scrape
                    assert (await asyncio.to_thread(run_cli, "release", "--dsn", dsn)).returncode == 0
                    break
                if _active_phase(scrape) == "backfill":
                    during.append(scrape)
            await asyncio.sleep(0.1)
    finally:
        await watch.close()
    _, err = await asyncio.to_thread(proc.communicate, timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert '"event": "metrics_serving"' in err
    assert len(during) >= 3, "the backfill ran too briefly to be scraped"
    assert after is not None

    # names exported are the ones the module declares (the dashboard test relies on that list)
    assert set(after) <= exported_names(), set(after) - exported_names()
    # counters move during the backfill
    first, last = during[0], during[-1]
    assert _total(last, "bxbatch_rows_written_total") > _total(first, "bxbatch_rows_written_total")
    assert _total(last, "bxbatch_chunk_duration_seconds_count") > _total(first, "bxbatch_chunk_duration_seconds_count")
    # gauges of the throttle and the health signals, the probe among them, while the workers run (the backfill
    # phase may go on with index builds after them)
    live = [s for s in during if "bxbatch_concurrency_max" in s]
    assert live, "no scrape while the workers ran"
    last = live[-1]
    assert _total(last, "bxbatch_concurrency_max") == 2
    assert 0 < _total(last, "bxbatch_concurrency") <= 2
    assert sum(v for _lab, v in last["bxbatch_throttle_state"]) == 1
    probe = [lab for lab, _v in last["bxbatch_health_signal_value"] if lab["signal"] == "probe_latency"]
    assert probe and probe[0]["unit"] == "seconds"
    assert any(lab["signal"] == "probe_latency" for lab, _v in last["bxbatch_health_signal_threshold"])
    info = last["bxbatch_run_info"][0][0]
    assert info["command"] == "run"
    # An exported ETA is never negative. (The gauge is refreshed with the time series, every 5 s, so this
    # backfill of a few seconds may end before it is; a run held back for its whole rate window gets an
    # ETA at the pace it keeps: tests/unit/test_throttle.py, test_backfill_rate_for_the_eta_...)
    etas = [v for s in during for _lab, v in s.get("bxbatch_eta_seconds", [])]
    assert all(v >= 0 for v in etas)

    conn = await asyncpg.connect(dsn)
    try:
        run_id = await conn.fetchval("SELECT max(id) FROM bxbatch.run")
        assert info["run_id"] == str(run_id)
        ledger = await conn.fetch(
            "SELECT c.job, p.kind, count(*) AS chunks, coalesce(sum(c.rows), 0) AS rows "
            "FROM bxbatch.chunk c JOIN bxbatch.pass p USING (run_id, job, seq) "
            "WHERE c.run_id = $1 AND c.status = 'done' GROUP BY c.job, p.kind",
            run_id,
        )
        assert ledger
        for r in ledger:
            assert _total(after, "bxbatch_rows_written_total", job=r["job"], kind=r["kind"]) == r["rows"], dict(r)
        for job in {r["job"] for r in ledger}:
            chunks = sum(r["chunks"] for r in ledger if r["job"] == job)
            assert _total(after, "bxbatch_chunks_total", job=job, outcome="done") == chunks
            assert _total(after, "bxbatch_chunk_duration_seconds_count", job=job) == chunks

        # the time series: per-second samples of the backfill, with the throttle's state and the probe
        samples = await conn.fetch("SELECT * FROM bxbatch.sample WHERE run_id = $1 ORDER BY at", run_id)
        backfill = [s for s in samples if s["phase"] == "backfill"]
        # the throttle is live from the workers' start to their end (not while the pool opens)
        throttled = [s for s in backfill if s["concurrency"] is not None]
        assert len(throttled) >= 2 and all(s["mode"] is not None and s["max_concurrency"] == 2 for s in throttled)
        assert all(s["concurrency"] is None for s in samples if s["phase"] not in ("backfill", None))
        assert any(s["probe_ms"] is not None for s in throttled)
        gaps = [(b["at"] - a["at"]).total_seconds() for a, b in itertools.pairwise(samples)]
        worst = max(range(len(gaps)), key=gaps.__getitem__)
        around = [(str(s["at"])[11:23], s["phase"]) for s in samples[max(0, worst - 2) : worst + 3]]
        assert gaps[worst] < 3, around  # one a second (the last one is forced at the end)
        final = await conn.fetchval(
            "SELECT rows FROM bxbatch.sample WHERE run_id = $1 ORDER BY at DESC LIMIT 1", run_id
        )
        final_rows = json.loads(final)
        for job in {r["job"] for r in ledger}:
            assert final_rows[job] == sum(r["rows"] for r in ledger if r["job"] == job)
    finally:
        await conn.close()


async def test_metrics_port_in_use_is_a_usage_error(pg_server: Any, db_factory: Any) -> None:
    from tests.safety_support import build_tiny

    dsn = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await asyncio.to_thread(
            run_cli,
            "run",
            "--dsn",
            dsn,
            "--no-backup",
            "--log-format",
            "json",
            "--no-progress",
            "--metrics-addr",
            "127.0.0.1",
            "--metrics-port",
            str(port),
        )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("bxbatch: error:")]
    assert len(errors) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in errors[0], result.stderr[-2000:]
    assert "--metrics-port" in result.stderr and "Traceback" not in result.stderr
    # nothing lost: the same run goes on once the port is free
    again = await asyncio.to_thread(run_cli, "resume", "--dsn", dsn, "--log-format", "json", "--no-progress")
    assert again.returncode == 0, again.stderr[-2000:]
