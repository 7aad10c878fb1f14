"""Live safety on a real server: lock waits, killed backends, a restarted server, a slow probe, operator control,
a row that breaks its chunk. Every test ends by comparing the derived tables with what the base tables imply."""

from __future__ import annotations

import time
from typing import Any

import anyio
import asyncpg
import pytest
from tests.backfill_support import (
    UP_TO_BACKFILL,
    assert_ledger_exact,
    assert_no_duplicates,
    assert_same,
    expected_derived,
    present_rows_logged_once,
    snapshot,
    synth_template,
)
from tests.e2e.clirun import run_cli

from bxbatch.errors import CompletedWithFailures, Interrupted
from bxbatch.live.health import HealthMonitor
from bxbatch.live.throttle import Throttle
from bxbatch.observe.log import get_logger
from bxbatch.ops import run as app
from bxbatch.ops.run import run_migration
from bxbatch.ops.status import collect_status, render_status
from bxbatch.settings import Settings

FULL_PHASES = list(app.PHASES)
SMALL: dict[str, Any] = {
    "progress": False,
    "target_chunk_ms": 20,
    "initial_chunk_rows": 150,
    "min_chunk_rows": 20,
    "max_chunk_rows": 2000,
}


PREPARE = ("preflight", "schema", "triggers")


def phases(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = UP_TO_BACKFILL) -> None:
    """Run only these phases (of the full list, whatever an earlier call in the test left)."""
    monkeypatch.setattr(app, "PHASES", [(n, fn) for n, fn in FULL_PHASES if n in names])


async def install(pg_server: Any, db_factory: Any) -> str:
    return str(await db_factory(template=await synth_template(pg_server, 0.02, 11)))


async def assert_exact(conn: asyncpg.Connection) -> None:
    """Derived rows = what the base tables imply; every present user row logged exactly once."""
    actual = await snapshot(conn)
    assert_no_duplicates(actual)
    assert_same({k: actual[k] for k in ("enhanced_views", "permissions")}, await expected_derived(conn))
    checked, problems = await present_rows_logged_once(conn)
    assert checked > 1000
    assert not problems, problems[:5]


async def chunks_done(conn: asyncpg.Connection) -> int:
    if not await conn.fetchval("SELECT to_regclass('bxbatch.chunk') IS NOT NULL"):
        return 0
    return int(await conn.fetchval("SELECT count(*) FROM bxbatch.chunk WHERE status = 'done'"))


async def wait_for(predicate: Any, timeout: float = 30.0, every: float = 0.05) -> None:
    with anyio.fail_after(timeout):
        while not await predicate():  # noqa: ASYNC110  (polling the database: no event to wait on)
            await anyio.sleep(every)


BLOCKED_BY_BXBATCH = """
SELECT a.pid AS waiter, b.pid AS blocker
FROM pg_stat_activity a
CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS bp (pid)
JOIN pg_stat_activity b ON b.pid = bp.pid
WHERE a.datname = current_database() AND a.application_name NOT LIKE 'bxbatch:%'
  AND b.application_name LIKE 'bxbatch:%'
"""


