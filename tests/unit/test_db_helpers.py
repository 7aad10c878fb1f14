"""Quoting, DSN redaction, retry classification and backoff: the small helpers everything relies on."""

from __future__ import annotations

import random

import asyncpg
import asyncpg.exceptions as pgexc
import pytest

from bxbatch.db.dsn import redact_dsn
from bxbatch.db.session import backoff_delay, is_connection_lost, is_retryable, quote_ident, translate_connect_error
from bxbatch.errors import ConnectionFailed, ExitCode, UsageError
from bxbatch.migrations.profile import GUIDE
from bxbatch.observe.log import scrub
from bxbatch.settings import Settings


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


@pytest.mark.parametrize(
    "exc",
    [
        pgexc.LockNotAvailableError("lock"),
        pgexc.DeadlockDetectedError("dl"),
        pgexc.SerializationError("ser"),
        pgexc.QueryCanceledError("timeout"),
        pgexc.AdminShutdownError("bye"),
        pgexc.CannotConnectNowError("starting"),
        asyncpg.ConnectionDoesNotExistError("gone"),
        ConnectionResetError(),
    ],
)
def test_retryable_by_class(exc: BaseException) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [pgexc.UniqueViolationError("dup"), pgexc.NotNullViolationError("null"), pgexc.UndefinedTableError("x")],
)
def test_data_errors_are_not_retryable(exc: BaseException) -> None:
    assert not is_retryable(exc)
    assert not is_connection_lost(exc)


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, 100, 2000, rng) for a in range(1, 10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 2.0 for d in delays)
    assert max(delays[5:]) >= 1.0


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
    assert GUIDE.user_table_id("database_table_42") == 42
    for other in ("database_tablewebhook", "database_table_backup", "database_table_12_old", "xdatabase_table_1"):
        assert GUIDE.user_table_id(other) is None
