"""Backup helpers without a server: DSN -> libpq environment (no password in argv), target naming."""

from __future__ import annotations

from pathlib import Path

from bxbatch.phases import backup


def test_libpq_env_never_needs_argv():
    env = backup.libpq_env("postgresql://bob:s%40cret@db.example:6543/baserow?sslmode=require&application_name=x")
    assert env == {
        "PGUSER": "bob",
        "PGPASSWORD": "s@cret",
        "PGHOST": "db.example",
        "PGPORT": "6543",
        "PGDATABASE": "baserow",
        "PGSSLMODE": "require",
    }
    sock = backup.libpq_env("postgresql://postgres@/t1?host=%2Ftmp%2Fpg")
    assert sock == {"PGUSER": "postgres", "PGDATABASE": "t1", "PGHOST": "/tmp/pg"}
    assert backup.libpq_env("host=h port=1 dbname=d password=p")["PGPASSWORD"] == "p"


def test_backup_target_directory_or_file(tmp_path: Path):
    assert backup.backup_target(str(tmp_path), "base row").name.startswith("bxbatch_base_row_")
    assert backup.backup_target(str(tmp_path / "x.dump"), "db") == tmp_path / "x.dump"