async def test_access_exclusive_lock_held_10s(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks time out and retry while another session holds ACCESS EXCLUSIVE on their target; no application
    query waits on bxbatch longer than the lock timeout; the run completes exactly once the lock goes."""
    dsn = await install(pg_server, db_factory)
    phases(monkeypatch, PREPARE)
    await run_migration(Settings(dsn=dsn, progress=False))
    phases(monkeypatch)
    holder, sampler, app_conn, watch = [await conn_to(dsn) for _ in range(4)]
    held = holder.transaction()
    await held.start()
    await holder.execute("LOCK TABLE database_activitylog IN ACCESS EXCLUSIVE MODE")
    locked_at = time.monotonic()
    lock_timeout_ms = 300
    released = anyio.Event()
    spans: dict[tuple[int, int], list[float]] = {}  # (waiter, blocker) -> [first seen, last seen]
    longest = 0.0
    app_waits = 0

    async def application() -> None:
        # wants SHARE on the table: queued behind the holder, and behind any chunk queued before it
        nonlocal app_waits
        while not released.is_set():
            try:
                async with app_conn.transaction():
                    await app_conn.execute("SET LOCAL lock_timeout = '700ms'")
                    await app_conn.execute("LOCK TABLE database_activitylog IN SHARE MODE")
            except asyncpg.LockNotAvailableError:
                app_waits += 1

    async def sample() -> None:
        nonlocal longest
        while not released.is_set():
            now = time.monotonic()
            seen = {(r["waiter"], r["blocker"]) for r in await sampler.fetch(BLOCKED_BY_BXBATCH)}
            for key in list(spans):
                if key not in seen:
                    first, last = spans.pop(key)
                    longest = max(longest, last - first)
            for key in seen:
                spans.setdefault(key, [now, now])[1] = now
            await anyio.sleep(0.02)

    async def release_after_10s() -> None:
        async def retried() -> bool:
            n = await watch.fetchval("SELECT coalesce(sum(retries), 0) FROM bxbatch.chunk WHERE job = 'activity_seed'")
            return bool(n)

        await wait_for(retried, timeout=20)
        await anyio.sleep(max(0.0, 10.0 - (time.monotonic() - locked_at)))
        await held.commit()
        released.set()

    settings = Settings(
        dsn=dsn, concurrency=3, lock_timeout_ms=lock_timeout_ms, max_attempts=60, retry_max_ms=600, **SMALL
    )
    result: dict[str, Any] = {}

    async def migration() -> None:
        result["summary"] = await run_migration(settings)

    async with anyio.create_task_group() as tg:
        tg.start_soon(migration)
        tg.start_soon(release_after_10s)
        tg.start_soon(sample)
        tg.start_soon(application)

    summary = result["summary"]
    assert summary.status == "completed"
    assert summary.phases["backfill"]["failed_chunks"] == 0
    conn = await conn_to(dsn)
    retries = await conn.fetchval("SELECT sum(retries) FROM bxbatch.chunk WHERE job = 'activity_seed'")
    assert retries >= 5  # ~10 s of 300 ms lock timeouts and backoff
    for first, last in spans.values():
        longest = max(longest, last - first)
    print(summary.phases["backfill"]["seconds"], summary.phases["backfill"]["jobs"]["activity_seed"])
    print(f"retries={retries} longest application wait on bxbatch={longest:.3f}s app lock timeouts={app_waits}")
    assert longest <= lock_timeout_ms / 1000 + 0.25  # + scheduling slack of a loaded 2-core machine
    cut = await conn.fetchval(
        "SELECT count(*) FROM bxbatch.throttle_event WHERE run_id = $1 AND action = 'cut'", summary.run_id
    )
    assert cut >= 1  # lock timeouts made the throttle back off
    await assert_exact(conn)
    await assert_ledger_exact(conn, summary.run_id)


async def test_backends_terminated_repeatedly(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_terminate_backend on every worker, health and control backend, again and again: exact result."""
    dsn = await install(pg_server, db_factory)
    phases(monkeypatch)
    killer = await conn_to(dsn)
    finished = anyio.Event()
    kills = 0

    async def kill_loop() -> None:
        nonlocal kills
        await wait_for(lambda: chunks_done(killer))
        while not finished.is_set():
            kills += int(
                await killer.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'bxbatch:%' "
                    "AND application_name <> 'bxbatch:main'"
                )
            )
            await anyio.sleep(0.15)

    result: dict[str, Any] = {}

    async def migration() -> None:
        try:
            result["summary"] = await run_migration(
                Settings(dsn=dsn, concurrency=3, max_attempts=30, retry_max_ms=500, **SMALL)
            )
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(migration)
        tg.start_soon(kill_loop)

    summary = result["summary"]
    assert summary.status == "completed"
    assert kills >= 5, kills
    conn = await conn_to(dsn)
    print(f"kills={kills} chunks={summary.phases['backfill']['chunks']}")
    await assert_exact(conn)
    await assert_ledger_exact(conn, summary.run_id)


