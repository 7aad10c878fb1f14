"""The migration loader: a directory and its manifest become one Migration, or a one-line error (exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bxbatch.errors import ExitCode, MigrationError, SqlFileError
from bxbatch.migrations.loader import default_dir, load_migration

MINIMAL = 'name = "tiny"\n'


def _migration(tmp_path: Path, manifest: str = MINIMAL, files: dict[str, str] | None = None) -> Path:
    root = tmp_path / "mig"
    (root / "ddl").mkdir(parents=True)
    (root / "migration.toml").write_text(manifest)
    for name, text in (files or {"ddl/001_only.sql": "CREATE TABLE t (id int);\n"}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_shipped_migration_is_the_default_and_describes_the_guide() -> None:
    m = load_migration()
    assert m.name == "baserow_expansion" and m.root == default_dir().resolve()
    assert m is load_migration(str(default_dir()))  # loaded once per directory
    assert [j.name for j in m.jobs] == ["enhanced_views", "permissions", "activity_seed"]
    assert len(m.ddl_files()) == 15 and "database_activitylog" in m.expected.tables
    assert m.profile.schema == "public" and m.profile.params == {"grid_view_type": "table"}
    assert m.profile.user_table_id("database_table_42") == 42
    assert m.profile.user_table_id("database_table_42_old") is None
    assert m.profile.user_table_regex_sql == "^database_table_[0-9]+$"
    assert m.trigger is not None and m.trigger.function == "log_table_activity_stmt"
    assert sorted(m.trigger.events) == ["bxbatch_activity_del", "bxbatch_activity_ins", "bxbatch_activity_upd"]
    assert [c.kind for c in m.checks] == ["backfill", "backfill", "per_table", "orphans", "orphans"]
    assert set(m.validate_queries) >= {c.query for c in m.checks}
    assert [g.table for g in m.guards] == ["database_activitylog", "database_permission"]
    assert m.generator is not None and m.generator_module().generate is not None
    assert len(m.sha256) == 64


def test_a_minimal_directory_is_a_migration_without_user_tables(tmp_path: Path) -> None:
    m = load_migration(_migration(tmp_path))
    assert m.name == "tiny" and m.schema == "public" and m.application == "tiny"
    assert m.jobs == () and m.trigger is None and m.checks == () and m.guards == ()
    assert not m.profile.has_user_tables and m.profile.user_table_regex_sql is None
    assert list(m.expected.tables) == ["t"]


@pytest.mark.parametrize(
    ("manifest", "files", "message"),
    [
        (None, None, "does not exist"),
        ("", {}, "name = a lower-case identifier"),
        ("name = [", {}, "migration.toml"),
        ('name = "Bad Name"', {}, "name = a lower-case identifier"),
        (MINIMAL + '[user_tables]\nname = "t_{id}_x"\nregistry = "r"\n', {}, "must end with {id}"),
        (MINIMAL + '[user_tables]\nname = "t_{id}"\n', {}, "registry"),
        (MINIMAL + '[trigger]\nfunction = "f"\n', {}, "[trigger.events]"),
        (MINIMAL + '[[validate.backfill]]\njob = "j"\nquery = "q"\n', {}, "validate.sql, which is missing"),
        (
            MINIMAL + '[[validate.backfill]]\njob = "j"\nquery = "q"\n',
            {"validate.sql": "-- name: other\nSELECT 1"},
            "q",
        ),
        (MINIMAL + '[demo]\ngenerator = "gen.py"\n', {}, "gen.py does not exist"),
    ],
)
def test_a_bad_directory_or_manifest_is_one_usage_error(
    tmp_path: Path, manifest: str | None, files: dict[str, str] | None, message: str
) -> None:
    root = tmp_path / "absent" if manifest is None else _migration(tmp_path, manifest, files)
    with pytest.raises(MigrationError, match=message.replace("[", r"\[").replace("{", r"\{")) as info:
        load_migration(root)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in str(info.value)


def test_a_directory_without_a_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ddl").mkdir()
    with pytest.raises(MigrationError, match=r"no readable migration\.toml"):
        load_migration(tmp_path)


def test_a_job_binding_an_unknown_param_is_refused_when_jobs_load(tmp_path: Path) -> None:
    job = (
        "-- bxbatch: job=j source=table key_table=t key_column=id target=u extra_param=nope\n"
        "-- name: chunk\nINSERT INTO u SELECT id FROM t WHERE id > $1 AND id <= $2 AND $3::text IS NOT NULL\n"
        "-- name: main_bound\nSELECT max(id) FROM t\n-- name: expected\nSELECT count(*) FROM t\n"
        "-- name: set_based\nINSERT INTO u SELECT id FROM t\n"
    )
    m = load_migration(_migration(tmp_path, files={"ddl/001_t.sql": "SELECT 1;\n", "backfill/010_j.sql": job}))
    with pytest.raises(SqlFileError, match="extra_param=nope is not a \\[params\\] value"):
        _ = m.jobs


def test_after_must_name_a_job_of_the_migration_and_only_in_a_backfill_file(tmp_path: Path) -> None:
    job = (
        "-- bxbatch: job=j source=table key_table=t key_column=id target=u\n"
        "-- name: chunk\nINSERT INTO u SELECT id FROM t WHERE id > $1 AND id <= $2\n"
        "-- name: main_bound\nSELECT max(id) FROM t\n-- name: expected\nSELECT count(*) FROM t\n"
        "-- name: set_based\nINSERT INTO u SELECT id FROM t\n"
    )
    keys = (
        "-- bxbatch: phase=backfill after={}\n"
        "ALTER TABLE u ADD CONSTRAINT k FOREIGN KEY (id) REFERENCES t (id) NOT VALID;\n"
    )
    ok = load_migration(
        _migration(tmp_path / "a", files={"ddl/050_k.sql": keys.format("j"), "backfill/010_j.sql": job})
    )
    assert [j.name for j in ok.jobs] == ["j"]
    assert [f.after for f in ok.ddl_files("backfill")] == ["j"]
    typo = load_migration(
        _migration(tmp_path / "b", files={"ddl/050_k.sql": keys.format("jj"), "backfill/010_j.sql": job})
    )
    with pytest.raises(SqlFileError, match=r"050_k\.sql: after=jj names no backfill job of tiny"):
        _ = typo.jobs
    wrong_phase = "-- bxbatch: phase=schema after=j\nCREATE TABLE v (id int);\n"
    with pytest.raises(SqlFileError, match="after=j needs phase=backfill"):
        load_migration(_migration(tmp_path / "c", files={"ddl/001_v.sql": wrong_phase})).ddl_files()


ORDERS = Path(__file__).resolve().parents[1] / "migrations" / "orders"


@pytest.mark.parametrize("root", [None, ORDERS], ids=["baserow_expansion", "orders"])
def test_every_query_of_a_migration_is_named_by_its_manifest(root: Path | None) -> None:
    m = load_migration(root)
    assert set(m.validate_queries) == {c.query for c in m.checks}
    assert set(m.rollback_queries) == {g.query for g in m.guards}
    assert set(m.us_per_row) == {j.name for j in m.jobs}
    assert {c.job for c in m.checks if c.job} == {j.name for j in m.jobs}  # every job's result is validated


def test_the_orders_migration_adds_a_column_a_table_an_index_and_keys() -> None:
    m = load_migration(ORDERS)
    assert m.name == "orders_totals" and m.trigger is None and not m.profile.has_user_tables
    assert m.expected.added_columns == [("orders", "customer_country")]
    assert list(m.expected.tables) == ["customer_totals"]
    assert list(m.expected.indexes) == ["idx_orders_customer_country"]
    assert {c.name for c in m.expected.foreign_keys} == {"fk_orders_customer", "fk_customer_totals_customer"}
    assert m.expected.validated_later == {"fk_orders_customer", "fk_customer_totals_customer"}
