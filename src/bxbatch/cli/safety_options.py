"""The live-safety options of `run` and `resume` (timeouts, retries, health thresholds, probe, rate limit).

One option group (cli_options.settings_options), added to both commands by ``@safety_options``.
Every option has an env var.
"""

from __future__ import annotations

from typing import Any

import typer

from bxbatch.cli.options import settings_options


def _opt(flag: str, env: str, help_: str, **kw: Any) -> Any:
    return typer.Option(flag, envvar=env, help=help_, rich_help_panel="Live safety", **kw)


# (Settings field, type, default, typer.Option)
SAFETY_OPTIONS: list[tuple[str, Any, Any, Any]] = [
    (
        "idle_in_transaction_timeout_ms",
        int,
        60_000,
        _opt(
            "--idle-in-transaction-timeout-ms",
            "BXBATCH_IDLE_IN_TRANSACTION_TIMEOUT_MS",
            "idle_in_transaction_session_timeout of every chunk transaction.",
            min=1,
        ),
    ),
    (
        "max_attempts",
        int,
        8,
        _opt(
            "--max-attempts",
            "BXBATCH_MAX_ATTEMPTS",
            "Tries per chunk on lock/statement timeouts, deadlocks and lost connections (exponential "
            "backoff with jitter) before the chunk is given up.",
            min=1,
        ),
    ),
    (
        "throttle",
        bool,
        True,
        _opt(
            "--throttle/--no-throttle",
            "BXBATCH_THROTTLE",
            "Poll health signals and cut concurrency and chunk size on a bad one, pause on a critical one.",
        ),
    ),
    (
        "ramp_up",
        bool,
        False,
        _opt(
            "--ramp-up/--no-ramp-up",
            "BXBATCH_RAMP_UP",
            "Slow start: begin with one worker in chunks 1/16 of the time, double that each second, then "
            "add a worker each second, while every signal stays clear (full speed in about 4 + "
            "--concurrency seconds), instead of starting at --concurrency: never a burst at the start.",
        ),
    ),
    (
        "max_blocked_sessions",
        int,
        0,
        _opt(
            "--max-blocked-sessions",
            "BXBATCH_MAX_BLOCKED_SESSIONS",
            "Sessions waiting on locks held by bxbatch above which the throttle cuts.",
            min=0,
        ),
    ),
    (
        "max_replication_lag_bytes",
        int,
        64 * 1024 * 1024,
        _opt(
            "--max-replication-lag-bytes",
            "BXBATCH_MAX_REPLICATION_LAG_BYTES",
            "Standby replay lag (pg_stat_replication) above which the throttle cuts.",
            min=1,
        ),
    ),
    (
        "max_replication_lag_s",
        float,
        30.0,
        _opt(
            "--max-replication-lag-s",
            "BXBATCH_MAX_REPLICATION_LAG_S",
            "Standby replay lag in seconds above which the throttle cuts.",
            min=0.001,
        ),
    ),
    (
        "max_wal_bytes_per_second",
        int,
        0,
        _opt(
            "--max-wal-bytes-per-second",
            "BXBATCH_MAX_WAL_BYTES_PER_SECOND",
            "WAL generation rate above which the throttle cuts (0: not watched).",
            min=0,
        ),
    ),
    (
        "max_xmin_age_s",
        float,
        900.0,
        _opt(
            "--max-xmin-age-s",
            "BXBATCH_MAX_XMIN_AGE_S",
            "Age of the oldest other open transaction (it holds back vacuum) above which the throttle cuts.",
            min=1.0,
        ),
    ),
    (
        "max_active_backends",
        int,
        0,
        _opt(
            "--max-active-backends",
            "BXBATCH_MAX_ACTIVE_BACKENDS",
            "Other active client backends above which the throttle cuts (0: half of max_connections).",
            min=0,
        ),
    ),
    (
        "critical_factor",
        float,
        2.0,
        _opt(
            "--critical-factor",
            "BXBATCH_CRITICAL_FACTOR",
            "A signal this many times over its threshold pauses the run until it clears.",
            min=1.0,
        ),
    ),
    (
        "probe_sql",
        str | None,
        None,
        _opt(
            "--probe-sql",
            "BXBATCH_PROBE_SQL",
            "An application query run about every second; its latency is compared with its own baseline "
            "measured before the run.",
            show_default=False,
        ),
    ),
    (
        "probe_interval_s",
        float,
        1.0,
        _opt(
            "--probe-interval",
            "BXBATCH_PROBE_INTERVAL",
            "Seconds between two runs of --probe-sql. Shorter sees rarer slow probes (the latency tail) "
            "at the cost of more probe queries; 0.05 with --probe-min-ms 0.3 holds a sub-millisecond "
            "probe's p99 within 2x of its baseline (benchmarks/RESULTS.md).",
            min=0.01,
        ),
    ),
    (
        "probe_max_ratio",
        float,
        2.0,
        _opt(
            "--probe-max-ratio",
            "BXBATCH_PROBE_MAX_RATIO",
            "Probe latency above this multiple of its baseline (and --probe-min-ms above it) cuts.",
            min=1.0,
        ),
    ),
    (
        "probe_min_ms",
        float,
        5.0,
        _opt(
            "--probe-min-ms",
            "BXBATCH_PROBE_MIN_MS",
            "Noise floor: the probe is slow only when this much above its baseline too.",
            min=0.0,
        ),
    ),
    (
        "max_rows_per_second",
        float,
        0.0,
        _opt(
            "--max-rows-per-second",
            "BXBATCH_MAX_ROWS_PER_SECOND",
            "Plain rate limit on rows written by this process (0: none).",
            min=0.0,
        ),
    ),
    (
        "stop_grace_s",
        float,
        30.0,
        _opt(
            "--stop-grace-s",
            "BXBATCH_STOP_GRACE_S",
            "After the first SIGINT/SIGTERM, chunks in flight get this long to commit or roll back.",
            min=0.0,
        ),
    ),
]

safety_options = settings_options(SAFETY_OPTIONS)
