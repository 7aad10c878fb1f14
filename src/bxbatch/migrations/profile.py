"""The base schema a migration reads: its schema, required tables and columns, user tables and named parameters.

Built from a migration's manifest (``migration.toml``: ``schema``, ``[requires]``, ``[user_tables]``,
``[params]``) by ``migrations.loader``; the engine reads base-schema facts only from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

INTEGER_TYPES = ("smallint", "integer", "bigint")


@dataclass(frozen=True)
class Profile:
    name: str
    schema: str
    # columns each base table must have, as the migration reads them
    required_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # column name -> the types the migration's SQL reads it as (``id`` and ``*_id``: integer types)
    column_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # user tables: one physical table per id, named by this template ending in ``{id}`` (None: none)
    user_table_template: str | None = None
    # the base table whose ``id`` lists the live user tables (a name of the template form whose id
    # is not there is a leftover, not a user table)
    user_table_registry: str | None = None
    user_table_label: str = "user table"
    # values backfill jobs (extra_param=) and validation queries bind by name
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        template = self.user_table_template
        if template is not None and (not template.endswith("{id}") or template.count("{id}") != 1):
            raise ValueError(f"user table name {template!r} must end with {{id}} and hold it once")
        if template is not None and not self.user_table_registry:
            raise ValueError("user tables need a registry table (the table whose id lists them)")

    @property
    def has_user_tables(self) -> bool:
        return self.user_table_template is not None

    @property
    def user_table_regex_sql(self) -> str | None:
        """An anchored POSIX regex matching user table names exactly (None: no user tables: matches nothing in SQL)."""
        if self.user_table_template is None:
            return None
        return "^" + re.escape(self.user_table_template[: -len("{id}")]) + "[0-9]+$"

    def user_table_id(self, relname: str) -> int | None:
        """The id of a user table name, or None for any other table."""
        if self.user_table_template is None:
            return None
        match = re.fullmatch(re.escape(self.user_table_template[: -len("{id}")]) + r"(\d+)", relname)
        return int(match.group(1)) if match else None

    def user_table_name(self, table_id: int) -> str:
        if self.user_table_template is None:
            raise ValueError(f"migration {self.name} has no user tables")
        return self.user_table_template.replace("{id}", str(int(table_id)))

    def expected_column_types(self, column: str) -> tuple[str, ...] | None:
        """The types the migration's SQL can read a base-table column as (None: any)."""
        if column == "id" or column.endswith("_id"):
            return INTEGER_TYPES  # keyset bounds and joins are integers
        return self.column_types.get(column)
