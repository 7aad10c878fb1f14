"""Many user tables: every command's time, memory and lock footprint at 16,000 / 50,000 / 100,000 user tables.

For each size, on a throwaway server with the default settings bxbatch's embedded server uses
(``--pg``) or on an existing one (``--dsn``, a role that may create databases): a synthetic install
with that many ``database_table_<id>`` tables: the base tables from ``synth.build_install`` (set
based, scaled so that ``database_table`` has enough rows), then the user tables by a server-side
procedure on ``--gen-connections`` connections at once (a commit every 100 tables): one giant
(``--giant-rows``, 100,000), 20 large (a twentieth of it), every tenth empty, the rest 1-5 rows. Then the real CLI as an
operator runs it, with default flags: ``preflight``, ``plan``, ``run`` (its phases timed from the ledger), ``status``,
``validate``, ``rollback --yes``. For each command: seconds, peak RSS of the bxbatch process
(``wait4``), and the peak number of relation locks any one bxbatch backend held (``pg_locks``
sampled every ``--lock-interval`` seconds), against the bound of the lock budget (``locks.py``).
Per 1,000 user tables: the trigger phase and validation (the run's validate phase, and the
``validate`` command).

Heavy at 100,000 tables (catalog of ~600,000 relations; tens of minutes): out of CI; the suite runs
it at a small size (tests/integration/test_benchmark_smoke.py).

    .venv/bin/python benchmarks/many_tables.py [--tables 16000 50000 100000] [--pg embedded] [--extra --concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bxbatch.db.locks import lock_budget
from bxbatch.devtools.embedded import start_server
from bxbatch.migrations.baserow_expansion.synth import SynthSpec, build_install
from bxbatch.settings import Settings

BXBATCH = str(Path(sys.executable).with_name("bxbatch"))
COMMANDS = ("preflight", "plan", "run", "status", "validate", "rollback")


LARGE_TABLES = 20

# One user table per id: Baserow's columns, its primary field, rows, and Baserow's order index.
GEN_PROCEDURE = r"""
CREATE OR REPLACE PROCEDURE public.bxbatch_bench_user_tables(ids int[], fields int[], nrows int[])
LANGUAGE plpgsql AS $$
DECLARE
    i int;
    t text;
