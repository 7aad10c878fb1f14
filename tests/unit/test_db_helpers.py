"""Quoting, DSN redaction, connect-error messages: the small helpers everything relies on (retries: test_retry)."""

from __future__ import annotations

import asyncpg.exceptions as pgexc
import pytest

from bxbatch.db.dsn import redact_dsn
from bxbatch.db.session import quote_ident, translate_connect_error
from bxbatch.errors import ConnectionFailed, ExitCode, UsageError
from bxbatch.migrations.loader import load_migration
from bxbatch.observe.log import scrub
from bxbatch.settings import Settings

MIGRATION = load_migration()  # the shipped Baserow expansion


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("database_table_1", '"database_table_1"'),
        ('we"ird', '"we""ird"'),
        ("Mixed Case", '"Mixed Case"'),
        ("日本", '"日本"'),
        ("x; DROP TABLE y; --", '"x; DROP TABLE y; --"'),
    ],
)
def test_quote_ident(name: str, quoted: str) -> None:
    assert quote_ident(name) == quoted


@pytest.mark.parametrize("bad", ["", "a\x00b"])
def test_quote_ident_rejects_impossible_names(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        quote_ident(bad)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://bob:s3cret@db:5432/baserow", "postgresql://bob:***@db:5432/baserow"),
        ("postgresql://bob@db/baserow", "postgresql://bob@db/baserow"),
        (
            "postgres://bob:p%40ss@db/x?password=zz&sslmode=require",
            "postgresql://bob:***@db/x?sslmode=require",
        ),
        ("host=db user=bob password=hunter2 dbname=x", "host=db user=bob password=*** dbname=x"),
    ],
)
def test_redact_dsn_never_shows_a_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def test_scrub_free_text() -> None:
    text = "failed for postgresql://u:topsecret@h/d and password=abc123"
    assert "topsecret" not in scrub(text) and "abc123" not in scrub(text)


def test_connect_errors_become_one_line_messages_without_password() -> None:
    dsn = "postgresql://bob:hunter2@db:5432/x"
    for exc in (
        pgexc.InvalidPasswordError("pw"),
        pgexc.InvalidCatalogNameError("db"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ):
        err = translate_connect_error(exc, dsn)
        assert isinstance(err, ConnectionFailed)
        assert err.exit_code == ExitCode.CONNECTION
        assert "hunter2" not in str(err) and "\n" not in str(err)


def test_settings_validation() -> None:
    Settings().validate()
    with pytest.raises(UsageError, match="--concurrency"):
        Settings(concurrency=0).validate()
    with pytest.raises(UsageError, match="chunk sizes"):
        Settings(min_chunk_rows=10, initial_chunk_rows=5).validate()


def test_profile_matches_user_tables_exactly() -> None:
    assert MIGRATION.profile.user_table_id("database_table_42") == 42
    for other in ("database_tablewebhook", "database_table_backup", "database_table_12_old", "xdatabase_table_1"):
        assert MIGRATION.profile.user_table_id(other) is None
