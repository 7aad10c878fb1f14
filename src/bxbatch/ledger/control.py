"""The control row and the throttle's records: what the operator asked (pause, set, hold) and what each process did.

``bxbatch pause|continue|cancel|set|hold-before|release`` write ``bxbatch.control`` (and NOTIFY);
every process of the run reads it, and records its throttle state (one row per host and pid) and
its throttle decisions (``bxbatch.throttle_event``). ``status`` reads them back.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bxbatch.db.sqlfiles import queries

Q = queries("control_ledger")


async def control_table_present(conn: asyncpg.Connection) -> bool:
    """The control row's table exists (absent on a ledger made before live control)."""
    return bool(await conn.fetchval(Q["control_table_present"]))


async def control_row(conn: asyncpg.Connection, run_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["get_control"], run_id)


async def control_state(conn: asyncpg.Connection, run_id: int) -> str | None:
    state = await conn.fetchval(Q["control_state"], run_id)
    return None if state is None else str(state)


async def target_run(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The run an operator's control command is for: the unfinished one."""
    return await conn.fetchrow(Q["target_run"])


async def set_knobs(
    conn: asyncpg.Connection, run_id: int, concurrency: int | None, knobs: dict[str, Any], by: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["set_knobs"], run_id, concurrency, json.dumps(knobs), by)


async def set_hold(conn: asyncpg.Connection, run_id: int, phase: str | None, by: str) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["set_hold"], run_id, phase, by)


async def set_state(conn: asyncpg.Connection, run_id: int, state: str | None, by: str) -> asyncpg.Record | None:
    return await conn.fetchrow(Q["set_control"], run_id, state, None, by)


async def notify(conn: asyncpg.Connection, run_id: int) -> None:
    """Wake every process of the run (they LISTEN): the control row changed."""
    await conn.execute(Q["notify_control"], str(run_id))


async def reset_cancelled(conn: asyncpg.Connection, run_id: int, by: str) -> None:
    """A new attempt: a cancel and a `set` are spent; a pause stays."""
    await conn.execute(Q["reset_cancelled"], run_id, by)


async def live_processes(conn: asyncpg.Connection, run_id: int, within_s: float) -> int:
    return int(await conn.fetchval(Q["live_processes"], run_id, within_s))


async def save_throttle_state(
    conn: asyncpg.Connection, run_id: int, host: str, pid: int, state: dict[str, Any]
) -> None:
    """This process's throttle state (its row of ``bxbatch.throttle_state``)."""
    await conn.execute(
        Q["save_throttle_state"],
        run_id,
        host,
        pid,
        state["concurrency"],
        state["max_concurrency"],
        state["chunk_scale"],
        state["paused"],
        state["stopping"],
        state["reason"],
        json.dumps(state["signals"]),
        state["paused_seconds"],
        state["throttled_seconds"],
        float(state["rate_limit"]),
        float(state["duty"]),
        bool(state["throttle_on"]),
    )


async def add_throttle_events(
    conn: asyncpg.Connection, run_id: int, host: str, pid: int, events: list[dict[str, Any]]
) -> None:
    await conn.execute(Q["insert_throttle_events"], run_id, host, pid, json.dumps(events))


async def held_seconds(conn: asyncpg.Connection, run_id: int, window_s: float) -> float:
    """Seconds of the last ``window_s`` during which the throttle held the run back (see the query)."""
    if not await conn.fetchval(Q["throttle_events_present"]):
        return 0.0
    return float(await conn.fetchval(Q["held_seconds"], run_id, window_s))


async def throttle_states(conn: asyncpg.Connection, run_id: int, live_s: float) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["throttle_states"], run_id, live_s)]


async def recent_throttle_events(conn: asyncpg.Connection, run_id: int, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["recent_throttle_events"], run_id, limit)]


async def failed_keys(conn: asyncpg.Connection, run_id: int, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(Q["failed_keys"], run_id, limit)]


async def count_failed_keys(conn: asyncpg.Connection, run_id: int) -> int:
    return int(await conn.fetchval(Q["count_failed_keys"], run_id))
