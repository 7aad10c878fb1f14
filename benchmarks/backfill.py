"""Backfill benchmark: each of the guide's three backfills run every way, on the same data, in one run.

For each scale: a throwaway server (or ``--dsn``, a server where the benchmark may create a
database), a generated install (``migrations.baserow_expansion.synth``; its build time is reported), the schema and
trigger phases, then for each backfill, resetting its target table between methods:

1. ``single``: the guide's single statement, fixed (``set_based`` of the job file; for the activity
   seeding, the job's own chunk statement over every user table's whole (0, high-water] range),
   one ``INSERT ... SELECT`` in one transaction;
2. ``keyset``: sequential keyset chunks on one connection: bxbatch's planner (an index-only
   ``WHERE key > $lo ORDER BY key OFFSET n-1 LIMIT 1`` per chunk) and the job's chunk statement,
   each chunk its own transaction, with no ledger, no pool, no concurrency;
3. ``offset``: OFFSET paging, ``INSERT ... SELECT * FROM (<the job's select>) ORDER BY <key>
   LIMIT n OFFSET k``: every page recomputes and skips all earlier rows; time-boxed, then
   extrapolated from a fit of page time against rows and offset;
4. ``row``: row by row, the job's select read through a cursor and one autocommitted ``INSERT ...
   VALUES`` per row; time-boxed and extrapolated linearly;
5. ``bxbatch``: the engine (``run_job_once``) in a subprocess at each ``--concurrency``, reporting
   its peak RSS; and ``throttled``: the same at the highest concurrency with the throttle fed by
   ``--probe-sql`` = the benchmark's probe.

The naive methods' statements are derived from the job files' statements through PostgreSQL's
parse tree (pglast), never written out again here. A separate process runs a small application
probe (a primary-key lookup on the largest user table joined to its table, database and
workspace rows) in a loop the whole time; each method reports the probe's p50/p99 during its
run, against a baseline taken with nothing else running. Every method's rows are compared with
the single statement's (``EXCEPT ALL`` both ways on the natural keys and contents; time-boxed
methods must write a subset, no duplicates).

    .venv/bin/python -m benchmarks.backfill --scale 1 --concurrency 1,2,4
    .venv/bin/python -m benchmarks.backfill --scale 0.1,1 --json /tmp/bench.json --markdown /tmp/bench.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pglast
from pglast import ast, visitors
from pglast.enums import AlterTableType
from pglast.stream import RawStream

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("single", "keyset", "offset", "row", "bxbatch", "throttled")
JOBS = ("enhanced_views", "permissions", "activity_seed")

# What "the same rows" means per job: natural keys and contents, never generated ids or now().
COMPARE_COLUMNS = {
    "enhanced_views": "view_ptr_id, sticky_headers, conditional_formatting, column_grouping, filter_presets",
    "permissions": "user_id, resource_type, resource_id, permission_level, granted_by_id",
    "activity_seed": (
        "table_id, row_id, action_type, user_id, details, "
        "CASE WHEN details -> 'row_data' ->> 'created_on' IS NULL THEN NULL ELSE \"timestamp\" END AS ts"
    ),
}
# The natural key's position in each job's select (ORDER BY of the OFFSET and row-by-row walks).
ORDER_BY = {"enhanced_views": "1", "permissions": "1, 3", "activity_seed": "3"}


# --------------------------------------------------------------------------------------------
# figures


@dataclass
class MethodResult:
    job: str
    method: str
    rows: int  # rows this method wrote (fewer than total_rows when time-boxed)
    total_rows: int  # rows the job writes (the single statement's count)
    seconds: float  # for the whole job: measured, or extrapolated when time-boxed
    measured_seconds: float
    extrapolated: bool
    longest_tx_ms: float
    probe_p50_ms: float | None = None
    probe_p99_ms: float | None = None
    probe_samples: int = 0
    check: str = ""  # identical | subset | MISMATCH ...
    concurrency: int | None = None
    wall_seconds: float | None = None  # bxbatch: the whole run (pool, passes, settle and reconcile rounds)
    peak_rss_mb: float | None = None
    chunks: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method} c={self.concurrency}" if self.concurrency else self.method

    @property
    def rows_per_s(self) -> float:
        return self.total_rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def us_per_row(self) -> float:
        return self.seconds * 1e6 / self.total_rows if self.total_rows else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(label=self.label, rows_per_s=round(self.rows_per_s, 1), us_per_row=round(self.us_per_row, 2))
        return d


@dataclass
class ScaleResult:
    scale: float
    server_version: str
    synth: dict[str, Any]
    baseline_p50_ms: float
    baseline_p99_ms: float
    baseline_samples: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    results: list[MethodResult] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["results"] = [r.as_dict() for r in self.results]
        return d


def target_keys() -> list[tuple[str, str, str, str]]:
    """(file, table, constraint, statement) of each foreign key the backfill phase adds."""
    from bxbatch.migrations.loader import load_migration

    keys = []
    for f in load_migration().ddl_files("backfill"):
        for stmt in f.statements:  # read from the parse tree the DDL runner already built
            if stmt.kind != "AlterTableStmt":
                continue
            for cmd in stmt.node.cmds or ():
                if cmd.subtype == AlterTableType.AT_AddConstraint:
                    keys.append((f.name, str(stmt.node.relation.relname), str(cmd.def_.conname), stmt.sql))
    return keys


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


# --------------------------------------------------------------------------------------------
# statements derived from the job files through the parse tree


class _MaxParam(visitors.Visitor):  # type: ignore[misc]  # pglast ships no type stubs
    def __init__(self) -> None:
        self.highest = 0

    def visit_ParamRef(self, _ancestors: Any, node: ast.ParamRef) -> None:
        self.highest = max(self.highest, int(node.number))


@dataclass(frozen=True)
class Derived:
    """The naive forms of one ``INSERT ... SELECT``: its ordered select, an OFFSET page, one-row VALUES."""

    select_sql: str  # binds the statement's own parameters
    page_sql: str  # ... plus LIMIT $p+1 OFFSET $p+2
    values_sql: str  # INSERT ... VALUES ($1..$m) with the statement's ON CONFLICT
    params: int


def derive(insert_sql: str, order_by: str) -> Derived:
    tree = pglast.parse_sql(insert_sql)
    if len(tree) != 1 or not isinstance(tree[0].stmt, ast.InsertStmt):
        raise ValueError("expected one INSERT ... SELECT statement")
    stmt = tree[0].stmt
    counter = _MaxParam()
    counter(stmt)
    p = counter.highest
    inner = RawStream()(stmt.selectStmt)
    ordered = f"SELECT * FROM ({inner}) AS src ORDER BY {order_by}"
    page = pglast.parse_sql(f"{ordered} LIMIT ${p + 1} OFFSET ${p + 2}")[0].stmt
    stmt.selectStmt = page
    page_sql = RawStream()(stmt)
    width = len(stmt.cols)
    stmt.selectStmt = pglast.parse_sql("VALUES (" + ", ".join(f"${i}" for i in range(1, width + 1)) + ")")[0].stmt
    values_sql = RawStream()(stmt)
    return Derived(select_sql=ordered, page_sql=page_sql, values_sql=values_sql, params=p)


@dataclass(frozen=True)
class Unit:
    """One source the naive methods walk: the whole job (table sources) or one user table."""

    label: str
    derived: Derived
    args: tuple[Any, ...]
    rows: int


def _affected(status: str) -> int:
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# --------------------------------------------------------------------------------------------
# the probe (its own process, so that neither the GIL nor our event loop sits in its timings)


class ProbeProcess:
    """Runs the probe query in a loop in a child process; samples are (wall time, ms)."""

    def __init__(self, dsn: str, sql: str, interval_ms: float) -> None:
        self.dsn, self.sql, self.interval_ms = dsn, sql, interval_ms
        self.proc: asyncio.subprocess.Process | None = None
        self.samples: list[tuple[float, float]] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.backfill",
            "--probe-child",
            "--dsn",
            self.dsn,
            "--probe-sql",
            self.sql,
            "--probe-interval-ms",
            str(self.interval_ms),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"probe process did not start: {line!r}")

    async def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        out = await asyncio.wait_for(self.proc.stdout.read(), 60)
        await self.proc.wait()
        self.samples = [(float(t), float(ms)) for t, ms in json.loads(out or b"[]")]
        self.proc = None

    def window(self, start: float, end: float) -> list[float]:
        return [ms for t, ms in self.samples if start <= t <= end]


async def probe_child(dsn: str, sql: str, interval_ms: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    conn = await asyncpg.connect(dsn)
    samples: list[tuple[float, float]] = []
    try:
        for _ in range(5):  # plan cache and buffers warm before anyone looks
            await conn.fetch(sql)
        print("ready", flush=True)
        while not stop.is_set():
            t0 = time.perf_counter()
            await conn.fetch(sql)
            samples.append((time.time(), (time.perf_counter() - t0) * 1000))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_ms / 1000)
    finally:
        await conn.close()
    sys.stdout.write(json.dumps([[round(t, 4), round(ms, 4)] for t, ms in samples]))
    sys.stdout.flush()


def probe_sql_for(giant_table_id: int, giant_relname: str, max_row_id: int) -> str:
    """A small application read: one row of the largest user table (random key) with its table, database, workspace."""
    return (
        f"SELECT r.id, r.created_on, r.trashed, t.id AS table_id, d.id AS database_id, w.name AS workspace "
        f"FROM database_table AS t "
        f"JOIN database_database AS d ON d.id = t.database_id "
        f"JOIN database_workspace AS w ON w.id = d.workspace_id "
        f'JOIN public."{giant_relname}" AS r ON r.id = (SELECT (1 + floor(random() * {int(max_row_id)}))::integer) '
        f"WHERE t.id = {int(giant_table_id)}"
    )


# --------------------------------------------------------------------------------------------
# the bxbatch engine, in a child process (its own peak RSS, no interference with ours)


async def run_engine_child(
    dsn: str, job: str, concurrency: int, settings: dict[str, Any], log_dir: Path
) -> dict[str, Any]:
    log_path = log_dir / f"engine-{job}-{concurrency}-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.backfill",
            "--engine-child",
            "--dsn",
            dsn,
            "--engine-job",
            job,
            "--concurrency",
            str(concurrency),
            "--engine-settings",
            json.dumps(settings),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"bxbatch run of {job} at concurrency {concurrency} failed ({proc.returncode}):\n{tail}")
    figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return figures


async def engine_child(dsn: str, job: str, concurrency: int, settings_json: str) -> None:
    from benchmarks.engine import run_job_once
    from bxbatch.observe.log import configure
    from bxbatch.settings import Settings

    settings = Settings(progress=False, **json.loads(settings_json))
    configure("json", debug=settings.debug)  # debug: a chunk_committed event per chunk
    started = time.time()
    figures = await run_job_once(dsn, job, concurrency, settings=settings)
    figures.update(
        window=[started, time.time()],
        peak_rss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    )
    print(json.dumps(figures, default=str), flush=True)


# --------------------------------------------------------------------------------------------
# one scale


@dataclass
class Options:
    scales: list[float]
    concurrency: list[int]
    jobs: list[str]
    methods: list[str]
    box_seconds: float = 25.0
    chunk_rows: int = 5_000
    seed: int = 42
    permissions_shape: str = "default"  # synth_base.SHAPES: "founders" = big workspaces, ~3.1 M permissions at scale 3
    baseline_seconds: float = 5.0
    probe_interval_ms: float = 20.0
    throttle_probe_interval_s: float = 0.25
    dsn: str | None = None
    pg: str = "embedded"
    keep: bool = False
    quiet: bool = False
    repeat: int = 1  # runs of single, keyset and bxbatch per job; the fastest is reported
    engine_settings: dict[str, Any] = field(default_factory=dict)  # Settings fields for every bxbatch run
    throttle_settings: dict[str, Any] = field(default_factory=dict)  # ... and for the throttled run on top
    log_dir: Path | None = None  # keep the engine runs' logs here
    wait_load: float = 0.0  # before each scale, wait (at most wait_max_s) for the 1-minute load average below this
    wait_max_s: float = 900.0


def _with_database(dsn: str, database: str) -> str:
    split = urlsplit(dsn)
    return urlunsplit((split.scheme, split.netloc, "/" + database, split.query, split.fragment))


def say(opts: Options, *parts: Any) -> None:
    if not opts.quiet:
        print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


@contextlib.contextmanager
def only_phases(names: Sequence[str]) -> Iterator[None]:
    """Run the real phases up to the backfill only (the benchmark measures the backfills)."""
    from bxbatch.ops import run as app

    saved = list(app.PHASES)
    app.PHASES[:] = [(n, fn) for n, fn in saved if n in names]
    try:
        yield
    finally:
        app.PHASES[:] = saved


class Bench:
    """The benchmark of one scale on one database."""

    def __init__(self, opts: Options, dsn: str, scale: float, log_dir: Path) -> None:
        from bxbatch.migrations.loader import load_migration

        self.opts, self.dsn, self.scale, self.log_dir = opts, dsn, scale, log_dir
        self.profile = load_migration().profile
        self.conn: asyncpg.Connection | None = None
        self.probe: ProbeProcess | None = None
        self.installs: list[tuple[int, str, int]] = []  # (table_id, relname, high_water)

    @property
    def c(self) -> asyncpg.Connection:
        assert self.conn is not None
        return self.conn

    async def setup(self) -> ScaleResult:
        from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install
        from bxbatch.migrations.baserow_expansion.synth_base import SHAPES
        from bxbatch.ops.run import run_migration
        from bxbatch.settings import Settings

        conn = await asyncpg.connect(self.dsn)
        try:
            say(self.opts, f"scale {self.scale}: building the synthetic install")
            spec = SynthSpec(scale=self.scale, seed=self.opts.seed, **SHAPES[self.opts.permissions_shape])
            report = await build_install(conn, spec)
        finally:
            await conn.close()
        say(self.opts, f"synth: {report.user_rows} user rows in {report.seconds:.1f} s")
        with only_phases(("preflight", "schema", "triggers")):
            await run_migration(Settings(dsn=self.dsn, progress=False))
        self.conn = await asyncpg.connect(self.dsn)
        await self.c.execute("CREATE SCHEMA IF NOT EXISTS bench")
        self.installs = [
            (int(r["table_id"]), str(r["relname"]), int(r["high_water"]))
            for r in await self.c.fetch(
                "SELECT table_id, relname, high_water FROM bxbatch.trigger_install "
                "WHERE high_water > 0 ORDER BY table_id"
            )
        ]
        giant = report.giant_table_id or self.installs[0][0]
        relname = f"database_table_{giant}"
        max_id = int(await self.c.fetchval(f'SELECT coalesce(max(id), 1) FROM public."{relname}"'))
        self.probe_sql = probe_sql_for(giant, relname, max_id)
        self.probe = ProbeProcess(self.dsn, self.probe_sql, self.opts.probe_interval_ms)
        await self.probe.start()
        t0 = time.time()
        await asyncio.sleep(self.opts.baseline_seconds)
        self.baseline_window = (t0, time.time())
        version = str(await self.c.fetchval("SHOW server_version"))
        synth = {
            k: v
            for k, v in asdict(report).items()
            if k not in ("empty_user_tables", "single_row_user_tables", "decoy_tables")
        }
        return ScaleResult(
            scale=self.scale,
            server_version=version,
            synth=synth,
            baseline_p50_ms=0.0,
            baseline_p99_ms=0.0,
            baseline_samples=0,
            load_before=os.getloadavg(),
        )

    async def close(self) -> None:
        if self.probe is not None:
            await self.probe.stop()
        if self.conn is not None:
            await self.conn.close()

    # --- shared ---------------------------------------------------------------------------
    async def reset(self, job: str, keys: str = "guide") -> None:
        """Empty the job's target; ``keys``: the state of the backfill targets' foreign keys.

        "guide": present and valid, as the guide's CREATE TABLE ... REFERENCES leaves them, so the
        single statement and the naive ways pay the per-row checks as they would. "engine": absent
        and not recorded, as a run's backfill phase finds them: the engine adds them after the main
        passes (sql/ddl/050_backfill_target_keys.sql), and ``bxbatch()`` adds their VALIDATE time.
        """
        from bxbatch.migrations.loader import load_migration

        await self.c.execute(f"TRUNCATE {load_migration().job(job).target}")
        existing = {str(r["conname"]) for r in await self.c.fetch("SELECT conname FROM pg_constraint")}
        for file, table, name, stmt in target_keys():
            if keys == "guide" and name not in existing:
                await self.c.execute(stmt)
                await self.c.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
            elif keys == "engine":
                await self.c.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}")
                await self.c.execute("DELETE FROM bxbatch.ddl_file WHERE file = $1", file)
                await self.c.execute("DELETE FROM bxbatch.ddl_statement WHERE file = $1", file)
        await self.c.execute("CHECKPOINT")

    async def validate_target_keys(self, job: str) -> float:
        """VALIDATE the job target's keys the engine added NOT VALID; returns the seconds it took."""
        from bxbatch.migrations.loader import load_migration

        target = load_migration().job(job).target
        t0 = time.monotonic()
        for _file, table, name, _stmt in target_keys():
            if table == target:
                await self.c.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
        return time.monotonic() - t0

    async def keep_reference(self, job: str) -> int:
        from bxbatch.migrations.loader import load_migration

        target = load_migration().job(job).target
        await self.c.execute(f"DROP TABLE IF EXISTS bench.ref_{job}")
        await self.c.execute(f"CREATE UNLOGGED TABLE bench.ref_{job} AS SELECT {COMPARE_COLUMNS[job]} FROM {target}")
        return int(await self.c.fetchval(f"SELECT count(*) FROM bench.ref_{job}"))

    async def check(self, job: str, complete: bool) -> str:
        from bxbatch.migrations.loader import load_migration

        target = load_migration().job(job).target
        ours = f"SELECT {COMPARE_COLUMNS[job]} FROM {target}"
        ref = f"SELECT * FROM bench.ref_{job}"
        extra = int(await self.c.fetchval(f"SELECT count(*) FROM ({ours} EXCEPT ALL {ref}) AS x"))
        missing = int(await self.c.fetchval(f"SELECT count(*) FROM ({ref} EXCEPT ALL {ours}) AS x"))
        if complete:
            return "identical" if extra == 0 and missing == 0 else f"MISMATCH: {extra} extra, {missing} missing"
        return "subset" if extra == 0 else f"MISMATCH: {extra} rows not in the reference (or doubled)"

    def units(self, job: str, ref_counts: dict[int, int], total: int) -> list[Unit]:
        from bxbatch.migrations.jobs import render_segments
        from bxbatch.migrations.loader import load_migration

        j = load_migration().job(job)
        if not j.per_user_table:
            return [Unit(job, derive(j.sql("set_based"), ORDER_BY[job]), j.extra_args(self.profile), total)]
        return [
            Unit(
                rel,
                derive(render_segments(j, [rel], self.profile.schema), ORDER_BY[job]),
                ([tid], [0], [hw]),
                ref_counts.get(tid, 0),
            )
            for tid, rel, hw in self.installs
        ]

    # --- the methods ------------------------------------------------------------------------
    async def single(self, job: str) -> MethodResult:
        from bxbatch.migrations.jobs import render_segments
        from bxbatch.migrations.loader import load_migration

        j = load_migration().job(job)
        if j.per_user_table:
            sql = render_segments(j, [rel for _t, rel, _h in self.installs], self.profile.schema)
            args: tuple[Any, ...] = (
                [t for t, _r, _h in self.installs],
                [0] * len(self.installs),
                [h for _t, _r, h in self.installs],
            )
        else:
            sql, args = j.sql("set_based"), j.extra_args(self.profile)
        t0 = time.monotonic()
        async with self.c.transaction():
            rows = _affected(await self.c.execute(sql, *args))
        seconds = time.monotonic() - t0
        return MethodResult(job, "single", rows, rows, seconds, seconds, False, seconds * 1000)

    async def keyset(self, job: str, total: int, ref_counts: dict[int, int]) -> MethodResult:
        from bxbatch.backfill.planner import PartCursor, TableKeySource, plan_chunks
        from bxbatch.migrations.jobs import render_segments
        from bxbatch.migrations.loader import load_migration

        j = load_migration().job(job)
        conn = self.c
        if j.per_user_table:
            parts = [
                PartCursor(tid, rel, 0, hw, 0, est_rows=ref_counts.get(tid, 0), est_exact=True)
                for tid, rel, hw in self.installs
            ]
            source = TableKeySource(conn, self.profile.schema)
            size = self.opts.chunk_rows
        else:
            bound = int(await conn.fetchval(j.sql("main_bound")))
            parts = [PartCursor(0, None, 0, bound, 0)]
            source = TableKeySource(conn, self.profile.schema, j.key_table, j.key_column or "id")
            keys = int(await conn.fetchval(f"SELECT count(*) FROM {j.key_table}"))
            size = max(1, round(self.opts.chunk_rows * keys / max(total, 1)))  # keys for ~chunk_rows rows
        relnames = {p.part: p.relname for p in parts}
        rows = chunks = 0
        longest = 0.0
        t0 = time.monotonic()
        while True:
            plans = await plan_chunks(parts, source, size, 1)
            if not plans:
                break
            segs = plans[0].segments
            c0 = time.monotonic()
            if j.per_user_table:
                sql = render_segments(j, [str(relnames[s.part]) for s in segs], self.profile.schema)
                status = await conn.execute(sql, [s.part for s in segs], [s.lo for s in segs], [s.hi for s in segs])
            else:
                status = await conn.execute(j.sql("chunk"), segs[0].lo, segs[0].hi, *j.extra_args(self.profile))
            longest = max(longest, time.monotonic() - c0)
            rows += _affected(status)
            chunks += 1
        seconds = time.monotonic() - t0
        return MethodResult(job, "keyset", rows, total, seconds, seconds, False, longest * 1000, chunks=chunks)

    async def offset(self, job: str, total: int, ref_counts: dict[int, int]) -> MethodResult:
        n = self.opts.chunk_rows
        units = self.units(job, ref_counts, total)
        if len(units) > 1:
            units.sort(key=lambda u: -u.rows)  # the largest table first: the box then sees offsets grow
        samples: list[tuple[int, int, float]] = []  # (rows in page, offset, seconds)
        rows = 0
        longest = 0.0
        t0 = time.monotonic()
        done_pages: dict[str, int] = {}
        boxed = False
        for unit in units:
            k = 0
            while True:
                if time.monotonic() - t0 > self.opts.box_seconds:
                    boxed = True
                    break
                c0 = time.monotonic()
                got = _affected(await self.c.execute(unit.derived.page_sql, *unit.args, n, k))
                dt = time.monotonic() - c0
                samples.append((got, k, dt))
                longest = max(longest, dt)
                rows += got
                k += n
                done_pages[unit.label] = done_pages.get(unit.label, 0) + 1
                if got < n:
                    break
            if boxed:
                break
        measured = time.monotonic() - t0
        seconds = measured
        fit: dict[str, float] = {}
        if boxed:
            # a unit's pages start at offsets 0, n, 2n, ... up to its row count (the last one short or empty)
            remaining = [
                (min(n, unit.rows - k), k)
                for unit in units
                for k in range(done_pages.get(unit.label, 0) * n, unit.rows + 1, n)
            ]
            seconds, fit = _extrapolate_pages(samples, remaining, measured, rows, total)
            longest = max(longest, fit.get("longest_page_s", 0.0))
        result = MethodResult(job, "offset", rows, total, seconds, measured, boxed, longest * 1000, chunks=len(samples))
        result.extra["fit"] = fit
        return result

    async def row_by_row(self, job: str, total: int, ref_counts: dict[int, int]) -> MethodResult:
        units = self.units(job, ref_counts, total)
        reader = await asyncpg.connect(self.dsn)
        rows = 0
        longest = 0.0
        boxed = False
        t0 = time.monotonic()
        try:
            async with reader.transaction(isolation="repeatable_read", readonly=True):
                for unit in units:
                    async for record in reader.cursor(unit.derived.select_sql, *unit.args, prefetch=500):
                        if time.monotonic() - t0 > self.opts.box_seconds:
                            boxed = True
                            break
                        c0 = time.monotonic()
                        await self.c.execute(unit.derived.values_sql, *record.values())
                        longest = max(longest, time.monotonic() - c0)
                        rows += 1
                    if boxed:
                        break
        finally:
            await reader.close()
        measured = time.monotonic() - t0
        seconds = measured * total / rows if boxed and rows else measured
        return MethodResult(job, "row", rows, total, seconds, measured, boxed, longest * 1000)

    async def bxbatch(self, job: str, total: int, concurrency: int, throttled: bool) -> MethodResult:
        settings: dict[str, Any] = dict(self.opts.engine_settings)
        if throttled:
            settings.update(probe_sql=self.probe_sql, probe_interval_s=self.opts.throttle_probe_interval_s)
            settings.update(self.opts.throttle_settings)
        figures = await run_engine_child(self.dsn, job, concurrency, settings, self.log_dir)
        # the target's keys came after the load: their validation is part of bxbatch's cost
        validate_s = await self.validate_target_keys(job)
        figures["seconds"] = float(figures["seconds"]) + validate_s
        figures["wall_seconds"] = float(figures["wall_seconds"]) + validate_s
        result = MethodResult(
            job,
            "throttled" if throttled else "bxbatch",
            int(figures["rows"]),
            total,
            float(figures["seconds"]),
            float(figures["seconds"]),
            False,
            float(figures["longest_ms"]),
            concurrency=concurrency,
            wall_seconds=float(figures["wall_seconds"]),
            peak_rss_mb=round(int(figures["peak_rss_kb"]) / 1024, 1),
            chunks=int(figures["chunks"]),
        )
        result.extra.update(
            {k: figures[k] for k in ("run_id", "p50_ms", "p99_ms", "retries", "settle_rounds", "reconciled", "passes")}
        )
        result.extra["window"] = figures["window"]
        result.extra["validate_s"] = round(validate_s, 4)
        if throttled:
            events = await self.c.fetch(
                "SELECT action, concurrency, chunk_scale, reason FROM bxbatch.throttle_event "
                "WHERE run_id = $1 ORDER BY id",
                int(figures["run_id"]),
            )
            result.extra["throttle_events"] = dict(Counter(str(e["action"]) for e in events))
            result.extra["min_concurrency"] = min((int(e["concurrency"]) for e in events), default=concurrency)
            result.extra["min_chunk_scale"] = min((float(e["chunk_scale"]) for e in events), default=1.0)
            result.extra["first_reasons"] = [str(e["reason"]) for e in events[:3]]
        return result

    # --- driver -----------------------------------------------------------------------------
    async def run_job(self, job: str) -> list[MethodResult]:
        opts = self.opts
        results: list[MethodResult] = []

        async def timed(coro: Any) -> MethodResult:
            start = time.time()
            result: MethodResult = await coro
            result.extra.setdefault("window", [start, time.time()])
            return result

        await self.reset(job)
        say(opts, f"{job}: single statement")
        single = await timed(self.single(job))
        total = await self.keep_reference(job)
        single.check = "reference" if total == single.rows else f"MISMATCH: {single.rows} written, {total} kept"
        runs = [single]
        for _ in range(opts.repeat - 1):
            await self.reset(job)
            again = await timed(self.single(job))
            again.check = await self.check(job, complete=True)
            runs.append(again)
        results.append(_best_of(runs))
        ref_counts: dict[int, int] = {}
        if job == "activity_seed":
            ref_counts = {
                int(r["table_id"]): int(r["n"])
                for r in await self.c.fetch(f"SELECT table_id, count(*) AS n FROM bench.ref_{job} GROUP BY table_id")
            }
        plan: list[tuple[str, Any, int | None, int]] = []  # (method, make, concurrency, runs)
        if "keyset" in opts.methods:
            plan.append(("keyset", lambda: self.keyset(job, total, ref_counts), None, opts.repeat))
        if "offset" in opts.methods:
            plan.append(("offset", lambda: self.offset(job, total, ref_counts), None, 1))
        if "row" in opts.methods:
            plan.append(("row", lambda: self.row_by_row(job, total, ref_counts), None, 1))
        if "bxbatch" in opts.methods:
            for n in opts.concurrency:
                plan.append(("bxbatch", lambda n=n: self.bxbatch(job, total, n, False), n, opts.repeat))
        if "throttled" in opts.methods:
            n = max(opts.concurrency)
            plan.append(("throttled", lambda n=n: self.bxbatch(job, total, n, True), n, opts.repeat))
        for name, make, conc, repeat in plan:
            runs = []
            for _ in range(repeat):
                await self.reset(job, keys="engine" if name in ("bxbatch", "throttled") else "guide")
                say(opts, f"{job}: {name}" + (f" at concurrency {conc}" if conc else ""))
                result = await timed(make())
                result.check = await self.check(job, complete=not result.extrapolated)
                runs.append(result)
            results.append(_pooled(runs) if name == "throttled" else _best_of(runs))
        return results

    def attach_probe(self, scale_result: ScaleResult) -> None:
        assert self.probe is not None
        base = self.probe.window(*self.baseline_window)
        scale_result.baseline_p50_ms = round(percentile(base, 0.5) or 0.0, 3)
        scale_result.baseline_p99_ms = round(percentile(base, 0.99) or 0.0, 3)
        scale_result.baseline_samples = len(base)
        for r in scale_result.results:
            own = r.extra.pop("window")
            lat = [ms for start, end in r.extra.pop("windows", None) or [own] for ms in self.probe.window(start, end)]
            r.probe_samples = len(lat)
            p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
            r.probe_p50_ms = None if p50 is None else round(p50, 3)
            r.probe_p99_ms = None if p99 is None else round(p99, 3)


