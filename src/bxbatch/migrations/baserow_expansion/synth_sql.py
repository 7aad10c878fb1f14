"""SQL building blocks of the synthetic Baserow install: table names, awkward words, deterministic hashes.

Every pseudo-random choice is ``hashint8extended(key, seed_key + tag)`` on the server (``h``), so one
scale + seed gives byte-identical tables on every build.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bxbatch.db.idents import qualified

# The guide's base tables (the migration's [requires.columns]) and the form of a user table.
SCHEMA = "public"
USER = "auth_user"
WORKSPACE = "database_workspace"
WORKSPACE_USER = "database_workspaceuser"
DATABASE = "database_database"
TABLE = "database_table"
FIELD = "database_field"
VIEW = "database_view"
GRID_VIEW_TYPE = "table"
USER_TABLE_REGEX_SQL = r"^database_table_[0-9]+$"


def user_table_name(table_id: int) -> str:
    return f"database_table_{int(table_id)}"


def user_table_id(relname: str) -> int | None:
    match = re.fullmatch(r"database_table_(\d+)", relname)
    return int(match.group(1)) if match else None


# Field type (database_field.type) -> column type of field_<id> in the user data table.
FIELD_COLUMN_TYPES: dict[str, str] = {
    "text": "text",
    "long_text": "text",
    "number": "numeric(50,2)",
    "boolean": "boolean",
    "date": "date",
    "json": "jsonb",
}
VIEW_TYPES_OTHER: tuple[str, ...] = ("gallery", "form", "kanban", "calendar")

# Awkward strings used in names and text values (no NUL: PostgreSQL text cannot hold it).
WORDS: tuple[str, ...] = (
    "Café",
    "naïve façade",
    "Ünïcödé Straße",
    "Zürich",
    "Ñandú",
    "ÆØÅ æøå",
    "日本語テーブル",
    "中文字段",
    "한국어",
    "Ελληνικά",
    "Русский",
    "العربية",
    "עברית",
    "🚀 launch",
    "👩‍💻 dev",
    "🎉",
    "O'Brien",
    'say "hi"',
    'it\'s "both"',
    "back\\slash",
    "C:\\temp\\new",
    "semi;colon",
    "100% done",
    "under_score",
    "tab\there",
    "line\nbreak",
    "  padded  ",
    "",
    "NULL",
    "<b>bold</b>",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "plain",
)

CTX = "pg_temp.bxbatch_synth_ctx"
K = f"(SELECT k FROM {CTX})"
WORDS_SQL = f"((SELECT words FROM {CTX}))"
MASK = (1 << 63) - 1
TS_BASE = 1546300800  # 2019-01-01T00:00:00Z
TS_SPAN = 5 * 365 * 86400
ROW_TAG = 1_000_000_000  # row hashes of user table <tid> use tag ROW_TAG + tid; fields use tag <fid>
BASE_TAG = 2_000_000_000  # base-table hashes use BASE_TAG + n

BASE_TABLES: tuple[str, ...] = (
    USER,
    WORKSPACE,
    WORKSPACE_USER,
    DATABASE,
    TABLE,
    FIELD,
    VIEW,
)


def q(name: str) -> str:
    """Schema-qualified, quoted name of a table in the install's schema."""
    return qualified(SCHEMA, name)


def h(key: str, tag: int) -> str:
    """SQL: a non-negative deterministic pseudo-random bigint for ``key`` (an SQL int expression)."""
    return f"(hashint8extended(({key})::bigint, {K} + {int(tag)}) & {MASK})"


def hb(key: str, n: int) -> str:
    """Like ``h`` for base tables (tag space separate from user-table fields)."""
    return h(key, BASE_TAG + n)


def w(index_expr: str) -> str:
    """SQL: one of WORDS chosen by a non-negative int expression."""
    return f"{WORDS_SQL}[1 + ({index_expr}) % {len(WORDS)}]"


def name_word(id_expr: str, hash_expr: str, offset: str = "0") -> str:
    """SQL: a word for a name; ids up to 2 * len(WORDS) cycle through all WORDS (even at tiny scale)."""
    nw = len(WORDS)
    return (
        f"CASE WHEN ({id_expr}) <= {2 * nw} THEN {WORDS_SQL}[1 + (({id_expr}) + ({offset})) % {nw}] "
        f"ELSE {w(hash_expr)} END"
    )


def uses_word(id_expr: str, hash_expr: str, one_in: int) -> str:
    """SQL condition: this name carries a word (always for small ids, else one in ``one_in``)."""
    return f"(({id_expr}) <= {2 * len(WORDS)} OR {hash_expr} % {int(one_in)} = 0)"


def ts(hash_expr: str) -> str:
    return f"to_timestamp({TS_BASE} + ({hash_expr}) % {TS_SPAN})"


def user_table_ddl(tid: int, fields: Sequence[tuple[int, str]]) -> str:
    name = q(user_table_name(tid))
    cols = "".join(f",\n    field_{int(fid)} {FIELD_COLUMN_TYPES[ftype]} NULL" for fid, ftype in fields)
    return f"""CREATE TABLE {name} (
    id serial PRIMARY KEY,
    created_on timestamptz NULL,
    updated_on timestamptz NULL,
    trashed boolean NOT NULL DEFAULT false,
    "order" numeric(40,20) NULL{cols}
);"""
