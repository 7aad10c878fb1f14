"""What the backfill phase starts early (phases/early.py): the activity log's index builds, GIN last, and
the data checks of validation beside that last build, whose findings the validate phase keeps."""

from __future__ import annotations

from typing import Any

import pytest
from tests.backfill_support import synth_template

from bxbatch.errors import ValidationFailed
from bxbatch.ops.run import run_migration
from bxbatch.phases import backfill as backfill_phase
from bxbatch.phases import early
from bxbatch.phases import validate as validate_phase
from bxbatch.settings import Settings

SMALL: dict[str, Any] = {"target_chunk_ms": 20, "initial_chunk_rows": 150, "max_chunk_rows": 4000, "progress": False}


def record_validations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool, bool]]:
    """Every call of validate(), by caller: (who, structure, data)."""
    calls: list[tuple[str, bool, bool]] = []
    real = validate_phase.validate

    def wrap(who: str) -> Any:
        async def recorded(conn: Any, settings: Any, *, structure: bool = True, data: bool = True) -> Any:
            calls.append((who, structure, data))
            return await real(conn, settings, structure=structure, data=data)

        return recorded

    monkeypatch.setattr(early, "validate", wrap("backfill"))
    monkeypatch.setattr(validate_phase, "validate", wrap("validate"))
    return calls


async def test_log_indexes_start_in_the_backfill_gin_last_and_validation_keeps_the_early_data_checks(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 5, user_tables=20))
    calls = record_validations(monkeypatch)
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, no_backup=True, **SMALL))
    assert summary.status == "completed"
    conn = await conn_to(dsn)
    builds = await conn.fetch(
        """SELECT b.index_name, b.started_at, b.finished_at, p.finished_at AS backfill_done
           FROM bxbatch.index_build b, bxbatch.phase p
           WHERE p.name = 'backfill' AND b.index_name LIKE 'idx_activitylog%' AND b.status = 'done'
           ORDER BY b.started_at"""
    )
    assert len(builds) == 7, [b["index_name"] for b in builds]
    assert all(b["started_at"] < b["backfill_done"] for b in builds), "the log's builds start in the backfill phase"
    assert builds[-1]["index_name"] == "idx_activitylog_details_search", "the GIN build goes last"
    # the data checks ran once, in the backfill phase; the validate phase read only the catalog and kept them
    assert calls == [("backfill", False, True), ("validate", True, False)], calls
    full = await validate_phase.validate_database(Settings(dsn=dsn, progress=False))  # every check, one snapshot
    assert full.ok
    assert summary.phases["validate"]["checks"] == len(full.findings), [f.check for f in full.findings]


async def test_a_problem_the_early_data_checks_find_fails_the_validate_phase(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A seeded entry lost after the settle rounds: the early checks see it, and the run fails on it in the
    validate phase (the findings are carried, not dropped), after the index and constraint phases."""
    dsn = await db_factory(template=await synth_template(pg_server, 0.03, 5, user_tables=20))
    calls = record_validations(monkeypatch)
    app = await conn_to(dsn)
    real = backfill_phase.run_backfill_jobs
    lost: dict[str, Any] = {}

    async def then_lose_one(*args: Any, **kwargs: Any) -> Any:
        detail = await real(*args, **kwargs)
        lost["row"] = await app.fetchrow(
            "DELETE FROM database_activitylog WHERE id = (SELECT min(id) FROM database_activitylog "
            "WHERE action_type = 'row_created') RETURNING table_id, row_id"
        )
        return detail

    monkeypatch.setattr(backfill_phase, "run_backfill_jobs", then_lose_one)
    with pytest.raises(ValidationFailed, match="missing"):
        await run_migration(Settings(dsn=dsn, concurrency=2, no_backup=True, **SMALL))
    assert calls == [("backfill", False, True), ("validate", True, False)], calls
    phases = {r["name"]: r["status"] for r in await app.fetch("SELECT name, status FROM bxbatch.phase")}
    assert phases["indexes"] == "done" and phases["constraints"] == "done" and phases["validate"] == "failed"
    sample = f"table {lost['row']['table_id']}, row {lost['row']['row_id']}"
    report = await app.fetchval("SELECT result::text FROM bxbatch.validation_result ORDER BY run_id DESC LIMIT 1")
    assert sample in report