def _best_of(runs: list[MethodResult]) -> MethodResult:
    """The fastest run (its own probe window and figures); every run's time and any failed check kept.

    The fastest, not the median: on a shared machine other processes only ever add time.
    """
    chosen = min(runs, key=lambda r: r.seconds)
    if len(runs) > 1:
        chosen.extra["runs_seconds"] = [round(r.seconds, 3) for r in runs]
        bad = [r.check for r in runs if r.check not in ("identical", "reference", "subset")]
        if bad:
            chosen.check = bad[0]
    return chosen


def _pooled(runs: list[MethodResult]) -> MethodResult:
    """The throttled runs: the median run's time, and the probe over *every* run's window.

    Not the fastest run: the fastest throttled run is the one the throttle held back least, so
    picking it would pick the worst probe latency; and a short job gives a window of a few
    probes, too few for a p99 of its own.
    """
    chosen = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    if len(runs) > 1:
        chosen.extra["runs_seconds"] = [round(r.seconds, 3) for r in runs]
        chosen.extra["windows"] = [r.extra["window"] for r in runs]
        bad = [r.check for r in runs if r.check not in ("identical", "reference", "subset")]
        if bad:
            chosen.check = bad[0]
    return chosen


def _extrapolate_pages(
    samples: list[tuple[int, int, float]], remaining: list[tuple[int, int]], measured: float, rows: int, total: int
) -> tuple[float, dict[str, float]]:
    """Time for the pages not run: least squares of page seconds = a*rows + b*offset over the pages run."""
    srr = sum(r * r for r, _k, _t in samples)
    srk = sum(r * k for r, k, _t in samples)
    skk = sum(k * k for _r, k, _t in samples)
    srt = sum(r * t for r, _k, t in samples)
    skt = sum(k * t for _r, k, t in samples)
    det = srr * skk - srk * srk
    if det > 0 and skk > 0:
        a = (srt * skk - skt * srk) / det
        b = (srr * skt - srk * srt) / det
        a, b = max(a, 0.0), max(b, 0.0)
        predicted = [a * r + b * k for r, k in remaining]
        return measured + sum(predicted), {
            "per_row_us": a * 1e6,
            "per_skipped_row_us": b * 1e6,
            "longest_page_s": max(predicted, default=0.0),
        }
    # every page run had offset 0: no way to see the quadratic term; linear (an underestimate)
    return (measured * total / rows if rows else measured), {"linear_only": 1.0}