async def test_server_stopped_immediate_and_started_again(
    pg_server: Any, db_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash-stop the server mid-backfill and start it again: bxbatch waits and continues, or stops
    resumable (75); `resume` then completes with the exact result."""
    if pg_server.server is None:
        pytest.skip("needs a server the test may stop and start")
    dsn = await install(pg_server, db_factory)
    phases(monkeypatch)
    outcome: dict[str, Any] = {}

    async def migration() -> None:
        try:
            outcome["summary"] = await run_migration(
                Settings(dsn=dsn, concurrency=2, max_rows_per_second=6000, **SMALL)
            )
        except Interrupted as exc:
            outcome["interrupted"] = exc

    async def crash() -> None:
        watch = await asyncpg.connect(dsn)
        try:
            await wait_for(lambda: chunks_done(watch))
            # The throwaway server runs with synchronous_commit=off: an immediate stop loses the WAL
            # of the last few hundred ms of commits (the run's own row when the first chunk commits
            # that soon: "nothing to resume: no run was ever started"). A CHECKPOINT flushes all WAL
            # written so far, so what bxbatch saw committed is durable, as on a production server.
            # (A synchronous commit of `SELECT pg_current_xact_id()` does not: a transaction that
            # wrote no WAL record commits asynchronously whatever synchronous_commit says, and the
            # flush LSN stays behind: tested, 0 of 5 flushed, against 5 of 5 after CHECKPOINT.)
            await watch.execute("CHECKPOINT")
        finally:
            await watch.close()
        await anyio.to_thread.run_sync(pg_server.server.stop, "immediate")
        await anyio.sleep(0.5)
        await anyio.to_thread.run_sync(pg_server.server.start)

    async with anyio.create_task_group() as tg:
        tg.start_soon(migration)
        tg.start_soon(crash)

    if "interrupted" in outcome:
        assert outcome["interrupted"].exit_code == 75
        summary = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL), resume_only=True)
        assert summary.resumed
    else:
        summary = outcome["summary"]
    assert summary.status == "completed"
    print("outcome:", "interrupted then resumed" if "interrupted" in outcome else "waited and continued")
    conn = await asyncpg.connect(dsn)
    try:
        await assert_exact(conn)
        await assert_ledger_exact(conn, summary.run_id)
    finally:
        await conn.close()


async def test_slow_probe_cuts_within_a_second_and_recovers(fresh_db: str, conn_to: Any) -> None:
    """The probe's latency against its own baseline: slow -> cut within 1 s; much slower -> pause; fast -> back up."""
    conn = await conn_to(fresh_db)
    await conn.execute("CREATE TABLE probe_delay (d float8 NOT NULL); INSERT INTO probe_delay VALUES (0)")
    settings = Settings(
        dsn=fresh_db,
        concurrency=4,
        probe_sql="SELECT pg_sleep((SELECT d FROM probe_delay))",
        probe_interval_s=0.1,
        probe_min_ms=40.0,
        critical_factor=4.0,
        max_xmin_age_s=3600,
    )
    throttle = Throttle(settings, recover_interval=0.3, log=get_logger("test"))
    monitor = HealthMonitor(settings, throttle.observe, get_logger("test"))
    baseline = await monitor.measure_baseline()
    assert baseline is not None and baseline < 20

    async def until(predicate: Any, timeout: float) -> float:
        t0 = time.monotonic()
        with anyio.fail_after(timeout):
            while not predicate():  # noqa: ASYNC110  (the monitor's loop changes it; a test watches)
                await anyio.sleep(0.01)
        return time.monotonic() - t0

    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.run)
        await anyio.sleep(0.5)
        assert throttle.concurrency == 4 and not throttle.throttled
        await conn.execute("UPDATE probe_delay SET d = 0.1")  # ~100 ms: over 2x baseline + 40 ms, under critical
        cut_after = await until(lambda: throttle.concurrency < 4, 1.0)
        assert not throttle.paused
        assert throttle.reason is not None and throttle.reason.startswith("throttled: probe latency")
        await conn.execute("UPDATE probe_delay SET d = 0.5")  # far over: pause
        pause_after = await until(lambda: throttle.paused, 1.0)
        await conn.execute("UPDATE probe_delay SET d = 0")
        recovered_after = await until(lambda: not throttle.throttled, 10.0)
        tg.cancel_scope.cancel()
    actions = [d.action for d in throttle.decisions]
    print(f"cut after {cut_after:.3f}s, paused after {pause_after:.3f}s, full speed again after {recovered_after:.2f}s")
    assert actions[0] == "cut" and "pause" in actions and "unpause" in actions and actions[-1] == "recover"
    assert any("probe latency" in s for d in throttle.decisions for s in d.signals)


