"""What a migration creates, read from the parse trees of its ``ddl/`` files (never from a hand-kept list).

Validation checks the catalog against it, rollback removes it, cleanup vacuums its tables and
plan lists it. Implicit names follow PostgreSQL's own rules (``<table>_pkey``, ``<table>_<col>_key``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from bxbatch.db.sqlfiles import SqlFile

_CONSTR_PRIMARY = "CONSTR_PRIMARY"
_CONSTR_UNIQUE = "CONSTR_UNIQUE"
_CONSTR_FOREIGN = "CONSTR_FOREIGN"
_AT_ADD_CONSTRAINT = "AT_AddConstraint"
_AT_ADD_COLUMN = "AT_AddColumn"
AT_VALIDATE_CONSTRAINT = "AT_ValidateConstraint"


@dataclass(frozen=True)
class Constraint:
    name: str
    table: str
    kind: str  # "p" primary key, "u" unique, "f" foreign key (pg_constraint.contype)
    columns: tuple[str, ...]
    ref_table: str | None = None
    ref_columns: tuple[str, ...] = ()
    file: str = ""
    sql: str = ""  # the ALTER TABLE ... ADD CONSTRAINT statement that adds it ("" for CREATE TABLE ones)


@dataclass(frozen=True)
class Index:
    name: str
    table: str
    file: str
    phase: str
    sql: str = ""


@dataclass
class ExpectedSchema:
    tables: dict[str, tuple[str, ...]] = field(default_factory=dict)  # table -> columns, in order
    table_files: dict[str, str] = field(default_factory=dict)
    indexes: dict[str, Index] = field(default_factory=dict)  # explicit CREATE INDEX only
    constraints: dict[str, Constraint] = field(default_factory=dict)  # every named or implied one
    functions: dict[str, str] = field(default_factory=dict)  # function name -> schema
    validated_later: set[str] = field(default_factory=set)  # constraints a VALIDATE statement validates
    # columns ALTER TABLE ... ADD COLUMN adds to tables the DDL does not create: (table, column), in order
    added_columns: list[tuple[str, str]] = field(default_factory=list)

    @property
    def foreign_keys(self) -> list[Constraint]:
        return [c for c in self.constraints.values() if c.kind == "f"]

    def implied_indexes(self) -> dict[str, str]:
        """Index name -> table of the indexes behind primary keys and unique constraints."""
        return {c.name: c.table for c in self.constraints.values() if c.kind in ("p", "u")}


def enum_name(value: Any) -> str:
    return str(getattr(value, "name", value))


def _names(nodes: Any) -> tuple[str, ...]:
    return tuple(str(n.sval) for n in (nodes or ()))


def _pg_name(*parts: str) -> str:
    """PostgreSQL's implicit constraint name, truncated as NAMEDATALEN (64) requires."""
    return "_".join(parts)[:63]


def _table_constraint(table: str, node: Any, columns: tuple[str, ...], file: str) -> Constraint | None:
    kind = enum_name(node.contype)
    if kind == _CONSTR_PRIMARY:
        keys = _names(node.keys) or columns
        return Constraint(node.conname or _pg_name(table, "pkey"), table, "p", keys, file=file)
    if kind == _CONSTR_UNIQUE:
        keys = _names(node.keys) or columns
        return Constraint(node.conname or _pg_name(table, *keys, "key"), table, "u", keys, file=file)
    if kind == _CONSTR_FOREIGN:
        fk_cols = _names(node.fk_attrs) or columns
        return Constraint(
            node.conname or _pg_name(table, *fk_cols, "fkey"),
            table,
            "f",
            fk_cols,
            ref_table=str(node.pktable.relname),
            ref_columns=_names(node.pk_attrs),
            file=file,
        )
    return None


def _add_file(schema: ExpectedSchema, f: SqlFile, default_schema: str) -> None:
    for stmt in f.statements:
        node = stmt.node
        kind = stmt.kind
        if kind == "CreateStmt":
            table = str(node.relation.relname)
            columns: list[str] = []
            for elt in node.tableElts or ():
                if type(elt).__name__ == "ColumnDef":
                    columns.append(str(elt.colname))
                    for con in elt.constraints or ():
                        c = _table_constraint(table, con, (str(elt.colname),), f.name)
                        if c is not None:
                            schema.constraints[c.name] = c
                elif type(elt).__name__ == "Constraint":
                    c = _table_constraint(table, elt, (), f.name)
                    if c is not None:
                        schema.constraints[c.name] = c
            schema.tables[table] = tuple(columns)
            schema.table_files[table] = f.name
        elif kind == "IndexStmt" and node.idxname:
            schema.indexes[str(node.idxname)] = Index(
                str(node.idxname), str(node.relation.relname), f.name, f.phase, stmt.sql
            )
        elif kind == "AlterTableStmt":
            table = str(node.relation.relname)
            for cmd in node.cmds or ():
                sub = enum_name(cmd.subtype)
                if sub == _AT_ADD_COLUMN and cmd.def_ is not None:
                    column = str(cmd.def_.colname)
                    if table in schema.tables:
                        schema.tables[table] = (*schema.tables[table], column)
                    elif (table, column) not in schema.added_columns:
                        schema.added_columns.append((table, column))
                elif sub == _AT_ADD_CONSTRAINT and cmd.def_ is not None:
                    c = _table_constraint(table, cmd.def_, (), f.name)
                    if c is not None:
                        schema.constraints[c.name] = replace(c, sql=stmt.sql)
                elif sub == AT_VALIDATE_CONSTRAINT and cmd.name:
                    schema.validated_later.add(str(cmd.name))
        elif kind == "CreateFunctionStmt":
            parts = _names(node.funcname)
            schema.functions[parts[-1]] = parts[0] if len(parts) > 1 else default_schema


def expected_from(files: list[SqlFile], default_schema: str) -> ExpectedSchema:
    """What ``files`` create; an unqualified function lands in ``default_schema`` (the migration's)."""
    schema = ExpectedSchema()
    for f in files:
        _add_file(schema, f, default_schema)
    return schema