async def wait_for_quiet(opts: Options) -> None:
    """Other people's work on a shared machine skews every figure: start when the load is low (or give up waiting)."""
    if opts.wait_load <= 0:
        return
    deadline = time.monotonic() + opts.wait_max_s
    while os.getloadavg()[0] >= opts.wait_load and time.monotonic() < deadline:
        say(opts, f"load {os.getloadavg()[0]:.2f} >= {opts.wait_load}: waiting")
        await asyncio.sleep(15)


async def run_scale(opts: Options, admin_dsn: str, scale: float, log_dir: Path) -> ScaleResult:
    await wait_for_quiet(opts)
    database = f"bxbench_{str(scale).replace('.', '_')}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{database}" TEMPLATE template0')
    finally:
        await admin.close()
    dsn = _with_database(admin_dsn, database)
    bench = Bench(opts, dsn, scale, log_dir)
    t0 = time.monotonic()
    try:
        result = await bench.setup()
        for job in opts.jobs:
            result.results.extend(await bench.run_job(job))
    finally:
        await bench.close()
        if not opts.keep:
            admin = await asyncpg.connect(admin_dsn)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", database
                )
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
            finally:
                await admin.close()
    bench.attach_probe(result)
    result.load_after = os.getloadavg()
    result.seconds = round(time.monotonic() - t0, 1)
    return result


