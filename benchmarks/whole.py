"""Whole-migration benchmark: the guide's order done by hand against ``bxbatch run``, on clones of one install.

One server (embedded PostgreSQL 18, or ``--pg system``), one process. Per scale: a generated install
(``migrations.baserow_expansion.synth``) in a template database; per repeat, two fresh clones of it,
``hand`` and ``bx``,
and both sides run one after the other (the side that runs first alternates across repeats, so
neither always gets the warmer cache or the emptier machine).

``hand`` is the guide's order as a careful engineer would run it, written plainly here with no
bxbatch code (only the guide's SQL, as fixed in ``sql/ddl`` and ``sql/backfill``, read as text):

1. schema: the guide's tables, the trigger function, every foreign key (Phase 4 ones too),
   validated while the tables are empty;
2. indexes: every index of the guide (and bxbatch's three extra ones), built on the empty tables;
3. triggers: the activity trigger on every user table;
4. backfills: each as one set-based ``INSERT ... SELECT`` (the activity seeding as one statement
   over every user table, ``UNION ALL``);
5. cleanup: ``VACUUM ANALYZE`` of the new tables.

``bx`` is ``bxbatch run --concurrency N`` (the CLI, a child process). Its phases' seconds come from
its ledger (``bxbatch.phase``, ``bxbatch.pass``, ``bxbatch.index_build``). While it runs the
benchmark samples the server's CPU time (``/proc``: the postmaster, its reaped children and every
live child), so each phase reports how many of the machine's cores the server used meanwhile.

Both sides must end with the same rows in the three backfill targets (counts and a content digest
over the natural keys) and the same valid indexes; a mismatch is printed in the table.

    .venv/bin/python -m benchmarks.whole --scale 0.3,1,3 --repeat 3 --markdown /tmp/whole.md
    .venv/bin/python -m benchmarks.whole --scale 0.1 --repeat 1           # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
DDL = ROOT / "src" / "bxbatch" / "migrations" / "baserow_expansion" / "ddl"
USER_TABLE = re.compile(r"^database_table_([0-9]+)$")
TARGETS = {
    "database_tableview_enhanced": (
        "view_ptr_id, sticky_headers, conditional_formatting, column_grouping, filter_presets"
    ),
    "database_permission": "user_id, resource_type, resource_id, permission_level, granted_by_id",
    "database_activitylog": "table_id, row_id, action_type, user_id, details",
}
BX_PHASES = ("preflight", "schema", "triggers", "backfill", "indexes", "constraints", "validate", "cleanup")
HAND_PHASES = ("schema", "indexes", "triggers", "enhanced_views", "permissions", "activity_seed", "cleanup")


def say(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# the guide's order, by hand


def ddl_text(name_prefix: str) -> str:
    (path,) = DDL.glob(f"{name_prefix}_*.sql")
    return path.read_text()


HAND_ENHANCED = """
INSERT INTO database_tableview_enhanced
    (view_ptr_id, sticky_headers, conditional_formatting, column_grouping, filter_presets)
SELECT id, TRUE, '[]'::jsonb, '[]'::jsonb, '[]'::jsonb FROM database_view WHERE type = 'table'
"""

HAND_PERMISSIONS = """
INSERT INTO database_permission (user_id, resource_type, resource_id, permission_level, granted_by_id, granted_at)
SELECT DISTINCT wu.user_id, 'table', t.id,
       CASE WHEN wu.permissions ->> 'create_table' = 'true' THEN 'editor' ELSE 'viewer' END,
       t.created_by_id, now()
