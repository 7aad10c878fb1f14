"""The wheel carries the migration's SQL and the engine's queries: an installed bxbatch needs no repo."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_sql_and_queries(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("bxbatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in sorted((ROOT / "sql").rglob("*.sql")):
        assert f"bxbatch/sql/{path.relative_to(ROOT / 'sql')}" in names, path
    for path in sorted((ROOT / "src" / "bxbatch" / "queries").glob("*.sql")):
        assert f"bxbatch/queries/{path.name}" in names, path
    assert "bxbatch/py.typed" in names
