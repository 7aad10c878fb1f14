"""Change capture for the settle rounds: which keys of a reconciled job could have changed since its main pass began.

A settle round's reconcile pass used to re-read every range of the job, which is pure cost on an
install that saw no writes. The signal that makes it targeted is not a guess and not a statistics
counter: statement-level triggers on every base table the job reads (the job file's ``changes=``
directive, e.g. ``database_workspaceuser.user_id,database_table.*``) write the keys a statement
touched (old and new rows) into ``bxbatch.changed_key`` *in the writer's transaction*. So:

* a change row is committed exactly when the write is; a write still in flight when a reconcile
  pass is created leaves its row for the next round, because the pass *deletes* the rows it
  covers (``DELETE ... RETURNING``) in the transaction that creates it (never "ids above a mark",
  which would skip a row whose transaction commits late);
* the triggers go in (``SHARE ROW EXCLUSIVE`` on the base table, under ``lock_timeout``, which
  waits for the writers in flight) and the job's ``bxbatch.change_capture`` row is written
  *before* the job's main pass is created, so every write the main pass may have missed fires
  them; a job whose main pass predates its capture row (a run started by an older bxbatch), or
  whose triggers are missing when a pass is created, is reconciled whole, as before;
* only a job whose target is empty when its capture starts (the first run; a run that backfills
  again over rows an earlier run left reconciles whole: the main pass only adds rows);
* a table mapped to ``*`` (its rows map to no single key: a database or table row changes the
  permissions of every member of its workspace) and ``TRUNCATE`` record a NULL key: the next
  reconcile pass covers the whole job.

The triggers are dropped when the backfill phase is done (briefly ``ACCESS EXCLUSIVE``, short
``lock_timeout``, retried; what is left is dropped by the cleanup phase, and ``rollback`` drops
the function with the ``bxbatch`` schema, ``CASCADE``).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from bxbatch.db.render import set_local_timeouts
from bxbatch.db.retry import Outcome, RetryPolicy, classify, retry
from bxbatch.db.session import qualified, quote_ident
from bxbatch.ledger import backfill as ledger
from bxbatch.migrations.jobs import Job
from bxbatch.settings import Settings

EVENTS = {  # suffix -> (event clause, REFERENCING clause)
    "ins": ("AFTER INSERT", "REFERENCING NEW TABLE AS bxbatch_new"),
    "upd": ("AFTER UPDATE", "REFERENCING OLD TABLE AS bxbatch_old NEW TABLE AS bxbatch_new"),
    "del": ("AFTER DELETE", "REFERENCING OLD TABLE AS bxbatch_old"),
    "trunc": ("AFTER TRUNCATE", ""),
}
ANY_KEY = "*"
MERGE_GAP = 64  # changed keys closer than this share one reconcile range
DROP_LOCK_TIMEOUT_MS = 200
# A capture trigger's drop waits DROP_LOCK_TIMEOUT_MS for its table, then backs off (db/retry.py): ten
# tries, then the trigger is left for the cleanup phase rather than queueing the application longer.
DROP_RETRY = RetryPolicy(retry_on=frozenset({Outcome.RETRY}), max_attempts=10, base_ms=100, max_ms=2_000)


def trigger_name(job: str, suffix: str) -> str:
    return f"bxbatch_chg_{job}_{suffix}"[:63]  # trigger names are per table: one name per job and event


def _events(column: str) -> dict[str, tuple[str, str]]:
    if column == ANY_KEY:  # no key to read: one statement trigger for every event, no transition table
        return {"any": ("AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE", "")}
    return EVENTS


def wanted(job: Job) -> list[tuple[str, str, str, str]]:
    """(table, trigger name, event clause, referencing clause) of every capture trigger of ``job``."""
    out = []
    for table, column in job.changes:
        for suffix, (event, referencing) in _events(column).items():
            out.append((table, trigger_name(job.name, suffix), event, referencing))
    return out


def _create_sql(schema: str, job: Job, table: str, name: str, event: str, referencing: str) -> str:
    column = dict(job.changes)[table]
    return (
        f"CREATE TRIGGER {quote_ident(name)} {event} ON {qualified(schema, table)} {referencing} "
        f"FOR EACH STATEMENT EXECUTE PROCEDURE bxbatch.capture_change('{job.name}', '{column}')"
    )


async def present(conn: Any, schema: str, job: Job) -> set[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT c.relname, t.tgname FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND t.tgname LIKE 'bxbatch\\_chg\\_%'",
        schema,
        [t for t, _c in job.changes],
    )
    return {(str(r["relname"]), str(r["tgname"])) for r in rows}


async def install(conn: Any, run_id: int, job: Job, schema: str, settings: Settings) -> bool:
    """Capture triggers in place and the job's capture recorded, in one transaction (before its main pass).

    Only onto an empty target: the main pass only adds rows (``ON CONFLICT DO NOTHING``), so rows an
    earlier run left there, stale since, are found by a whole reconcile only. Returns whether the
    capture was recorded (the job's reconcile passes may then be targeted)."""
    async with conn.transaction():
        await set_local_timeouts(conn, lock=settings.lock_timeout_ms)
        await ledger.forget_capture(conn, run_id, job.name)
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {qualified(schema, job.target)})"):
            return False
        have = await present(conn, schema, job)
        for table, name, event, referencing in wanted(job):
            if (table, name) not in have:
                await conn.execute(_create_sql(schema, job, table, name, event, referencing))
        # changes recorded before this main pass (an earlier run) are covered by the main pass itself
        await ledger.clear_changed_keys(conn, job.name)
        await ledger.record_capture(conn, run_id, job.name)
    return True


