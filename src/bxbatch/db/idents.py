"""Identifiers in SQL text: the one quoting helper for table, column and schema names (db.render fills templates)."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """Quote one SQL identifier. The only way a table name reaches SQL text in bxbatch."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"