async def test_pause_continue_cancel_from_another_process(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = await install(pg_server, db_factory)
    phases(monkeypatch)
    watch = await conn_to(dsn)
    settings = Settings(dsn=dsn, concurrency=2, max_rows_per_second=5000, **SMALL)
    outcome: dict[str, Any] = {}

    async def migration() -> None:
        try:
            outcome["summary"] = await run_migration(settings)
        except Interrupted as exc:
            outcome["interrupted"] = exc

    async def cli(*args: str) -> str:
        result = await anyio.to_thread.run_sync(lambda: run_cli(*args, "--dsn", dsn, "--log-format", "json"))
        assert result.returncode == 0, result.stderr
        return result.stdout

    async def operator() -> None:
        await wait_for(lambda: chunks_done(watch))
        out = await cli("pause")
        assert "paused" in out
        paused_at = await watch.fetchval("SELECT now()")
        await anyio.sleep(1.0)  # the control poll (0.5 s) and the chunk in flight
        frozen = await chunks_done(watch)
        await anyio.sleep(1.5)
        assert await chunks_done(watch) == frozen, "chunks committed while paused"
        late = await watch.fetchval(
            "SELECT count(*) FROM bxbatch.chunk WHERE done_at > $1::timestamptz + interval '0.9 s'", paused_at
        )
        assert late == 0
        status = await cli("status")
        assert "control: paused" in status and "paused" in status.split("control:")[1]
        await cli("continue")
        await wait_for(lambda: _grew(watch, frozen), timeout=5)
        await cli("set", "concurrency=1")
        await wait_for(
            lambda: _fetch_true(
                watch, "SELECT EXISTS (SELECT 1 FROM bxbatch.throttle_state WHERE max_concurrency = 1)"
            ),
            timeout=5,
        )
        await cli("cancel")

    async with anyio.create_task_group() as tg:
        tg.start_soon(migration)
        tg.start_soon(operator)

    assert "interrupted" in outcome, "the run should have been cancelled before it finished"
    assert await watch.fetchval("SELECT status FROM bxbatch.run ORDER BY id DESC LIMIT 1") == "interrupted"
    events = [
        r["action"]
        for r in await watch.fetch("SELECT action FROM bxbatch.throttle_event ORDER BY id")
        if r["action"] in ("pause", "unpause", "set_ceiling", "stop")
    ]
    assert events == ["pause", "unpause", "set_ceiling", "stop"]
    summary = await run_migration(Settings(dsn=dsn, concurrency=2, **SMALL), resume_only=True)
    assert summary.status == "completed" and summary.resumed
    await assert_exact(watch)
    await assert_ledger_exact(watch, summary.run_id)


async def _grew(conn: asyncpg.Connection, than: int) -> bool:
    return await chunks_done(conn) > than


async def _fetch_true(conn: asyncpg.Connection, sql: str) -> bool:
    return bool(await conn.fetchval(sql))


async def test_a_row_that_breaks_its_chunk_is_bisected_to_its_key(
    pg_server: Any, db_factory: Any, conn_to: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = await install(pg_server, db_factory)
    phases(monkeypatch, PREPARE)
    await run_migration(Settings(dsn=dsn, progress=False))
    conn = await conn_to(dsn)
    # one member (not the first or last) whose permission rows the target refuses
    bad_user = await conn.fetchval(
        "SELECT user_id FROM (SELECT DISTINCT user_id FROM database_workspaceuser wu "
        "JOIN database_database d ON d.workspace_id = wu.workspace_id "
        "JOIN database_table t ON t.database_id = d.id ORDER BY 1) s OFFSET 7 LIMIT 1"
    )
    await conn.execute(f"ALTER TABLE database_permission ADD CONSTRAINT refuse_one CHECK (user_id <> {int(bad_user)})")
    phases(monkeypatch)
    settings = Settings(dsn=dsn, concurrency=2, **{**SMALL, "initial_chunk_rows": 2000})
    with pytest.raises(CompletedWithFailures) as info:
        await run_migration(settings)
    assert info.value.exit_code == 8
    run = await conn.fetchrow("SELECT id, status FROM bxbatch.run ORDER BY id DESC LIMIT 1")
    assert run["status"] == "completed_with_failures"
    # The key may be recorded by more than one pass (main, then reconcile), each with its own
    # error text (the failing row shows now()): one distinct key, every record naming the check.
    keys = await conn.fetch("SELECT job, key, sqlstate, error FROM bxbatch.failed_key WHERE run_id = $1", run["id"])
    assert {(r["job"], r["key"], r["sqlstate"]) for r in keys} == {("permissions", bad_user, "23514")}
    assert all("refuse_one" in r["error"] for r in keys)
    # everything else is there: the expected rows minus the refused member's
    expected = await expected_derived(conn)
    expected["permissions"] = +type(expected["permissions"])(
        {row: n for row, n in expected["permissions"].items() if row[0] != bad_user}
    )
    actual = await snapshot(conn)
    assert_same({k: actual[k] for k in ("enhanced_views", "permissions")}, expected)
    # the operator sees the key
    report = render_status(await collect_status(Settings(dsn=dsn)))
    assert f"key {bad_user}:" in report and "failed keys: 1" in report, report
    # fix the data (here: the constraint), resume: the key is retried and the run completes exactly
    await conn.execute("ALTER TABLE database_permission DROP CONSTRAINT refuse_one")
    summary = await run_migration(settings, resume_only=True)
    assert summary.status == "completed"
    assert await conn.fetchval("SELECT count(*) FROM bxbatch.failed_key WHERE run_id = $1", run["id"]) == 0
    await assert_exact(conn)


def test_status_of_a_run_without_a_ledger_needs_no_control_tables() -> None:
    # render_status must tolerate reports from before the control tables existed
    report = {"ledger": True, "run": None, "phases": [], "ddl": {"applied": 0, "pending": []}}
    assert "ddl: 0 files applied" in render_status(report)


async def test_eta_rate_leaves_out_paused_and_throttled_time(fresh_db: str, conn_to: Any) -> None:
    from bxbatch.ledger import runs as ledger
    from bxbatch.ledger.control import held_seconds

    conn = await conn_to(fresh_db)
    await ledger.ensure_schema(conn)
    run_id = await conn.fetchval("INSERT INTO bxbatch.run (command) VALUES ('run') RETURNING id")
    await conn.execute(
        "INSERT INTO bxbatch.throttle_state (run_id, host, pid, concurrency, max_concurrency, chunk_scale, paused) "
        "VALUES ($1, 'h', 1, 2, 4, 0.5, false)",
        run_id,
    )
    now = await conn.fetchval("SELECT extract(epoch FROM now())::float8")
    events = [  # (seconds ago, action, concurrency, chunk scale, paused)
        (100, "cut", 2, 0.5, False),  # before the window: only its tail inside counts
        (40, "recover", 4, 1.0, False),
        (20, "pause", 4, 1.0, True),
        (14, "unpause", 4, 1.0, False),
        (4, "cut", 2, 0.5, False),  # 3/4 held back for the last 4 s
    ]
    for ago, action, conc, scale, paused in events:
        await conn.execute(
            "INSERT INTO bxbatch.throttle_event (run_id, at, host, pid, action, concurrency, max_concurrency, "
            "chunk_scale, paused, reason) VALUES ($1, to_timestamp($2), 'h', 1, $3, $4, 4, $5, $6, 'test')",
            run_id,
            now - ago,
            action,
            conc,
            scale,
            paused,
        )
    assert await held_seconds(conn, run_id, 30.0) == pytest.approx(6 + 3, abs=0.2)
    assert await held_seconds(conn, run_id, 200.0) == pytest.approx(60 * 0.75 + 6 + 3, abs=0.2)


async def test_pause_and_cancel_are_obeyed_between_phases(
    pg_server: Any, db_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bxbatch.live import control

    dsn = await install(pg_server, db_factory)
    settings = Settings(dsn=dsn, progress=False)

    async def operator_pauses(ctx: Any) -> dict[str, Any]:
        await control.send(settings, "pause")
        return {}

    by_name = dict(FULL_PHASES)
    monkeypatch.setattr(
        app, "PHASES", [("preflight", by_name["preflight"]), ("pauser", operator_pauses), ("schema", by_name["schema"])]
    )
    continued_at: list[float] = []

    async def operator_continues() -> None:
        await anyio.sleep(1.0)
        continued_at.append(time.monotonic())
        await control.send(settings, "continue")

    result: dict[str, Any] = {}

    async def migration() -> None:
        result["summary"] = await run_migration(settings)
        result["finished_at"] = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(migration)
        tg.start_soon(operator_continues)
    assert result["summary"].status == "completed"
    assert result["finished_at"] > continued_at[0]  # the schema phase waited for `continue`

    # cancelled between phases: interrupted (75), and the next attempt spends the cancel
    async def operator_cancels(ctx: Any) -> dict[str, Any]:
        await control.send(settings, "cancel")
        return {}

    monkeypatch.setattr(
        app,
        "PHASES",
        [("preflight", by_name["preflight"]), ("canceller", operator_cancels), ("schema", by_name["schema"])],
    )
    with pytest.raises(Interrupted, match="cancelled by"):
        await run_migration(settings)
    monkeypatch.setattr(app, "PHASES", [("preflight", by_name["preflight"])])
    assert (await run_migration(settings, resume_only=True)).status == "completed"