async def targeted(conn: Any, run_id: int, job: Job, schema: str) -> bool:
    """True when the job's reconcile may cover only the captured keys (see the module doc)."""
    if not job.changes:
        return False
    if not await ledger.capture_recorded(conn, run_id, job.name):
        return False
    have = await present(conn, schema, job)
    return all((table, name) in have for table, name, _e, _r in wanted(job))


async def take(conn: Any, job: Job) -> tuple[bool, list[int]]:
    """Consume the job's captured keys (call inside the transaction that records the pass they feed).

    Returns (whole job, sorted distinct keys)."""
    keys = set(await ledger.take_changed_keys(conn, job.name))
    return None in keys, sorted(int(k) for k in keys if k is not None)


async def pending(conn: Any, job: Job) -> bool:
    return await ledger.changed_keys_pending(conn, job.name)


def ranges(keys: list[int], gap: int = MERGE_GAP) -> list[tuple[int, int]]:
    """Half-open ranges (lo, hi] covering every key, keys closer than ``gap`` sharing a range."""
    out: list[tuple[int, int]] = []
    for k in sorted(set(keys)):
        if out and k - out[-1][1] < gap:
            out[-1] = (out[-1][0], k)
        else:
            out.append((k - 1, k))
    return out


async def remove(conn: Any, job: Job, schema: str, settings: Settings, log: Any) -> bool:
    """Drop the job's capture triggers (each briefly ACCESS EXCLUSIVE on its table). False if some stayed."""
    for table, name, _e, _r in wanted(job):

        async def drop(table: str = table, name: str = name) -> None:
            async with conn.transaction():
                await set_local_timeouts(conn, lock=DROP_LOCK_TIMEOUT_MS)
                await conn.execute(f"DROP TRIGGER IF EXISTS {quote_ident(name)} ON {qualified(schema, table)}")

        try:
            await retry(drop, DROP_RETRY)
        except asyncpg.UndefinedTableError:
            continue  # the table is gone, and its trigger with it
        except Exception as exc:
            if classify(exc) is not Outcome.RETRY:
                raise
            log.warning("change_capture_left", table=table, trigger=name, hint="the cleanup phase drops it")
            return False
    await ledger.clear_changed_keys(conn, job.name)
    return True