# --------------------------------------------------------------------------------------------
# the whole benchmark, its report


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return ""
    return done.stdout.strip()


def machine() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "engine_dirty": bool(_git("status", "--porcelain", "src", "sql")),  # uncommitted engine changes ran
        "load_at_start": os.getloadavg(),
    }


async def run_benchmark(opts: Options) -> dict[str, Any]:
    """Every scale of ``opts``; returns the figures (also what ``--json`` writes)."""
    from bxbatch.devtools.embedded import start_server

    info = machine()
    log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="bxbench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    server = None
    admin_dsn = opts.dsn
    if admin_dsn is None:
        server = start_server(opts.pg)
        admin_dsn = server.dsn()
    try:
        scales = [await run_scale(opts, admin_dsn, s, log_dir) for s in opts.scales]
    finally:
        if server is not None:
            server.close()
    if opts.log_dir is None:
        shutil.rmtree(log_dir, ignore_errors=True)
    return {
        "machine": info,
        "options": asdict(opts) | {"dsn": None},
        "scales": [s.as_dict() for s in scales],
        "targets": targets(scales),
    }


def _best(results: list[MethodResult], job: str) -> MethodResult | None:
    runs = [r for r in results if r.job == job and r.method == "bxbatch"]
    return max(runs, key=lambda r: r.rows_per_s, default=None)


