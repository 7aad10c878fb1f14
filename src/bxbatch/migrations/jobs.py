"""Backfill jobs: loading a migration's ``backfill/*.sql`` (header directives + named statements), rendering chunks.

A job file has ``-- bxbatch: key=value`` directives in its leading comment block and ``-- name: x``
statements below it:

* ``source=table``: one source table walked on ``key_table.key_column``; statements ``chunk``
  (binds ``$1`` lo, ``$2`` hi, optionally ``$3`` = the manifest's ``[params]`` value named by ``extra_param``),
  ``main_bound`` (the largest key now), ``expected`` (rows the job writes), ``set_based`` (the
  guide's single statement, fixed: for tests and benchmarks), and with ``reconcile=true`` also
  ``reconcile`` (same binds, returns rows changed) and ``reconcile_bound``; ``changes=`` lists the
  base tables the job reads with the column of each that holds the job's key (``table.*`` when a
  row maps to no one key), so the settle rounds reconcile only what changed (backfill/changes.py);
  optionally ``cut`` (``$1``, ``$2``, ``$3`` a row budget: the last key of the range whose rows
  fit it, with the keys and rows up to it), which lets the planner cap a chunk by rows when a key
  yields many (backfill/planner.py), and ``cut_weights`` (no binds: a query the planner keeps as
  the temporary table ``bxbatch_cut_<job>`` on its session, made once per pass, for ``cut`` to read).
* ``source=user_tables``: every user table of the migration (``[user_tables]``) up to its trigger high-water
  mark; statements ``chunk`` (with ``{segments}``) and ``segment`` (with ``{table}`` and ``{i}``).

Every statement is parsed with PostgreSQL's parser when the file is loaded, so a broken file
fails before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from bxbatch.db.render import Fragment, render, union_all
from bxbatch.db.sqlfiles import checksum, parse_directives, parse_named_queries, split_statements
from bxbatch.errors import SqlFileError
from bxbatch.migrations.profile import Profile

_FILE_NAME = re.compile(r"^(?P<num>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")
SOURCES = ("table", "user_tables")
_REQUIRED = {
    "table": ("chunk", "main_bound", "expected", "set_based"),
    "user_tables": ("chunk", "segment"),
}


@dataclass(frozen=True)
class Job:
    name: str
    order: int
    file: str
    sha256: str
    source: str  # "table" or "user_tables"
    target: str
    key_table: str | None
    key_column: str | None
    reconcile: bool
    extra_param: str | None  # a [params] value of the manifest bound as the last parameter (e.g. grid_view_type)
    statements: dict[str, str] = field(repr=False, compare=False)
    # base tables the job reads and the key column of each ("*": a change maps to no one key);
    # their writes are captured for the settle rounds (backfill/changes.py)
    changes: tuple[tuple[str, str], ...] = ()

    @property
    def per_user_table(self) -> bool:
        return self.source == "user_tables"

    def extra_args(self, profile: Profile) -> tuple[object, ...]:
        return (profile.params[self.extra_param],) if self.extra_param else ()

    def sql(self, name: str) -> str:
        try:
            return self.statements[name]
        except KeyError:
            raise SqlFileError(f"{self.file}: no statement named {name!r}") from None


def render_segments(job: Job, relnames: list[str], schema: str) -> str:
    """The chunk statement of a per-user-table job for these tables (segment i reads array element i)."""
    if not relnames:
        raise ValueError("a chunk needs at least one segment")
    segments = union_all(
        "(" + job.sql("segment") + ")",
        ({"table": (schema, rel), "i": i} for i, rel in enumerate(relnames, start=1)),
        joiner="\nUNION ALL\n",
    )
    return render(job.sql("chunk"), segments=Fragment(segments))


def _check_parses(file: str, name: str, sql: str) -> None:
    statements = split_statements(sql, f"{file}:{name}")
    if len(statements) != 1:
        raise SqlFileError(f"{file}: statement {name!r} must be exactly one SQL statement, found {len(statements)}")


def load_job(path: Path) -> Job:
    match = _FILE_NAME.match(path.name)
    if not match:
        raise SqlFileError(f"unexpected file name {path.name} in backfill/", hint="name job files NNN_name.sql")
    text = path.read_text(encoding="utf-8")
    d = parse_directives(text)
    name = d.get("job", match.group("name"))
    source = d.get("source", "table")
    if source not in SOURCES:
        raise SqlFileError(f"{path.name}: unknown source {source!r}", hint=f"use one of {', '.join(SOURCES)}")
    statements = parse_named_queries(text)
    reconcile = d.get("reconcile", "false") == "true"
    required = list(_REQUIRED[source]) + (["reconcile", "reconcile_bound"] if reconcile else [])
    missing = [r for r in required if r not in statements]
    if missing:
        raise SqlFileError(f"{path.name}: missing statements {', '.join(missing)}", hint="add -- name: blocks")
    if source == "table" and not (d.get("key_table") and d.get("key_column")):
        raise SqlFileError(f"{path.name}: source=table needs key_table= and key_column= directives")
    extra = d.get("extra_param")
    changes: list[tuple[str, str]] = []
    for item in filter(None, d.get("changes", "").split(",")):
        table, dot, column = item.partition(".")
        if not (dot and re.fullmatch(r"[a-z_][a-z0-9_]*", table) and re.fullmatch(r"[a-z_][a-z0-9_]*|\*", column)):
            raise SqlFileError(f"{path.name}: bad changes= item {item!r}", hint="use table.key_column or table.*")
        changes.append((table, column))
    if changes and not reconcile:
        raise SqlFileError(f"{path.name}: changes= needs reconcile=true", hint="only reconciled jobs use it")
    job = Job(
        name=name,
        order=int(match.group("num")),
        file=path.name,
        sha256=checksum(text),
        source=source,
        target=d.get("target", ""),
        key_table=d.get("key_table"),
        key_column=d.get("key_column"),
        reconcile=reconcile,
        extra_param=extra,
        statements=statements,
        changes=tuple(changes),
    )
    for stmt_name, sql in statements.items():
        if source == "user_tables" and stmt_name in ("chunk", "segment"):
            continue
        _check_parses(path.name, stmt_name, sql)
    if source == "user_tables":
        _check_parses(path.name, "chunk", render_segments(job, ["t_1", "t_2"], "s"))
    return job


@cache
def load_jobs(root: Path) -> tuple[Job, ...]:
    """Every job in the migration directory ``root``'s ``backfill/``, in file order (none without one)."""
    directory = root / "backfill"
    jobs = tuple(load_job(p) for p in sorted(directory.glob("*.sql")))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise SqlFileError("two backfill files define the same job name", hint=", ".join(names))
    return jobs
