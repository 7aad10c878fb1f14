"""SQL files: split them with PostgreSQL's own parser, read header directives, checksum them.

Also loads the engine's named queries (``-- name: claim_chunk`` blocks, as procrastinate does).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pglast import parse_sql
from pglast.parser import ParseError

from bxbatch.errors import SqlFileError

_DIRECTIVE = re.compile(r"^--\s*bxbatch:\s*(?P<body>.*)$")
_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_FILE_NAME = re.compile(r"^(?P<num>\d{3})_[a-z0-9_]+\.sql$")

PHASES = ("schema", "backfill", "indexes", "constraints")  # the run phases that apply DDL files


@dataclass(frozen=True)
class Statement:
    sql: str
    line: int  # 1-based line of the statement's first character in its file
    kind: str  # parse node name, e.g. "CreateStmt", "IndexStmt"
    concurrent: bool  # must run outside a transaction block
    node: Any = field(repr=False, compare=False, default=None)


@dataclass(frozen=True)
class SqlFile:
    path: Path
    name: str
    text: str
    sha256: str
    directives: dict[str, str]
    statements: tuple[Statement, ...]

    @property
    def phase(self) -> str:
        return self.directives.get("phase", "schema")

    @property
    def after(self) -> str | None:
        """A ``phase=backfill`` file's ``after=JOB``: applied once that job's passes are done, not every job's."""
        return self.directives.get("after")

    @property
    def transactional(self) -> bool:
        """One transaction for the whole file, unless a directive or a statement forbids it."""
        flag = self.directives.get("transactional", "auto")
        if flag == "false":
            return False
        return not any(s.concurrent for s in self.statements)


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_directives(text: str) -> dict[str, str]:
    """``-- bxbatch: key=value key=value`` lines in the file's leading comment block."""
    found: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("--"):
            break
        match = _DIRECTIVE.match(line)
        if not match:
            continue
        for token in match.group("body").split():
            key, sep, value = token.partition("=")
            if not sep:
                raise SqlFileError(f"bad bxbatch directive {token!r}", hint="use -- bxbatch: key=value")
            found[key.strip()] = value.strip()
    return found


def _needs_autocommit(node: Any) -> bool:
    kind = type(node).__name__
    if kind in {"IndexStmt", "DropStmt", "ReindexStmt"}:
        return bool(getattr(node, "concurrent", False))
    return kind in {
        "VacuumStmt",
        "CreatedbStmt",
        "DropdbStmt",
        "AlterSystemStmt",
        "CreateTableSpaceStmt",
    }


def split_statements(text: str, name: str = "<sql>") -> tuple[Statement, ...]:
    """Split SQL text into statements with PostgreSQL's parser (dollar quotes, comments and all).

    Parsed once per distinct text and name: every phase reads its files again (an edited file
    shows), but parsing them all took ~25 ms a time, 13 times a run, mostly between phases."""
    return _split_statements(text, name)


@lru_cache(maxsize=1024)
def _split_statements(text: str, name: str) -> tuple[Statement, ...]:
    try:
        raw = parse_sql(text)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = text.count("\n", 0, max(0, offset)) + 1
        raise SqlFileError(
            f"{name}, line {line}: {exc.args[0]}",
            hint="fix the SQL; nothing from this file was applied",
        ) from exc
    statements = []
    for item in raw:
        start = item.stmt_location or 0
        length = item.stmt_len or (len(text) - start)
        sql = text[start : start + length]
        stripped_lead = len(sql) - len(sql.lstrip())
        line = text.count("\n", 0, start + stripped_lead) + 1
        statements.append(
            Statement(
                sql=sql.strip(),
                line=line,
                kind=type(item.stmt).__name__,
                concurrent=_needs_autocommit(item.stmt),
                node=item.stmt,
            )
        )
    return tuple(statements)


def load_file(path: Path) -> SqlFile:
    text = path.read_text(encoding="utf-8")
    directives = parse_directives(text)
    phase = directives.get("phase", "schema")
    if phase not in PHASES:
        raise SqlFileError(f"{path.name}: unknown phase {phase!r}", hint=f"use one of {', '.join(PHASES)}")
    if "after" in directives and phase != "backfill":
        raise SqlFileError(
            f"{path.name}: after={directives['after']} needs phase=backfill", hint="drop after= or add phase=backfill"
        )
    return SqlFile(
        path=path,
        name=path.name,
        text=text,
        sha256=checksum(text),
        directives=directives,
        statements=split_statements(text, path.name),
    )


def ddl_files(root: Path, phase: str | None = None) -> list[SqlFile]:
    """Every ``NNN_name.sql`` in the migration directory ``root``'s ``ddl/`` in order (optionally one phase's)."""
    directory = root / "ddl"
    files = []
    for path in sorted(directory.glob("*.sql")):
        if not _FILE_NAME.match(path.name):
            raise SqlFileError(
                f"unexpected file name {path.name} in {directory}",
                hint="name DDL files NNN_name.sql",
            )
        loaded = load_file(path)
        if phase is None or loaded.phase == phase:
            files.append(loaded)
    return files


def parse_named_queries(text: str) -> dict[str, str]:
    """``-- name: x`` blocks; each block runs until the next name line."""
    queries: dict[str, str] = {}
    matches = list(_NAME.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = match.group("name")
        if name in queries:
            raise SqlFileError(f"query {name!r} defined twice")
        queries[name] = body.rstrip().rstrip(";")
    return queries


@cache
def queries(module: str) -> dict[str, str]:
    """Named queries of ``bxbatch/queries/<module>.sql``, loaded once."""
    text = (resources.files("bxbatch") / "queries" / f"{module}.sql").read_text(encoding="utf-8")
    return parse_named_queries(text)
