"""The real CLI after a rollback: `bxbatch history` lists the run and the rollback, `bxbatch report --run N`
draws the archived run (HTML and JSON), and the next run's number follows the archived one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e.clirun import run_cli
from tests.safety_support import build_tiny

QUIET = ("--log-format", "json", "--no-progress")


async def test_history_and_report_after_rollback(pg_server: Any, db_factory: Any, tmp_path: Path) -> None:
    dsn = await db_factory(template=await pg_server.template("tiny_install", build_tiny))
    first = run_cli("run", "--dsn", dsn, "--no-backup", *QUIET, timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    rolled = run_cli("rollback", "--dsn", dsn, "--yes", *QUIET[:2])
    assert rolled.returncode == 0, rolled.stderr[-3000:]

    history = run_cli("history", "--dsn", dsn)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert any(line.split()[:3] == ["#1", "run", "completed"] and "(archived)" in line for line in lines), lines
    assert any(" rollback " in line and "completed" in line for line in lines), lines
    entries = json.loads(run_cli("history", "--dsn", dsn, "--json").stdout)
    assert [(e["kind"], e["id"]) for e in entries] == [("run", 1), ("rollback", None)]
    assert entries[0]["rows"] > 0

    html = tmp_path / "run1.html"
    out = run_cli("report", "--dsn", dsn, "--run", "1", "--html", str(html))
    assert out.returncode == 0, out.stderr
    assert "bxbatch run #1" in html.read_text() and "archived by a rollback" in html.read_text()
    data = json.loads(run_cli("report", "--dsn", dsn, "--run", "1", "--json").stdout)
    assert data["archived"] is True and data["run"]["status"] == "completed"
    assert sum(j["rows"] for j in data["jobs"]) == entries[0]["rows"]
    missing = run_cli("report", "--dsn", dsn, "--run", "7", "--json")
    assert missing.returncode == 10 and "no run #7" in missing.stderr

    second = run_cli("run", "--dsn", dsn, "--no-backup", *QUIET, timeout=180)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "run #2 completed" in second.stdout
    entries = json.loads(run_cli("history", "--dsn", dsn, "--json").stdout)
    assert [(e["kind"], e["id"], e["archived"]) for e in entries] == [
        ("run", 1, True),
        ("rollback", None, True),
        ("run", 2, False),
    ]
