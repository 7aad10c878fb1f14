"""Filling SQL templates: identifiers are quoted here and only here; values stay bind parameters.

A template names its holes ``{table}``, ``{key}``...; ``render`` fills each from a keyword:
a ``str`` is one identifier (quoted), a ``(schema, name)`` tuple a qualified name, an ``int`` an
ordinal, a ``Fragment`` SQL that bxbatch itself built (never user input). A hole without a value, or a value without a
hole, is an error rather than SQL with a stray brace. ``union_all`` is the one builder of
"the same statement over each of these tables" (user tables are read in lock-budget groups).
``set_local_timeouts`` is the one way a transaction sets its timeouts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from bxbatch.db.idents import qualified, quote_ident

_HOLE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class Fragment:
    """SQL text that bxbatch built (a rendered template, an aggregate expression): inserted as is.

    A wrapper, not a ``str`` subclass: asyncpg takes only plain ``str`` queries, and a bare string
    passed to ``render`` must stay an identifier."""

    __slots__ = ("sql",)

    def __init__(self, sql: str) -> None:
        self.sql = sql


Value = str | tuple[str, str] | Fragment | int


def _sql_of(name: str, value: Value) -> str:
    if isinstance(value, Fragment):
        return value.sql
    if isinstance(value, bool):
        raise TypeError(f"{{{name}}}: a bool is not an identifier")
    if isinstance(value, int):
        return str(int(value))  # an ordinal the caller computed (a segment's index), never user input
    if isinstance(value, tuple):
        schema, relname = value
        return qualified(schema, relname)
    return quote_ident(value)


def render(template: str, **values: Value) -> str:
    """``template`` with every ``{hole}`` filled; raises KeyError / ValueError on a missing or unused value."""
    holes = set(_HOLE.findall(template))
    missing = holes - values.keys()
    if missing:
        raise KeyError(f"no value for {sorted(missing)} in the SQL template")
    unused = values.keys() - holes
    if unused:
        raise ValueError(f"the SQL template has no hole for {sorted(unused)}")
    return _HOLE.sub(lambda m: _sql_of(m.group(1), values[m.group(1)]), template)


def union_all(template: str, rows: Iterable[Mapping[str, Value]], joiner: str = " UNION ALL ") -> str:
    """One statement: ``template`` rendered for each row of values, joined with UNION ALL."""
    parts = [render(template, **row) for row in rows]
    if not parts:
        raise ValueError("union_all of no rows")
    return joiner.join(parts)


_TIMEOUTS = {
    "lock": "lock_timeout",
    "statement": "statement_timeout",
    "idle": "idle_in_transaction_session_timeout",
}


async def set_local_timeouts(conn: Any, *, is_local: bool = True, **ms: int | None) -> None:
    """Set the transaction's (``is_local``) or session's timeouts in ms: ``lock=``, ``statement=``, ``idle=``.

    One statement with bind parameters; ``None`` leaves a timeout alone, ``0`` disables it."""
    unknown = ms.keys() - _TIMEOUTS.keys()
    if unknown:
        raise ValueError(f"unknown timeouts {sorted(unknown)}")
    chosen = [(_TIMEOUTS[k], f"{int(v)}ms") for k, v in ms.items() if v is not None]
    if not chosen:
        return
    calls = ", ".join(
        f"set_config(${2 * i + 1}, ${2 * i + 2}, {'true' if is_local else 'false'})" for i in range(len(chosen))
    )
    await conn.execute(f"SELECT {calls}", *[x for pair in chosen for x in pair])