FROM database_table AS t
JOIN database_database AS d ON t.database_id = d.id
JOIN database_workspace AS w ON d.workspace_id = w.id
JOIN database_workspaceuser AS wu ON w.id = wu.workspace_id
JOIN auth_user AS u ON wu.user_id = u.id
"""

HAND_SEED_BRANCH = """SELECT NULL::integer, {tid}, r.id, 'row_created', jsonb_build_object('row_data', to_jsonb(r)),
       coalesce(r.created_on, now()) FROM public."{rel}" AS r"""


async def user_tables(conn: asyncpg.Connection) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname ~ '^database_table_[0-9]+$'"
    )
    known = {int(r["id"]) for r in await conn.fetch("SELECT id FROM database_table")}
    out = []
    for r in rows:
        m = USER_TABLE.match(str(r["relname"]))
        if m and int(m.group(1)) in known:
            out.append((int(m.group(1)), str(r["relname"])))
    return sorted(out)


async def quiesce(admin: asyncpg.Connection) -> None:
    """CHECKPOINT and sync (the throwaway server runs with fsync off, so the kernel would write the
    previous side's pages back while the next side runs), then wait (at most a minute) until no
    autovacuum worker is running."""
    await admin.execute("CHECKPOINT")
    await asyncio.to_thread(os.sync)
    busy = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(60):
            while True:  # polled: the server has no event for this
                if not await admin.fetchval(busy):
                    break
                await asyncio.sleep(0.5)


async def run_hand(dsn: str) -> dict[str, float]:
    """The guide's order by hand; returns seconds per step."""
    conn = await asyncpg.connect(dsn)
    secs: dict[str, float] = {}
    try:
        before = {str(r["relname"]) for r in await conn.fetch("SELECT relname FROM pg_class WHERE relkind = 'r'")}
        t0 = time.monotonic()
        for prefix in ("001", "002", "003", "004", "005", "006", "007", "009", "010", "050", "051", "200"):
            await conn.execute(ddl_text(prefix))  # simple protocol: the whole file, one implicit transaction
        secs["schema"] = time.monotonic() - t0
        t0 = time.monotonic()
        for prefix in ("011", "100", "110"):  # the guide builds its indexes before the data
            await conn.execute(re.sub(r"CREATE INDEX CONCURRENTLY", "CREATE INDEX", ddl_text(prefix)))
        secs["indexes"] = time.monotonic() - t0
        t0 = time.monotonic()
        tables = await user_tables(conn)
        async with conn.transaction():
            for tid, rel in tables:
                await conn.execute(
                    f'CREATE TRIGGER activity_ins AFTER INSERT ON public."{rel}" REFERENCING NEW TABLE AS bxbatch_new '
                    f"FOR EACH STATEMENT EXECUTE PROCEDURE public.log_table_activity_stmt('{tid}');"
                    f'CREATE TRIGGER activity_upd AFTER UPDATE ON public."{rel}" '
                    f"REFERENCING OLD TABLE AS bxbatch_old NEW TABLE AS bxbatch_new "
                    f"FOR EACH STATEMENT EXECUTE PROCEDURE public.log_table_activity_stmt('{tid}');"
                    f'CREATE TRIGGER activity_del AFTER DELETE ON public."{rel}" REFERENCING OLD TABLE AS bxbatch_old '
                    f"FOR EACH STATEMENT EXECUTE PROCEDURE public.log_table_activity_stmt('{tid}')"
                )
        secs["triggers"] = time.monotonic() - t0
        for name, sql in (("enhanced_views", HAND_ENHANCED), ("permissions", HAND_PERMISSIONS)):
            t0 = time.monotonic()
            await conn.execute(sql)
            secs[name] = time.monotonic() - t0
        seed = (
            'INSERT INTO database_activitylog (user_id, table_id, row_id, action_type, details, "timestamp")\n'
            + "\nUNION ALL\n".join(HAND_SEED_BRANCH.format(tid=tid, rel=rel) for tid, rel in tables)
        )
        t0 = time.monotonic()
        await conn.execute(seed)
        secs["activity_seed"] = time.monotonic() - t0
        new = [
            str(r["relname"])
            for r in await conn.fetch("SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 2200")
            if str(r["relname"]) not in before
        ]
        t0 = time.monotonic()
        for rel in sorted(new):
            await conn.execute(f'VACUUM (ANALYZE) public."{rel}"')
        secs["cleanup"] = time.monotonic() - t0
    finally:
        await conn.close()
    secs["total"] = sum(secs.values())
    return secs


# --------------------------------------------------------------------------------------------
# the server's CPU, sampled from /proc


class CpuSampler:
    """Cumulative CPU seconds of the server (postmaster + reaped children + live children), every ``period``."""

    def __init__(self, postmaster_pid: int, period: float = 0.2) -> None:
        self.pid, self.period = postmaster_pid, period
        self.samples: list[tuple[float, float]] = []  # (time.time(), cpu seconds)
        self.tick = os.sysconf("SC_CLK_TCK")
        self._task: asyncio.Task[None] | None = None
        self.seen: dict[tuple[int, str], int] = {}

    @staticmethod
    def _stat(pid: int) -> list[str] | None:
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on

    def read(self) -> float:
        """CPU seconds so far: the postmaster's own, plus every child's last reading (children that exit
        keep their last reading, so the total never goes down; at most one period of an exiting child's
        time is lost)."""
        pm = self._stat(self.pid)
        own = sum(int(x) for x in pm[11:13]) if pm is not None else 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == self.pid:
                continue
            st = self._stat(int(entry.name))
            if st is not None and int(st[1]) == self.pid:
                key = (int(entry.name), st[19])  # pid and start time: a reused pid is another child
                self.seen[key] = int(st[11]) + int(st[12])
        return (own + sum(self.seen.values())) / self.tick

    async def _loop(self) -> None:
        while True:
            self.samples.append((time.time(), self.read()))
            await asyncio.sleep(self.period)

    def start(self) -> None:
        self.samples.clear()
        self.seen.clear()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.samples.append((time.time(), self.read()))

    def cores(self, start: float, end: float) -> float | None:
        """Average cores the server used in [start, end] (interpolated between samples)."""
        if end - start < 0.05 or len(self.samples) < 2:
            return None

        def at(t: float) -> float:
            prev = self.samples[0]
            for s in self.samples:
                if s[0] >= t:
                    if s[0] == prev[0]:
                        return s[1]
                    return prev[1] + (s[1] - prev[1]) * (t - prev[0]) / (s[0] - prev[0])
                prev = s
            return prev[1]

        return (at(end) - at(start)) / (end - start)


def postmaster_pid(datadir: Path) -> int:
    return int((datadir / "postmaster.pid").read_text().split()[0])


# --------------------------------------------------------------------------------------------
# bxbatch run


async def run_bx(
    dsn: str, concurrency: int, extra: list[str], sampler: CpuSampler | None, log: Path, src: str | None = None
) -> dict[str, Any]:
    args = [
        str(ROOT / ".venv" / "bin" / "bxbatch") if (ROOT / ".venv" / "bin" / "bxbatch").exists() else "bxbatch",
        "run",
        "--dsn",
        dsn,
        "--concurrency",
        str(concurrency),
        "--no-backup",
        "--no-progress",
        "--log-format",
        "json",
        *extra,
    ]
    if sampler:
        sampler.start()
    t0 = time.monotonic()
    with log.open("wb") as out:
        env = dict(os.environ)
        if src:  # another bxbatch tree (e.g. an older commit, for a before/after profile)
            env.update(PYTHONPATH=str(Path(src) / "src"), BXBATCH_SQL_DIR=str(Path(src) / "sql"))
        proc = await asyncio.create_subprocess_exec(*args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        rc = await proc.wait()
    wall = time.monotonic() - t0
    if sampler:
        await sampler.stop()
    if rc != 0:
        tail = await asyncio.to_thread(log.read_text, errors="replace")
        raise RuntimeError(f"bxbatch run exited {rc}: {tail[-3000:]}")
    conn = await asyncpg.connect(dsn)
    try:
        phases = {
            str(r["name"]): (float(r["s"]), float(r["e"]))
            for r in await conn.fetch(
                "SELECT name, extract(epoch FROM started_at) AS s, extract(epoch FROM finished_at) AS e "
                "FROM bxbatch.phase WHERE finished_at IS NOT NULL"
            )
        }
        passes = await conn.fetch(
            "SELECT job, kind, round, extract(epoch FROM finished_at - started_at) AS s, "
            "(SELECT coalesce(sum(rows), 0) FROM bxbatch.chunk AS c WHERE c.run_id = p.run_id AND c.job = p.job "
            " AND c.seq = p.seq) AS rows FROM bxbatch.pass AS p WHERE finished_at IS NOT NULL"
        )
        chunks = await conn.fetch(
            "SELECT job, max(duration_ms) AS longest, "
            "percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99, count(*) AS n "
            "FROM bxbatch.chunk WHERE status = 'done' GROUP BY job"
        )
        builds = await conn.fetch(
            "SELECT index_name, duration_ms, extract(epoch FROM started_at) AS s, extract(epoch FROM finished_at) AS e "
            "FROM bxbatch.index_build WHERE status = 'done' ORDER BY duration_ms DESC"
        )
    finally:
        await conn.close()
    secs: dict[str, Any] = {name: e - s for name, (s, e) in phases.items()}
    secs["total"] = wall
    main = sum(float(p["s"]) for p in passes if int(p["round"]) == 0)
    settle = sum(float(p["s"]) for p in passes if int(p["round"]) > 0)
    settle_rows = sum(int(p["rows"]) for p in passes if int(p["round"]) > 0)
    detail: dict[str, Any] = {
        "main_passes_s": main,
        "settle_s": settle,
        "settle_rows": settle_rows,
        "chunks": {
            str(c["job"]): {"longest_ms": float(c["longest"]), "p99_ms": float(c["p99"]), "n": int(c["n"])}
            for c in chunks
        },
        "builds": {str(b["index_name"]): int(b["duration_ms"]) / 1000 for b in builds},
    }
    if "backfill" in phases:  # builds started while the backfill phase ran (the log's, right after its seeding)
        start, end = phases["backfill"]
        early = [b for b in builds if start <= float(b["s"]) <= end]
        if early:
            detail["early_builds"] = {
                "n": len(early),
                "from_backfill_start_s": min(float(b["s"]) for b in early) - start,
                "busy_s": max(float(b["e"]) for b in early) - min(float(b["s"]) for b in early),
            }
    if sampler:
        detail["cores"] = {name: sampler.cores(s, e) for name, (s, e) in phases.items()}
    return {"secs": secs, "detail": detail}


# --------------------------------------------------------------------------------------------
# comparing the two sides


async def digest(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, Any] = {}
        for table, cols in TARGETS.items():
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, coalesce(sum(hashtext(({cols})::text)::bigint), 0) AS h FROM {table}"
                if table != "database_activitylog"
                else f"SELECT count(*) AS n, coalesce(sum(hashtext((table_id, row_id, action_type, user_id, "
                f"details)::text)::bigint), 0) AS h FROM {table}"
            )
            assert row is not None
            out[table] = (int(row["n"]), int(row["h"]))
        out["valid_indexes"] = int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
                "WHERE c.relname LIKE 'idx\\_%' AND i.indisvalid"
            )
        )
        return out
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------
# driver


