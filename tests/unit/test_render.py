"""The one SQL template filler: identifiers quoted, holes and values matched exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bxbatch.db.render import Fragment, render, union_all


def test_render_quotes_identifiers_and_qualified_names() -> None:
    sql = render("SELECT {key} FROM {table} WHERE {key} > $1", key='we"ird', table=("public", "database_table_7"))
    assert sql == 'SELECT "we""ird" FROM "public"."database_table_7" WHERE "we""ird" > $1'


def test_fragments_and_ordinals_go_in_as_they_are() -> None:
    inner = Fragment(render("SELECT 1 FROM {t}", t="x"))
    assert (
        render("WITH s AS ({inner}) SELECT {n}::int", inner=inner, n=3) == 'WITH s AS (SELECT 1 FROM "x") SELECT 3::int'
    )


def test_a_hole_without_a_value_or_a_value_without_a_hole_is_an_error() -> None:
    with pytest.raises(KeyError, match="table"):
        render("SELECT * FROM {table}")
    with pytest.raises(ValueError, match="key"):
        render("SELECT * FROM {table}", table="t", key="id")
    with pytest.raises(TypeError):
        render("SELECT {n}", n=True)


def test_union_all_renders_each_row() -> None:
    sql = union_all("SELECT {i} AS i FROM {t}", [{"i": 0, "t": "a"}, {"i": 1, "t": "b"}])
    assert sql == 'SELECT 0 AS i FROM "a" UNION ALL SELECT 1 AS i FROM "b"'
    with pytest.raises(ValueError, match="no rows"):
        union_all("SELECT 1 FROM {t}", [])


@given(st.text(min_size=1).filter(lambda s: "\x00" not in s))
def test_any_name_comes_out_as_one_quoted_identifier(name: str) -> None:
    sql = render("{t}", t=name)
    assert type(sql) is str  # asyncpg takes plain str only
    assert sql.startswith('"') and sql.endswith('"')
    assert sql[1:-1].replace('""', "").count('"') == 0  # every inner quote doubled: nothing escapes
