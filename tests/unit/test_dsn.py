"""Connection strings read by libpq's rules; no password of any content ever printed (issue 11, item 2)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bxbatch.db import dsn
from bxbatch.errors import UsageError
from bxbatch.phases.backup import libpq_env


@pytest.mark.parametrize(
    ("text", "params"),
    [
        (
            "postgresql://u:p%40ss@h:5433/db",
            {"user": "u", "password": "p@ss", "host": "h", "port": "5433", "dbname": "db"},
        ),
        (
            "postgres://h1:1,[::1]:2/d?sslmode=require",
            {"host": "h1,::1", "port": "1,2", "dbname": "d", "sslmode": "require"},
        ),
        ("postgresql:///d?host=%2Ftmp%2Fs", {"dbname": "d", "host": "/tmp/s"}),
        ("host=h password = S3cr3t  dbname=x", {"host": "h", "password": "S3cr3t", "dbname": "x"}),
        ("password='S3cr3t pwz' user=u", {"password": "S3cr3t pwz", "user": "u"}),
        (r"password='it\'s' user=a\ b", {"password": "it's", "user": "a b"}),
        ("", {}),
    ],
)
def test_parse_follows_libpq(text: str, params: dict[str, str]) -> None:
    assert dsn.parse(text).params == params


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://u:p@ss/w%rd'q:x#y?z@127.0.0.1:5432/db", "ss/w%rd'q"),  # the issue's unencoded password
        ("postgresql://u:pa%zzss@h/db", "pa%zzss"),
        ("postgresql://u:Xy7secret@h/db?nokey", "Xy7secret"),
        ("postgresql://u:Xy7secret@h:port/db", "Xy7secret"),
        ("password='Xy7secret", "Xy7secret"),
        ("password Xy7secret", "Xy7secret"),
        ("pasword=Xy7secret host=h", "Xy7secret"),
    ],
)
def test_invalid_strings_are_refused_without_echo(text: str, secret: str) -> None:
    with pytest.raises(UsageError) as info:
        dsn.parse(text)
    assert secret not in str(info.value)
    assert dsn.redact(text) == "(an invalid connection string, not shown)"


def test_issue_cases_print_no_password() -> None:
    assert dsn.redact("host=h password = S3cr3t dbname=x") == "host=h password=*** dbname=x"
    assert dsn.redact("password='S3cr3t pwz' host=h") == "password=*** host=h"
    assert "p@ss" not in dsn.redact("postgresql://u:p%40ss@h/db")


def test_asyncpg_gets_an_equivalent_uri() -> None:
    assert dsn.for_asyncpg("host=/tmp/s port=5433 user=u password='a b' dbname=d") == (
        "postgresql://u:a%20b@/d?host=/tmp/s&port=5433"
    )
    assert dsn.parse(dsn.for_asyncpg("postgresql://u:p%40ss@h:5433/db")).params == {
        "user": "u",
        "password": "p@ss",
        "host": "h",
        "port": "5433",
        "dbname": "db",
    }
    with pytest.raises(UsageError, match="not supported"):
        dsn.for_asyncpg("host=h replication=database")


PASSWORDS = st.text(alphabet=string.printable.strip() + " é€", min_size=8, max_size=24).filter(
    lambda p: p.strip() == p and not p.isspace()
)


@settings(max_examples=300, deadline=None)
@given(password=PASSWORDS, kv=st.booleans())
def test_no_password_survives_redaction_or_parsing_round_trip(password: str, kv: bool) -> None:
    password = "Zq" + password  # never equal to another part of the string
    if kv:
        quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
        text = f"host=db.example port=5432 user=bob password={quoted} dbname=baserow"
    else:
        from urllib.parse import quote

        text = f"postgresql://bob:{quote(password, safe='')}@db.example:5432/baserow"
    info = dsn.parse(text)
    assert info.password == password
    shown = dsn.redact(text)
    assert password not in shown and "***" in shown
    assert dsn.parse(dsn.for_asyncpg(text)).params == info.params
    assert libpq_env(text)["PGPASSWORD"] == password
    assert password not in dsn.scrub(f"server said: password authentication failed, tried {password!r} {text}")
