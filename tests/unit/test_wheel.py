"""The wheel carries the shipped migration directory and the engine's queries: an installed bxbatch needs no repo."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_the_migration_and_queries(tmp_path: Path) -> None:
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
    migration = ROOT / "src" / "bxbatch" / "migrations" / "baserow_expansion"
    shipped = [p for p in migration.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert {p.name for p in shipped} >= {"migration.toml", "validate.sql", "rollback.sql", "synth.py"}
    assert len([p for p in shipped if p.parent.name == "ddl"]) == 15
    assert len([p for p in shipped if p.parent.name == "backfill"]) == 3
    for path in shipped:
        assert f"bxbatch/migrations/baserow_expansion/{path.relative_to(migration).as_posix()}" in names, path
    assert not any(name.startswith("bxbatch/sql/") for name in names)  # the old location is gone
    for path in sorted((ROOT / "src" / "bxbatch" / "queries").glob("*.sql")):
        assert f"bxbatch/queries/{path.name}" in names, path
    assert "bxbatch/py.typed" in names
