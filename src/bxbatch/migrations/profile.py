"""The base schema the migration reads (table and column names), kept in one place.

A profile for a real Baserow database (``core_workspace``, ``core_application``, view types
from content types) would be a second ``Profile`` instance, not a rewrite.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    schema: str = "public"
    user: str = "auth_user"
    workspace: str = "database_workspace"
    workspace_user: str = "database_workspaceuser"
    database: str = "database_database"
    table: str = "database_table"
    field: str = "database_field"
    view: str = "database_view"
    # user data tables: database_table_<id>, matched exactly (never LIKE 'database_table_%')
    user_table_pattern: str = r"^database_table_(\d+)$"
    grid_view_type: str = "table"
    # columns each base table must have, as the migration reads them
    required_columns: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def user_table_id(self, relname: str) -> int | None:
        """The Baserow table id of a user data table name, or None for any other table."""
        match = re.match(self.user_table_pattern, relname)
        return int(match.group(1)) if match else None

    def user_table_name(self, table_id: int) -> str:
        return f"database_table_{int(table_id)}"


GUIDE = Profile(
    name="guide",
    required_columns={
        "auth_user": ("id",),
        "database_workspace": ("id",),
        "database_workspaceuser": ("id", "workspace_id", "user_id", "permissions"),
        "database_database": ("id", "workspace_id"),
        "database_table": ("id", "database_id", "created_by_id"),
        "database_field": ("id", "table_id"),
        "database_view": ("id", "table_id", "type"),
    },
)

# SQL regex equivalent of ``user_table_pattern`` for catalog queries (POSIX ARE, anchored).
USER_TABLE_REGEX_SQL = r"^database_table_[0-9]+$"
