"""The run report in a real browser: `bxbatch run --report` after a run with a probe and an operator's pause,
opened from the file in headless Chromium (no network): no script or console error, every chart drawn with
data points, the pause shaded with its reason; a screenshot is saved under the test's tmp dir."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.backfill_support import synth_template
from tests.e2e.clirun import run_cli, spawn_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHARTS = ("chart-throughput", "chart-concurrency", "chart-latency", "chart-probe", "chart-timeline", "chart-estimate")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",
)


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)")
async def test_report_opens_offline_with_every_chart_drawn(pg_server: Any, db_factory: Any, tmp_path: Path) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.02, 11))
    report = tmp_path / "report.html"
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
        "--report",
        str(report),
    )
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 120
        while not (
            await conn.fetchval("SELECT to_regclass('bxbatch.chunk') IS NOT NULL")
            and await conn.fetchval("SELECT count(*) FROM bxbatch.chunk WHERE status = 'done'") > 5
        ):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            await asyncio.sleep(0.05)
        # the operator holds the run for a moment: the report must shade it with its reason
        assert (await asyncio.to_thread(run_cli, "pause", "--dsn", dsn)).returncode == 0
        await asyncio.sleep(2.0)
        assert (await asyncio.to_thread(run_cli, "continue", "--dsn", dsn)).returncode == 0
        _, err = await asyncio.to_thread(
            proc.communicate, timeout=600
        )  # throttled by its probe: slow on a busy machine
        assert proc.returncode == 0, err[-3000:]
        run_id = await conn.fetchval("SELECT max(id) FROM bxbatch.run")
    finally:
        await conn.close()
    assert '"event": "report_written"' in err
    page = report.read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:", page), "the report must need no network"
    assert len(page) > 1_000_000  # plotly's bundle is inline

    # the same data as JSON, for other tools: the pause is a hold with its reason
    data = json.loads(run_cli("report", "--dsn", dsn, "--run", str(run_id), "--json").stdout)
    assert data["run"]["id"] == run_id and data["run"]["status"] == "completed"
    paused = [h for h in data["holds"] if h["paused"]]
    assert paused and any("paused by" in r for h in paused for r in h["reasons"]), data["holds"]

    # headless Chromium, straight from the file: the page records what it drew and any error
    dom = _chromium(tmp_path / "profile-dom", "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="bxbatch-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    check = json.loads(found.group(1))
    assert check["errors"] == [] and check["done"] is True
    console_errors = [
        line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)
    ]
    assert console_errors == []
    for chart in CHARTS:
        drawn = check["charts"].get(chart)
        assert drawn and "skipped" not in drawn, (chart, check["charts"])
        assert drawn["points"] > 0 and drawn["drawn"] >= drawn["traces"] > 0, (chart, drawn)

    shot = tmp_path / "report.png"
    result = _chromium(tmp_path / "profile-shot", "--window-size=1400,4200", f"--screenshot={shot}", report.as_uri())
    assert result.returncode == 0 and shot.stat().st_size > 50_000, result.stderr[-2000:]

    # drawn again later, from the ledger only, by `bxbatch report --run N --html`
    again = tmp_path / "again.html"
    out = run_cli("report", "--dsn", dsn, "--run", str(run_id), "--html", str(again))
    assert out.returncode == 0 and again.stat().st_size > 1_000_000, out.stderr