BEGIN
    FOR i IN 1 .. cardinality(ids) LOOP
        t := 'database_table_' || ids[i];
        EXECUTE format('CREATE TABLE public.%I (id serial PRIMARY KEY, created_on timestamptz, '
                       'updated_on timestamptz, trashed boolean NOT NULL DEFAULT false, "order" numeric(40,20), '
                       '%I text)', t, 'field_' || fields[i]);
        IF nrows[i] > 0 THEN
            EXECUTE format('INSERT INTO public.%I (created_on, updated_on, trashed, "order", %I) '
                           'SELECT timestamptz ''2020-01-01'' + g * interval ''1 minute'', NULL, g %% 33 = 5, g, '
                           '''row '' || g FROM generate_series(1, %s) g',
                           t, 'field_' || fields[i], nrows[i]);
        END IF;
        EXECUTE format('CREATE INDEX %I ON public.%I ("order", id)', 'tbl_order_id_' || ids[i] || '_idx', t);
        IF i % 100 = 0 THEN
            COMMIT;
        END IF;
    END LOOP;
END
$$
"""


def rows_for(k: int, giant_rows: int) -> int:
    """Rows of the k-th generated user table: one giant, 20 large (1/20 of it), every tenth empty, the rest 1-5."""
    if k == 0:
        return giant_rows
    if k <= LARGE_TABLES:
        return giant_rows // 20
    return 0 if k % 10 == 0 else 1 + (k * 7919) % 5


async def generate(dsn: str, n: int, seed: int, connections: int, giant_rows: int) -> dict[str, Any]:
    """The base tables (synth, scaled to hold ``n`` user tables' rows) and ``n`` user tables."""
    t0 = time.monotonic()
    scale = max(0.01, n * 1.1 / 20_700)  # synth makes ~20,700 database_table rows at scale 1 (~4.5% deleted)
    conn = await asyncpg.connect(dsn)
    try:
        await build_install(conn, SynthSpec(scale=scale, seed=seed, user_tables=0))
        base_s = time.monotonic() - t0
        rows = await conn.fetch(
            """SELECT t.id, min(f.id) AS field FROM database_table t
               JOIN database_field f ON f.table_id = t.id AND f."primary"
               WHERE to_regclass('public.database_table_' || t.id) IS NULL
               GROUP BY t.id ORDER BY hashint4(t.id + $2), t.id LIMIT $1""",
            n,
            seed,
        )
        if len(rows) < n:
            raise RuntimeError(f"synth made only {len(rows)} database_table rows for {n} user tables")
        await conn.execute(GEN_PROCEDURE)
    finally:
        await conn.close()
    tables = [(int(r["id"]), int(r["field"]), rows_for(k, giant_rows)) for k, r in enumerate(rows)]

    async def one(part: list[tuple[int, int, int]]) -> None:
        c = await asyncpg.connect(dsn)
        try:
            arrays = ", ".join("'{" + ",".join(str(t[i]) for t in part) + "}'::int[]" for i in range(3))
            await c.execute(f"CALL public.bxbatch_bench_user_tables({arrays})")  # simple protocol: it commits
        finally:
            await c.close()

    await asyncio.gather(*(one(tables[i::connections]) for i in range(connections) if tables[i::connections]))
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP PROCEDURE public.bxbatch_bench_user_tables(int[], int[], int[])")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "base_seconds": round(base_s, 1),
        "base_scale": round(scale, 3),
        "user_rows": sum(t[2] for t in tables),
        "empty_tables": sum(1 for t in tables if t[2] == 0),
    }


@dataclass
class Options:
    tables: list[int]
    seed: int = 10
    gen_connections: int = 3
    giant_rows: int = 100_000
    pg: str = "embedded"
    dsn: str | None = None  # an existing server's admin DSN instead of a throwaway one
    lock_interval: float = 0.05
    json_path: str | None = None
    quiet: bool = False
    extra: list[str] = field(default_factory=list)  # flags for run/validate (e.g. --concurrency 2)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, nargs="+", default=[16_000, 50_000, 100_000])
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--gen-connections", type=int, default=3, help="connections generating user tables")
    parser.add_argument("--giant-rows", type=int, default=100_000, help="rows of the giant table (20 have 1/20)")
    parser.add_argument("--pg", default="embedded", choices=["embedded", "system"])
    parser.add_argument("--dsn", default=None, help="admin DSN of an existing server (default: a throwaway one)")
    parser.add_argument("--lock-interval", type=float, default=0.05)
    parser.add_argument("--json", dest="json_path", default=None, help="write the figures here")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="flags for run and validate")
    args = parser.parse_args(argv)
    return Options(
        tables=args.tables,
        seed=args.seed,
        gen_connections=args.gen_connections,
        giant_rows=args.giant_rows,
        pg=args.pg,
        dsn=args.dsn,
        lock_interval=args.lock_interval,
        json_path=args.json_path,
        quiet=args.quiet,
        extra=list(args.extra),
    )


def with_database(dsn: str, database: str) -> str:
    split = urlsplit(dsn)
    return urlunsplit((split.scheme, split.netloc, "/" + database, split.query, split.fragment))


class LockSampler:
    """Peak relation locks held by one bxbatch backend, sampled from pg_locks on a connection of its own."""

    SQL = """SELECT count(*) AS n, max(a.application_name) AS app
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'relation' AND a.application_name LIKE 'bxbatch%'
             GROUP BY l.pid ORDER BY n DESC LIMIT 1"""

    def __init__(self, dsn: str, interval: float) -> None:
        self.dsn, self.interval = dsn, interval
        self.peak, self.peak_app, self.samples = 0, "", 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LockSampler:
        self.conn = await asyncpg.connect(self.dsn)
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.conn.close()

    def reset(self) -> None:
        self.peak, self.peak_app, self.samples = 0, "", 0

    async def _loop(self) -> None:
        while True:
            row = await self.conn.fetchrow(self.SQL)
            self.samples += 1
            if row is not None and row["n"] > self.peak:
                self.peak, self.peak_app = int(row["n"]), str(row["app"])
            await asyncio.sleep(self.interval)


def _spawn_and_wait(args: list[str]) -> dict[str, Any]:
    """One bxbatch command as an operator runs it: exit code, seconds, its own peak RSS (wait4), output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BXBATCH_", "PG")) and k != "DATABASE_URL"}
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bxbatch-many-{os.getpid()}.out"
    err_path = out_path.with_suffix(".err")
    t0 = time.monotonic()
    with out_path.open("w") as out, err_path.open("w") as err:
        pid = os.posix_spawn(BXBATCH, [BXBATCH, *args], env, file_actions=_redirect(out.fileno(), err.fileno()))
        _pid, status, usage = os.wait4(pid, 0)
    seconds = time.monotonic() - t0
    result = {
        "exit": os.waitstatus_to_exitcode(status),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return result


def _redirect(out_fd: int, err_fd: int) -> list[tuple[Any, ...]]:
    return [(os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, err_fd, 2)]


async def command(name: str, args: list[str], sampler: LockSampler, quiet: bool) -> dict[str, Any]:
    sampler.reset()
    result = await asyncio.to_thread(_spawn_and_wait, args)
    await asyncio.sleep(2 * sampler.interval)
    result.update(peak_locks=sampler.peak, peak_locks_backend=sampler.peak_app, lock_samples=sampler.samples)
    result["loadavg_after"] = [round(x, 1) for x in os.getloadavg()]  # timings depend on the machine's load
    if not quiet:
        print(
            f"  {name:<10} exit {result['exit']:>3}  {result['seconds']:>9.1f}s  rss {result['peak_rss_mb']:>7.1f} MB  "
            f"peak locks {result['peak_locks']:>5} ({result['peak_locks_backend']})  "
            f"at {time.strftime('%H:%M:%S')} load {result['loadavg_after']}",
            flush=True,
        )
    return result


async def measure_size(admin_dsn: str, n: int, opts: Options) -> dict[str, Any]:
    name = f"many_{n}_{os.getpid()}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    dsn = with_database(admin_dsn, name)
    out: dict[str, Any] = {"user_tables": n}
    try:
        out["synth"] = await generate(dsn, n, opts.seed, opts.gen_connections, opts.giant_rows)
        conn = await asyncpg.connect(dsn)
        try:
            settings = Settings(dsn=dsn, **_settings_from(opts.extra))
            budget = await lock_budget(conn, settings)
            out["budget"] = budget.as_dict()
            out["database_mb"] = round(int(await conn.fetchval("SELECT pg_database_size(current_database())")) / 1e6)
        finally:
            await conn.close()
        if not opts.quiet:
            print(
                f"{time.strftime('%H:%M:%S')} load {[round(x, 1) for x in os.getloadavg()]}: "
                f"{n} user tables: synth {out['synth']['seconds']}s ({out['synth']['user_rows']} rows), "
                f"bound {budget.per_transaction} locks per transaction, groups of {budget.group_size}",
                flush=True,
            )
        common = ["--dsn", dsn, "--log-format", "json"]
        argv = {
            "preflight": ["preflight", *common],
            "plan": ["plan", *common],
            "run": ["run", *common, "--no-progress", *opts.extra],
            "status": ["status", *common],
            "validate": ["validate", *common, *opts.extra],
            "rollback": ["rollback", "--yes", *common, "--no-progress"],
        }
        results: dict[str, Any] = {}
        async with LockSampler(admin_dsn, opts.lock_interval) as sampler:
            for cmd in COMMANDS:
                results[cmd] = await command(cmd, argv[cmd], sampler, opts.quiet)
                if cmd == "run":
                    out["phases"] = await _phases(dsn)
                    if not opts.quiet:  # printed now: a long benchmark may be stopped before its summary
                        print("  phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in out["phases"].items()), flush=True)
        out["validation_passed"] = "validation: passed" in results["validate"]["stdout"]
        for r in results.values():
            r["stderr_tail"] = [line for line in r.pop("stderr").splitlines() if "error" in line.lower()][-3:]
            r.pop("stdout")
        out["commands"] = results
        per_k = n / 1000
        phases = out.get("phases", {})
        out["per_1000_tables"] = {
            "triggers_s": round(phases.get("triggers", 0.0) / per_k, 3),
            "validate_phase_s": round(phases.get("validate", 0.0) / per_k, 3),
            "validate_command_s": round(results["validate"]["seconds"] / per_k, 3),
        }
        out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results.values())
        out["peak_locks"] = max(r["peak_locks"] for r in results.values())
        out["below_bound"] = out["peak_locks"] < budget.per_transaction
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.close()
    return out


def _settings_from(extra: list[str]) -> dict[str, Any]:
    """The Settings fields the lock budget reads, from the --extra flags (the CLI parses the rest)."""
    fields = {"--concurrency": "concurrency", "-c": "concurrency", "--index-concurrency": "index_concurrency"}
    fields["--table-group-size"] = "table_group_size"
    out: dict[str, Any] = {}
    for flag, value in itertools.pairwise(extra):
        if flag in fields:
            out[fields[flag]] = int(value)
    return out


async def _phases(dsn: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, (detail ->> 'seconds')::float8 AS s FROM bxbatch.phase "
            "WHERE run_id = (SELECT max(id) FROM bxbatch.run) ORDER BY started_at"
        )
        return {str(r["name"]): round(float(r["s"] or 0.0), 2) for r in rows}
    finally:
        await conn.close()


async def run_benchmark(opts: Options) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "extra": opts.extra,
        "sizes": [],
    }
    for n in opts.tables:
        server = None if opts.dsn else start_server(opts.pg)
        try:
            admin_dsn = opts.dsn or (server.dsn() if server else "")
            conn = await asyncpg.connect(admin_dsn)
            report["server_version"] = await conn.fetchval("SHOW server_version")
            await conn.close()
            size = await measure_size(admin_dsn, n, opts)
        finally:
            if server is not None:
                server.close()
        size["loadavg_after"] = os.getloadavg()
        report["sizes"].append(size)
    sizes = report["sizes"]
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        report["ratios_last_vs_first"] = {
            key: round(last["per_1000_tables"][key] / first["per_1000_tables"][key], 2)
            if first["per_1000_tables"][key]
            else None
            for key in first["per_1000_tables"]
        } | {"peak_rss": round(last["peak_rss_mb"] / first["peak_rss_mb"], 2)}
    return report


def print_summary(report: dict[str, Any]) -> None:
    print(f"\nPostgreSQL {report.get('server_version')}, extra flags {report['extra']}")
    head = f"{'tables':>8} {'synth s':>8} " + " ".join(f"{c:>10}" for c in COMMANDS)
    print(head + f" {'trig/1k':>8} {'val/1k':>8} {'rss MB':>7} {'locks':>6} {'bound':>6}")
    for s in report["sizes"]:
        cmds = " ".join(f"{s['commands'][c]['seconds']:>9.1f}s" for c in COMMANDS)
        per = s["per_1000_tables"]
        print(
            f"{s['user_tables']:>8} {s['synth']['seconds']:>8.1f} {cmds} {per['triggers_s']:>8.3f} "
            f"{per['validate_phase_s']:>8.3f} {s['peak_rss_mb']:>7.1f} {s['peak_locks']:>6} "
            f"{s['budget']['locks_per_transaction']:>6}"
        )
        print(f"{'':>8} phases: " + ", ".join(f"{k} {v:.1f}s" for k, v in s.get("phases", {}).items()))
    if "ratios_last_vs_first" in report:
        print("last size vs first, per 1,000 tables (and peak RSS):", report["ratios_last_vs_first"])


def main() -> None:
    opts = parse_args()
    report = asyncio.run(run_benchmark(opts))
    print_summary(report)
    if opts.json_path:
        Path(opts.json_path).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
