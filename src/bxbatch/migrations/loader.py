"""Loading a migration directory (``migration.toml`` + ddl/ + backfill/ + named queries) into one typed ``Migration``.

The engine knows a migration only through this object: its DDL files, backfill jobs, the objects
its DDL creates, its base-schema profile, the per-table trigger it installs, its validation
expectations, its rollback guards and its synthetic-install generator. The format is
docs/migration-format.md; the shipped (and default) migration is ``baserow_expansion``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from bxbatch.db.sqlfiles import SqlFile, checksum, ddl_files, parse_named_queries
from bxbatch.errors import MigrationError, SqlFileError
from bxbatch.migrations.expected import ExpectedSchema, expected_from
from bxbatch.migrations.jobs import Job, load_jobs
from bxbatch.migrations.profile import Profile

MANIFEST = "migration.toml"
DEFAULT = "baserow_expansion"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class TriggerSpec:
    """The trigger a migration installs on every user table (phase ``triggers``)."""

    function: str  # called with the table's id as its one argument
    events: dict[str, str]  # trigger name -> "AFTER INSERT [REFERENCING ...]" (statement level)
    schema: str
    label: str = "trigger"
    high_water: str = "id"  # max() of this column under the install's lock: the table's high-water mark
    legacy: tuple[str, ...] = ()  # trigger names of earlier builds: dropped where found, never doubled


@dataclass(frozen=True)
class Check:
    """One validation expectation: a named query of validate.sql and what it is about."""

    kind: str  # backfill | per_table | orphans
    query: str
    job: str = ""  # backfill / per_table: the job whose result it checks
    object: str = ""  # what a problem names (a table, or table.column)
    params: tuple[str, ...] = ()  # [params] bound after the sample size (backfill checks)
    reason: str = ""  # orphans: "{n} ... {sample}"


@dataclass(frozen=True)
class Guard:
    """A rollback guard: rows the application added to ``table`` after the run (refuse without --force)."""

    table: str
    query: str
    message: str  # "{n}" and "{run_end}" filled in


@dataclass(frozen=True)
class Migration:
    name: str
    root: Path
    sha256: str  # the manifest's checksum (recorded with the run: resume refuses another migration)
    description: str
    application: str  # what the base schema belongs to, in words ("not a Baserow install")
    profile: Profile
    trigger: TriggerSpec | None
    checks: tuple[Check, ...]
    guards: tuple[Guard, ...]
    validate_queries: dict[str, str] = field(repr=False, compare=False)
    rollback_queries: dict[str, str] = field(repr=False, compare=False)
    us_per_row: dict[str, float] = field(default_factory=dict)
    generator: Path | None = None
    probe_sql: str | None = None

    @property
    def schema(self) -> str:
        return self.profile.schema

    def ddl_files(self, phase: str | None = None) -> list[SqlFile]:
        """The DDL files in order (optionally one phase's), read and parsed now (an edited file shows)."""
        return ddl_files(self.root, phase)

    @cached_property
    def jobs(self) -> tuple[Job, ...]:
        jobs = load_jobs(self.root)
        for job in jobs:
            if job.extra_param is not None and job.extra_param not in self.profile.params:
                raise SqlFileError(
                    f"{job.file}: extra_param={job.extra_param} is not a [params] value of {self.name}",
                    hint=f"add it to {self.root / MANIFEST}",
                )
            if job.per_user_table and not self.profile.has_user_tables:
                raise SqlFileError(f"{job.file}: source=user_tables, but {self.name} has no [user_tables]")
        names = {j.name for j in jobs}
        for f in self.ddl_files("backfill"):
            if f.after is not None and f.after not in names:
                raise SqlFileError(
                    f"{f.name}: after={f.after} names no backfill job of {self.name}",
                    hint=f"use one of {', '.join(sorted(names))}",
                )
        return jobs

    def job(self, name: str) -> Job:
        for job in self.jobs:
            if job.name == name:
                return job
        raise SqlFileError(f"no backfill job named {name!r}", hint=", ".join(j.name for j in self.jobs))

    @cached_property
    def expected(self) -> ExpectedSchema:
        """The objects the DDL files create (parsed once per migration and process)."""
        return expected_from(self.ddl_files(), self.schema)

    def generator_module(self) -> ModuleType:
        """The synthetic-install generator (``[demo] generator``): a module with ``generate(conn, scale=, seed=)``."""
        if self.generator is None:
            raise MigrationError(f"migration {self.name} has no synthetic-install generator", hint="[demo] generator")
        return _import_generator(self.name, self.generator)


def _import_generator(name: str, path: Path) -> ModuleType:
    shipped = Path(str(resources.files("bxbatch"))).resolve()
    if path.resolve().is_relative_to(shipped):  # a migration shipped in the wheel: its package module
        dotted = ".".join(path.resolve().relative_to(shipped).with_suffix("").parts)
        return importlib.import_module(f"bxbatch.{dotted}")
    spec = importlib.util.spec_from_file_location(f"bxbatch_migration_{name}_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise MigrationError(f"cannot load the generator {path}")
    if spec.name in sys.modules:  # loaded once per process, like an imported module
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (and pickling) look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def default_dir() -> Path:
    return Path(str(resources.files("bxbatch") / "migrations" / DEFAULT))


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise MigrationError(f"{where}: [{key}] must be a table")
    return value


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MigrationError(f"{where} must be a list of strings")
    return tuple(value)


def _named(items: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MigrationError(f"{where} must be an array of tables ([[...]])")
    return items


def _queries(root: Path, file: str, wanted: set[str]) -> dict[str, str]:
    path = root / file
    if not wanted:
        return parse_named_queries(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if not path.is_file():
        raise MigrationError(f"{root / MANIFEST} names queries of {file}, which is missing")
    found = parse_named_queries(path.read_text(encoding="utf-8"))
    missing = sorted(wanted - set(found))
    if missing:
        raise MigrationError(f"{path}: no query named {', '.join(missing)}", hint="add -- name: blocks")
    return found


def _checks(data: dict[str, Any], where: str) -> tuple[Check, ...]:
    checks: list[Check] = []
    validate = _table(data, "validate", where)
    for kind in ("backfill", "per_table", "orphans"):
        for i, item in enumerate(_named(validate.get(kind, []), f"{where}: [[validate.{kind}]]")):
            at = f"{where}: [[validate.{kind}]] #{i + 1}"
            if not isinstance(item.get("query"), str) or not _SQL_NAME.match(item["query"]):
                raise MigrationError(f"{at}: query = the name of a query in validate.sql")
            if kind != "orphans" and not isinstance(item.get("job"), str):
                raise MigrationError(f"{at}: job = the backfill job it checks")
            checks.append(
                Check(
                    kind=kind,
                    query=item["query"],
                    job=str(item.get("job", "")),
                    object=str(item.get("object", "")),
                    params=_str_list(item.get("params", []), f"{at}: params"),
                    reason=str(item.get("reason", "{n} row(s) point nowhere")),
                )
            )
    return tuple(checks)


def _trigger(data: dict[str, Any], schema: str, where: str) -> TriggerSpec | None:
    if "trigger" not in data:
        return None
    spec = _table(data, "trigger", where)
    events = _table(spec, "events", f"{where}: [trigger]")
    if not isinstance(spec.get("function"), str) or not events:
        raise MigrationError(f"{where}: [trigger] needs function = and [trigger.events]")
    for name, event in events.items():
        if not isinstance(event, str) or not re.match(r"^(AFTER|BEFORE) (INSERT|UPDATE|DELETE)\b", event):
            raise MigrationError(f'{where}: [trigger.events] {name} = "AFTER INSERT ..." (statement level)')
    function = str(spec["function"])
    fn_schema, dot, fn_name = function.rpartition(".")
    return TriggerSpec(
        function=fn_name,
        events={str(k): str(v) for k, v in events.items()},
        schema=fn_schema if dot else schema,
        label=str(spec.get("label", "trigger")),
        high_water=str(spec.get("high_water", "id")),
        legacy=_str_list(spec.get("legacy", []), f"{where}: [trigger] legacy"),
    )


def _profile(data: dict[str, Any], name: str, schema: str, where: str) -> Profile:
    requires = _table(data, "requires", where)
    columns = {str(t): _str_list(c, f"{where}: [requires.columns] {t}") for t, c in requires.get("columns", {}).items()}
    types = {str(c): _str_list(t, f"{where}: [requires.types] {c}") for c, t in requires.get("types", {}).items()}
    user_tables = _table(data, "user_tables", where)
    params = {str(k): str(v) for k, v in _table(data, "params", where).items()}
    try:
        return Profile(
            name=name,
            schema=schema,
            required_columns=columns,
            column_types=types,
            user_table_template=user_tables.get("name"),
            user_table_registry=user_tables.get("registry"),
            user_table_label=str(user_tables.get("label", "user table")),
            params=params,
        )
    except ValueError as exc:
        raise MigrationError(f"{where}: [user_tables]: {exc}") from None


@cache
def _load(root: Path) -> Migration:
    where = str(root / MANIFEST)
    try:
        text = (root / MANIFEST).read_text(encoding="utf-8")
    except OSError as exc:
        raise MigrationError(
            f"{root} is not a migration directory: no readable {MANIFEST} ({exc.strerror})",
            hint="docs/migration-format.md describes one",
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MigrationError(f"{where}: {exc}", hint="fix the TOML") from None
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise MigrationError(f"{where}: name = a lower-case identifier is required")
    if not (root / "ddl").is_dir():
        raise MigrationError(f"{root} has no ddl/ directory", hint="docs/migration-format.md describes one")
    schema = str(data.get("schema", "public"))
    profile = _profile(data, name, schema, where)
    checks = _checks(data, where)
    guards = tuple(
        Guard(table=str(g["table"]), query=str(g["query"]), message=str(g.get("message", "{n} newer rows")))
        for g in _named(_table(data, "rollback", where).get("guards", []), f"{where}: [[rollback.guards]]")
    )
    demo = _table(data, "demo", where)
    generator = root / str(demo["generator"]) if "generator" in demo else None
    if generator is not None and not generator.is_file():
        raise MigrationError(f"{where}: [demo] generator {generator.name} does not exist")
    us_per_row = {str(k): float(v) for k, v in _table(_table(data, "plan", where), "us_per_row", where).items()}
    return Migration(
        name=name,
        root=root,
        sha256=checksum(text),
        description=str(data.get("description", "")),
        application=str(data.get("application", name)),
        profile=profile,
        trigger=_trigger(data, schema, where),
        checks=checks,
        guards=guards,
        validate_queries=_queries(root, "validate.sql", {c.query for c in checks}),
        rollback_queries=_queries(root, "rollback.sql", {g.query for g in guards}),
        us_per_row=us_per_row,
        generator=generator,
        probe_sql=demo.get("probe_sql"),
    )


def load_migration(path: str | Path | None = None) -> Migration:
    """The migration in directory ``path`` (None: the shipped default), loaded once per process."""
    root = Path(path).expanduser() if path else default_dir()
    if not root.is_dir():
        raise MigrationError(f"migration directory {root} does not exist", hint="--migration DIR / BXBATCH_MIGRATION")
    return _load(root.resolve())