def _find(results: list[MethodResult], job: str, method: str) -> MethodResult | None:
    return next((r for r in results if r.job == job and r.method == method), None)


def targets(scales: list[ScaleResult]) -> list[dict[str, Any]]:
    """The issues' targets, each with the figure and whether it is met."""
    out: list[dict[str, Any]] = []
    if not scales:
        return out
    big = max(scales, key=lambda s: s.scale)
    small = min(scales, key=lambda s: s.scale)
    jobs = sorted({r.job for r in big.results}, key=lambda j: JOBS.index(j) if j in JOBS else 99)
    for job in jobs:
        best, single = _best(big.results, job), _find(big.results, job, "single")
        if best and single:
            out.append(
                {
                    "target": f"{job}: best bxbatch >= single statement rows/s (scale {big.scale})",
                    "figure": f"{best.rows_per_s:,.0f} (c={best.concurrency}) vs {single.rows_per_s:,.0f} rows/s "
                    f"= {best.rows_per_s / single.rows_per_s:.2f}x; whole run incl. settle/reconcile: "
                    f"{best.total_rows / (best.wall_seconds or best.seconds):,.0f} rows/s",
                    "met": best.rows_per_s >= single.rows_per_s,
                }
            )
    engine = [r for s in scales for r in s.results if r.method in ("bxbatch", "throttled")]
    if engine:
        worst = max(engine, key=lambda r: r.longest_tx_ms)
        out.append(
            {
                "target": "no bxbatch transaction longer than 1 s",
                "figure": f"longest {worst.longest_tx_ms:.0f} ms "
                f"({worst.job}, {worst.label}, scale {_scale_of(scales, worst)})",
                "met": worst.longest_tx_ms <= 1000,
            }
        )
    if big is not small:
        for job in jobs:
            b, s = _best(big.results, job), _best(small.results, job)
            if b and s and s.us_per_row > 0:
                ratio = b.us_per_row / s.us_per_row
                off_b, off_s = _find(big.results, job, "offset"), _find(small.results, job, "offset")
                offset_note = (
                    f"; OFFSET paging {off_b.us_per_row / off_s.us_per_row:.2f}x"
                    if off_b and off_s and off_s.us_per_row
                    else ""
                )
                out.append(
                    {
                        "target": f"{job}: bxbatch time per row, scale {big.scale} within 1.3x of scale {small.scale}",
                        "figure": f"{b.us_per_row:.1f} vs {s.us_per_row:.1f} us/row = {ratio:.2f}x{offset_note}",
                        "met": ratio <= 1.3,
                    }
                )
        rss_big = max((r.peak_rss_mb or 0 for r in big.results if r.method == "bxbatch"), default=0)
        rss_small = max((r.peak_rss_mb or 0 for r in small.results if r.method == "bxbatch"), default=0)
        if rss_big and rss_small:
            out.append(
                {
                    "target": "bxbatch peak RSS flat as the data grows (within 1.25x)",
                    "figure": f"{rss_small:.0f} MB at scale {small.scale}, {rss_big:.0f} MB at scale {big.scale} "
                    f"({big.synth['user_rows'] / max(small.synth['user_rows'], 1):.0f}x the rows)",
                    "met": rss_big <= 1.25 * rss_small,
                }
            )
    for r in big.results:
        if r.method == "throttled" and r.probe_p99_ms is not None and big.baseline_p99_ms:
            plain = next(
                (x for x in big.results if x.job == r.job and x.method == "bxbatch" and x.concurrency == r.concurrency),
                None,
            )
            cost = (
                f"; throughput {r.rows_per_s / plain.rows_per_s:.0%} of unthrottled c={plain.concurrency}"
                if plain
                else ""
            )
            plain_p99 = f", unthrottled {plain.probe_p99_ms:.2f} ms" if plain and plain.probe_p99_ms else ""
            out.append(
                {
                    "target": f"{r.job}: probe p99 with the throttle on within 2x of its baseline",
                    "figure": f"{r.probe_p99_ms:.2f} ms vs baseline {big.baseline_p99_ms:.2f} ms "
                    f"= {r.probe_p99_ms / big.baseline_p99_ms:.2f}x{plain_p99}{cost}",
                    "met": r.probe_p99_ms <= 2 * big.baseline_p99_ms,
                }
            )
    return out