@dataclass
class Repeat:
    first: str
    hand: dict[str, float]
    bx: dict[str, Any]
    check: str


@dataclass
class ScaleRun:
    scale: float
    synth: dict[str, Any]
    server_version: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    repeats: list[Repeat] = field(default_factory=list)


def write_out(runs: list[ScaleRun], opts: argparse.Namespace) -> str:
    """The tables so far (written after every repeat, so a long run that is stopped still leaves its figures)."""
    text = markdown(runs, opts)
    if opts.markdown:
        opts.markdown.write_text(text)
    if opts.json:
        opts.json.write_text(
            json.dumps([{**run.__dict__, "repeats": [r.__dict__ for r in run.repeats]} for run in runs], default=str)
        )
    return text


async def one_scale(server: Any, scale: float, opts: argparse.Namespace, done: list[ScaleRun]) -> ScaleRun:
    from bxbatch.migrations.baserow_expansion.synth import (  # the generator only: the install, not the migration
        SynthSpec,
        build_install,
    )
    from bxbatch.migrations.baserow_expansion.synth_base import SHAPES

    admin = await asyncpg.connect(server.dsn("postgres"))
    try:
        await admin.execute("DROP DATABASE IF EXISTS whole_src")
        await admin.execute("CREATE DATABASE whole_src TEMPLATE template0")
        src = await asyncpg.connect(server.dsn("whole_src"))
        try:
            say(f"scale {scale}: building the install")
            report = await build_install(src, SynthSpec(scale=scale, seed=opts.seed, **SHAPES[opts.permissions_shape]))
            await src.execute("VACUUM ANALYZE")
            version = str(await src.fetchval("SHOW server_version"))
        finally:
            await src.close()
        run = ScaleRun(
            scale=scale,
            synth={
                k: getattr(report, k) for k in ("user_rows", "user_tables", "tables", "views", "members", "seconds")
            },
            server_version=version,
            load_before=os.getloadavg(),
        )
        sampler = CpuSampler(postmaster_pid(server.datadir))
        log_dir = Path(opts.log_dir or "/tmp")
        for i in range(opts.repeat):
            order = ("hand", "bx") if i % 2 == 0 else ("bx", "hand")
            for side in ("hand", "bx"):
                await admin.execute(f"DROP DATABASE IF EXISTS whole_{side}")
                await admin.execute(f"CREATE DATABASE whole_{side} TEMPLATE whole_src")
            results: dict[str, Any] = {}
            for side in order:
                # each side starts on a quiet server: the other side's dirty buffers written out (the hand
                # writes gigabytes of WAL, whose checkpoint otherwise lands in the next side's run) and no
                # autovacuum worker still busy with its tables
                await quiesce(admin)
                say(f"scale {scale} repeat {i + 1}: {side}")
                if side == "hand":
                    results["hand"] = await run_hand(server.dsn("whole_hand"))
                else:
                    results["bx"] = await run_bx(
                        server.dsn("whole_bx"),
                        opts.concurrency,
                        opts.bx_args.split() if opts.bx_args else [],
                        sampler,
                        log_dir / f"whole-bx-{scale}-{i}.log",
                        opts.bx_src,
                    )
                say(f"  {side}: {results[side]['total'] if side == 'hand' else results[side]['secs']['total']:.1f} s")
            a, b = await digest(server.dsn("whole_hand")), await digest(server.dsn("whole_bx"))
            check = "identical" if a == b else f"MISMATCH hand={a} bx={b}"
            run.repeats.append(Repeat(order[0], results["hand"], results["bx"], check))
            if check != "identical":
                say(check)
            run.load_after = os.getloadavg()
            write_out([*done, run], opts)
        run.load_after = os.getloadavg()
        if not opts.keep:
            for side in ("hand", "bx", "src"):
                await admin.execute(f"DROP DATABASE IF EXISTS whole_{side}")
        return run
    finally:
        await admin.close()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def markdown(runs: list[ScaleRun], opts: argparse.Namespace) -> str:
    lines: list[str] = []
    for run in runs:
        s = run.synth
        hand_tot = [r.hand["total"] for r in run.repeats]
        bx_tot = [r.bx["secs"]["total"] for r in run.repeats]
        ratio = _median(hand_tot) / _median(bx_tot) if bx_tot else 0.0
        lines += [
            f"### scale {run.scale} (PostgreSQL {run.server_version}, `--concurrency {opts.concurrency}`"
            + (f" {opts.bx_args}" if opts.bx_args else "")
            + ")",
            "",
            f"Install: {s['user_rows']:,} user rows in {s['user_tables']} user tables, {s['tables']:,} "
            f"database_table rows, {s['views']:,} views, {s['members']:,} memberships. "
            f"Load average before/after: {run.load_before[0]:.2f} / {run.load_after[0]:.2f}. "
            f"Repeats: {len(run.repeats)} (first side: {', '.join(r.first for r in run.repeats)}); "
            f"checks: {', '.join(sorted({r.check[:40] for r in run.repeats}))}.",
            "",
            f"**Whole migration: hand {_median(hand_tot):.1f} s, bxbatch {_median(bx_tot):.1f} s "
            f"= {ratio:.2f}x** (medians; hand {', '.join(f'{x:.1f}' for x in hand_tot)}; "
            f"bxbatch {', '.join(f'{x:.1f}' for x in bx_tot)})",
            "",
            "| guide's order by hand | seconds (median) | | bxbatch phase | seconds (median) | server cores used |",
            "| --- | ---: | --- | --- | ---: | ---: |",
        ]
        hand_rows = [(p, _median([r.hand[p] for r in run.repeats])) for p in HAND_PHASES]
        bx_rows = []
        for p in BX_PHASES:
            vals = [r.bx["secs"].get(p) for r in run.repeats if r.bx["secs"].get(p) is not None]
            cores = [r.bx["detail"].get("cores", {}).get(p) for r in run.repeats]
            cores_f = [c for c in cores if c is not None]
            bx_rows.append((p, _median(vals), _median(cores_f) if cores_f else None))
        for i in range(max(len(hand_rows), len(bx_rows))):
            h = hand_rows[i] if i < len(hand_rows) else ("", None)
            b = bx_rows[i] if i < len(bx_rows) else ("", None, None)
            lines.append(
                f"| {h[0]} | {'' if h[1] is None else f'{h[1]:.2f}'} | | {b[0]} | "
                f"{'' if b[1] is None else f'{b[1]:.2f}'} | {'' if b[2] is None else f'{b[2]:.2f}'} |"
            )
        lines.append(
            f"| **total** | **{_median(hand_tot):.2f}** | | **total** (wall, incl. start-up) | "
            f"**{_median(bx_tot):.2f}** | |"
        )
        d = [r.bx["detail"] for r in run.repeats]
        longest = {
            job: max(x["chunks"].get(job, {}).get("longest_ms", 0.0) for x in d)
            for job in ("enhanced_views", "permissions", "activity_seed")
        }
        p99 = {
            job: max(x["chunks"].get(job, {}).get("p99_ms", 0.0) for x in d)
            for job in ("enhanced_views", "permissions", "activity_seed")
        }
        lines += [
            "",
            f"- backfill: main and catch-up passes {_median([x['main_passes_s'] for x in d]):.2f} s, settle rounds "
            f"{_median([x['settle_s'] for x in d]):.2f} s "
            f"({_median([x['settle_s'] for x in d]) / max(_median([x['main_passes_s'] for x in d]), 1e-9):.1%} of "
            f"the main passes; rows changed {max(x['settle_rows'] for x in d)})",
            "- longest chunk transaction (max over repeats): "
            + ", ".join(f"{j} {longest[j]:.0f} ms (p99 {p99[j]:.0f})" for j in longest),
            "- index builds during the backfill phase: "
            + "; ".join(
                f"{x['early_builds']['n']} builds from {x['early_builds']['from_backfill_start_s']:.1f} s into it "
                f"for {x['early_builds']['busy_s']:.1f} s"
                for x in d
                if x.get("early_builds")
            )
            + (" (none)" if not any(x.get("early_builds") for x in d) else ""),
            "- slowest index builds (median s): "
            + ", ".join(
                f"{name} {_median([x['builds'].get(name, 0.0) for x in d]):.2f}"
                for name in sorted(d[0]["builds"], key=lambda n: -d[0]["builds"][n])[:4]
            ),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.whole", description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="1", help="synth scale(s), comma-separated; default 1")
    p.add_argument("--repeat", type=int, default=3, help="alternating repeats per scale; default 3")
    p.add_argument("--concurrency", type=int, default=4, help="bxbatch run --concurrency; default 4")
    p.add_argument("--bx-args", default="", help="more flags for bxbatch run, e.g. '--index-concurrency 2'")
    p.add_argument("--bx-src", help="run bxbatch from this source tree (its src/ and sql/), e.g. an older commit")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--permissions-shape",
        choices=["default", "founders"],
        default="default",
        help="synth shape (synth_base.SHAPES): founders = big workspaces, ~3.2 M permissions at scale 3",
    )
    p.add_argument("--pg", choices=["embedded", "system"], default="embedded")
    p.add_argument("--keep", action="store_true", help="keep the databases (and the server's directory)")
    p.add_argument("--log-dir", help="where the bxbatch runs' JSON logs go; default /tmp")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument("--markdown", type=Path, help="write the tables here")
    opts = p.parse_args(argv)
    from bxbatch.devtools.embedded import start_server

    async def go() -> list[ScaleRun]:
        server = start_server(opts.pg)
        try:
            done: list[ScaleRun] = []
            for s in opts.scale.split(","):
                if s.strip():
                    done.append(await one_scale(server, float(s), opts, done))
            return done
        finally:
            if not opts.keep:
                server.close()

    runs = asyncio.run(go())
    print(write_out(runs, opts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
