"""A password of random content never appears in any output, log line, ledger row or `ps` line (issue 11, item 2).

The real CLI runs a whole migration (backup included: pg_dump is a subprocess) as a role with a
scram password of random characters, given in ``BXBATCH_DSN`` (percent-encoded URI or quoted
key=value), and then fails on purpose (a database that does not exist); meanwhile a thread reads
every process's command line.
"""

from __future__ import annotations

import asyncio
import string
import subprocess
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.clirun import BXBATCH, cli_env
from tests.safety_support import build_tiny

ROLE = "bx_pwprop"
PASSWORDS = st.text(alphabet=string.ascii_letters + string.digits + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~é", min_size=6)


def _ps_watch(password: str, stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
        seen.extend(line for line in out.splitlines() if password in line)
        time.sleep(0.02)


def _dsn(admin_dsn: str, database: str, password: str, keyword_form: bool) -> str:
    host = dict(p.split("=", 1) for p in urlsplit(admin_dsn).query.split("&") if "=" in p)["host"]
    socket_dir = host.replace("%2F", "/")
    if keyword_form:
        quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return f"host={socket_dir} user={ROLE} password={quoted} dbname={database}"
    return f"postgresql://{ROLE}:{quote(password, safe='')}@/{database}?host={quote(socket_dir, safe='')}"


async def _prepare(pg_server: Any, password: str) -> str:
    template = await pg_server.template("tiny_install", build_tiny)
    name = await pg_server.create_database(template=template)
    admin = await asyncpg.connect(pg_server.admin_dsn)
    try:
        statement = await admin.fetchval(
            "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)", ROLE, password
        )
        await admin.execute(statement)
    finally:
        await admin.close()
    return str(name)


async def _ledger_text(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'bxbatch'::regnamespace AND relkind = 'r'"
        )
        texts = [
            await conn.fetchval(f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM bxbatch.\"{t['relname']}\" t")
            for t in tables
        ]
        return "\n".join(texts)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def scram_role(pg_server: Any) -> Any:
    if pg_server.server is None:
        pytest.skip("needs a server whose pg_hba.conf the test may edit")
    hba = pg_server.server.datadir / "pg_hba.conf"
    original = hba.read_text()

    async def setup(sql: str) -> None:
        admin = await asyncpg.connect(pg_server.admin_dsn)
        try:
            await admin.execute(sql)
            await admin.execute("SELECT pg_reload_conf()")
        finally:
            await admin.close()

    hba.write_text(f"local all {ROLE} scram-sha-256\n" + original)
    asyncio.run(setup(f"DROP ROLE IF EXISTS {ROLE}; CREATE ROLE {ROLE} LOGIN SUPERUSER"))
    time.sleep(0.3)
    yield pg_server
    hba.write_text(original)
    asyncio.run(setup("SELECT 1"))


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=PASSWORDS, keyword_form=st.booleans())
def test_random_password_never_shown(
    scram_role: Any, tmp_path_factory: pytest.TempPathFactory, raw: str, keyword_form: bool
) -> None:
    password = "Zq" + raw + "Qz"  # never a substring of anything else the test prints
    pg_server = scram_role
    database = asyncio.run(_prepare(pg_server, password))
    dsn = _dsn(pg_server.admin_dsn, database, password, keyword_form)
    backups = tmp_path_factory.mktemp("backups")
    stop, seen = threading.Event(), []  # type: ignore[var-annotated]
    watcher = threading.Thread(target=_ps_watch, args=(password, stop, seen), daemon=True)
    watcher.start()
    try:
        run = subprocess.run(
            [BXBATCH, "run", "--backup-path", f"{backups}/", "--no-progress", "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=300,
            env=cli_env(BXBATCH_DSN=dsn),
            check=False,
        )
        status = subprocess.run(
            [BXBATCH, "status"], capture_output=True, text=True, timeout=60, env=cli_env(BXBATCH_DSN=dsn), check=False
        )
        wrong = (
            dsn.replace(f"dbname={database}", "dbname=nope_db")
            if keyword_form
            else dsn.replace(f"/{database}?", "/nope_db?")
        )
        failing = subprocess.run(
            [BXBATCH, "status", "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(BXBATCH_DSN=wrong),
            check=False,
        )
    finally:
        stop.set()
        watcher.join()
    assert run.returncode == 0, run.stderr[-3000:]
    assert status.returncode == 0 and failing.returncode == 3, failing.stderr
    assert list(backups.glob("*.dump")), "the backup (pg_dump, a subprocess) ran"
    forms = {password, quote(password, safe="")}
    outputs = "\n".join(p.stdout + p.stderr for p in (run, status, failing))
    ledger = asyncio.run(_ledger_text(pg_server.dsn(database)))
    for form in forms:
        assert form not in outputs
        assert form not in ledger
    assert seen == [], seen[:3]
    asyncio.run(pg_server.drop_database(database))
