"""Backup helpers without a server: DSN -> libpq environment (no password in argv), target naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from bxbatch.errors import BackupFailed
from bxbatch.phases import backup
from bxbatch.settings import Settings


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


def _fake_pg_dump(folder: Path, version: str) -> Path:
    folder.mkdir()
    tool = folder / "pg_dump"
    tool.write_text(f"#!/bin/sh\necho 'pg_dump (PostgreSQL) {version}'\n")
    tool.chmod(0o755)
    return tool


def test_pg_dump_of_the_server_major_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = _fake_pg_dump(tmp_path / "embedded", "18.6")
    on_path = _fake_pg_dump(tmp_path / "path", "15.18 (Debian 15.18-0+deb12u1)")
    monkeypatch.setattr(backup, "embedded_bindir", lambda: embedded.parent)
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert backup.choose_pg_dump(Settings(), 15)[:2] == (on_path, 15)
    assert backup.choose_pg_dump(Settings(), 16)[:2] == (embedded, 18)
    assert backup.choose_pg_dump(Settings(), 18)[:2] == (embedded, 18)
    with pytest.raises(BackupFailed, match="older than the server"):
        backup.choose_pg_dump(Settings(), 19)
    assert backup.choose_pg_dump(Settings(pg_dump=str(on_path)), 14)[:2] == (on_path, 15)