def _scale_of(scales: list[ScaleResult], result: MethodResult) -> float:
    return next(s.scale for s in scales if any(r is result for r in s.results))


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    for s in report["scales"]:
        synth = s["synth"]
        lines += [
            f"### scale {s['scale']} (PostgreSQL {s['server_version']})",
            "",
            f"Install: {synth['user_rows']:,} user rows in {synth['user_tables']} user tables, "
            f"{synth['tables']:,} database_table rows, {synth['views']:,} views ({synth['grid_views']:,} grid), "
            f"{synth['members']:,} memberships; synth build {synth['seconds']:.1f} s. "
            f"Probe baseline (nothing else running): p50 {s['baseline_p50_ms']:.2f} ms, "
            f"p99 {s['baseline_p99_ms']:.2f} ms ({s['baseline_samples']} samples). "
            f"Load average before/after: {s['load_before'][0]:.2f} / {s['load_after'][0]:.2f}.",
            "",
            "| job | method | rows | seconds | rows/s | vs single | longest tx "
            "| probe p50 ms | probe p99 ms | peak RSS MB | check |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        singles = {r["job"]: r for r in s["results"] if r["method"] == "single"}
        for r in s["results"]:
            base = singles.get(r["job"])
            ratio = r["rows_per_s"] / base["rows_per_s"] if base and base["rows_per_s"] else None
            secs = f"{r['seconds']:,.2f}"
            if r["extrapolated"]:
                secs = f"~{secs} (ran {r['measured_seconds']:.0f} s, {r['rows']:,} rows)"
            if r["wall_seconds"] is not None:
                secs += f" (run {r['wall_seconds']:.2f})"
            lines.append(
                f"| {r['job']} | {r['label']} | {r['total_rows']:,} | {secs} | {_num(r['rows_per_s'])} | "
                f"{_num(ratio, 2)}x | {_num(r['longest_tx_ms'])} ms | {_num(r['probe_p50_ms'], 2)} | "
                f"{_num(r['probe_p99_ms'], 2)} | {_num(r['peak_rss_mb'])} | {r['check']} |"
            )
        lines.append("")
        for r in s["results"]:
            if r["method"] == "throttled":
                lines.append(
                    f"- throttled {r['job']}: decisions {r['extra'].get('throttle_events')}, "
                    f"lowest concurrency {r['extra'].get('min_concurrency')}, "
                    f"lowest chunk scale {r['extra'].get('min_chunk_scale')}"
                )
        lines.append("")
    lines += ["### targets", "", "| target | figure | met |", "| --- | --- | --- |"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {t['figure']} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def _csv(kind: type, text: str) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Options]:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.backfill",
        description="Run the three backfills every way (single statement, keyset, OFFSET, row by row, bxbatch) "
        "on one generated install per scale; print a table of rows/s, longest transaction and probe latency.",
    )
    p.add_argument("--scale", default="1", help="synth scale(s), comma-separated (e.g. 0.1,1); default 1")
    p.add_argument("--concurrency", default="1,2,4", help="bxbatch concurrencies, comma-separated; default 1,2,4")
    p.add_argument("--jobs", default=",".join(JOBS), help=f"jobs to run; default {','.join(JOBS)}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"methods besides single; default {','.join(METHODS)}")
    p.add_argument("--box-seconds", type=float, default=25.0, help="time box of OFFSET and row-by-row; default 25")
    p.add_argument("--chunk-rows", type=int, default=5_000, help="rows per keyset chunk / OFFSET page; default 5000")
    p.add_argument("--seed", type=int, default=42, help="synth seed; default 42")
    p.add_argument(
        "--permissions-shape",
        choices=["default", "founders"],
        default="default",
        help="synth shape (synth_base.SHAPES): founders = 0.3%% of the workspaces big (~330 members, ~340 tables), "
        "power users in most of them (~3.2 M permissions at scale 3); default: the usual install",
    )
    p.add_argument("--baseline-seconds", type=float, default=5.0, help="probe baseline duration; default 5")
    p.add_argument("--probe-interval-ms", type=float, default=20.0, help="pause between probes; default 20")
    p.add_argument(
        "--throttle-probe-interval",
        type=float,
        default=0.25,
        help="the throttled run's probe_interval_s (Settings.probe_interval_s); default 0.25",
    )
    p.add_argument("--dsn", help="a server where the benchmark may create and drop a database (default: embedded)")
    p.add_argument("--pg", choices=["embedded", "system"], default="embedded", help="throwaway server flavour")
    p.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    p.add_argument("--repeat", type=int, default=1, help="runs of single/keyset/bxbatch per job, fastest kept")
    p.add_argument(
        "--engine-settings",
        default="{}",
        help='JSON of Settings fields for every bxbatch run, e.g. {"target_chunk_ms": 500}',
    )
    p.add_argument("--throttle-settings", default="{}", help="JSON of Settings fields for the throttled run on top")
    p.add_argument("--wait-load", type=float, default=0.0, help="wait for a 1-minute load average below this")
    p.add_argument("--wait-max", type=float, default=900.0, help="... but at most this many seconds per scale")
    p.add_argument("--log-dir", type=Path, help="keep the bxbatch runs' logs (JSON lines) in this directory")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    p.add_argument("--markdown", type=Path, help="write the tables as markdown to this file")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    # internal: the child processes
    p.add_argument("--probe-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--probe-sql", help=argparse.SUPPRESS)
    p.add_argument("--engine-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--engine-job", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    jobs = _csv(str, a.jobs)
    methods = _csv(str, a.methods)
    bad = [j for j in jobs if j not in JOBS] + [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown job or method: {', '.join(bad)}")
    opts = Options(
        scales=_csv(float, a.scale),
        concurrency=_csv(int, a.concurrency),
        jobs=jobs,
        methods=methods,
        box_seconds=a.box_seconds,
        chunk_rows=a.chunk_rows,
        seed=a.seed,
        permissions_shape=a.permissions_shape,
        baseline_seconds=a.baseline_seconds,
        probe_interval_ms=a.probe_interval_ms,
        throttle_probe_interval_s=a.throttle_probe_interval,
        dsn=a.dsn,
        pg=a.pg,
        keep=a.keep,
        quiet=a.quiet,
        repeat=max(1, a.repeat),
        engine_settings=json.loads(a.engine_settings),
        throttle_settings=json.loads(a.throttle_settings),
        log_dir=a.log_dir,
        wait_load=a.wait_load,
        wait_max_s=a.wait_max,
    )
    return a, opts


def _quiet_logs() -> None:
    """The setup phases' events would drown the table: warnings and errors only, on stderr."""
    import logging

    import structlog

    from bxbatch.observe.log import configure

    configure("console", stream=sys.stderr)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    a, opts = parse_args(argv)
    if a.probe_child:
        asyncio.run(probe_child(a.dsn, a.probe_sql, a.probe_interval_ms))
        return 0
    if a.engine_child:
        asyncio.run(engine_child(a.dsn, a.engine_job, int(a.concurrency), a.engine_settings))
        return 0
    _quiet_logs()
    report = asyncio.run(run_benchmark(opts))
    text = markdown(report)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(report, indent=2, default=str))
    if a.markdown:
        a.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
