"""structlog configuration: a compact console on a terminal, JSON elsewhere, secrets never printed.

The console renderer writes one short line per event (ISO time, level, event, ``key=value`` in
human units: MiB, durations, ISO dates, JSON for lists and dicts, never a Python repr) through
``tqdm.write``, so a log line never lands in the middle of a progress bar. Colours only on a
terminal and only without ``NO_COLOR`` (https://no-color.org) or ``TERM=dumb``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, date, datetime
from typing import Any

import structlog

from bxbatch.db.dsn import scrub

_SECRET_KEYS = {"password", "passwd", "pgpassword", "secret"}

__all__ = ["configure", "get_logger", "scrub"]

_LEVEL_COLOURS = {"debug": "\x1b[2m", "info": "\x1b[32m", "warning": "\x1b[33;1m", "error": "\x1b[31;1m"}
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_KEY = "\x1b[36m"
_MAX_VALUE = 160  # longer values (a long error, a big list) are cut on the console; JSON keeps them whole


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = "***"
        elif isinstance(value, str):
            event[key] = scrub(value)
        elif isinstance(value, BaseException):
            event[key] = scrub(f"{type(value).__name__}: {value}")
    return event


def colour_wanted(stream: Any) -> bool:
    """Colours only on a terminal, and never with NO_COLOR set (to anything) or TERM=dumb."""
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


# --- human units ---------------------------------------------------------------------------------
def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_duration(seconds: float | None) -> str:
    """2h05m, 3m07s, 12.3s, 45 ms."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def human_count(n: float) -> str:
    """412k, 1.2M, 980."""
    n = float(n)
    for suffix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            value = n / size
            text = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"
            return text + suffix
    return f"{n:.0f}"


def iso(value: datetime | date | float) -> str:
    """An ISO 8601 timestamp in UTC, to the second (epoch seconds accepted)."""
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(microsecond=0, tzinfo=None).isoformat() + "Z"
    return value.isoformat()


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        text = str(value).lower() if value is not None else "-"
    elif isinstance(value, int | float) and (key == "bytes" or key.endswith("_bytes")):
        text = human_bytes(float(value))
    elif isinstance(value, int | float) and key == "at":
        text = iso(float(value))
    elif isinstance(value, int | float) and (key in ("seconds", "elapsed") or key.endswith(("_seconds", "_s"))):
        text = human_duration(float(value))
    elif isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        text = f"{value:,}" if abs(value) >= 10_000 else str(value)
    elif isinstance(value, datetime | date):
        text = iso(value)
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
        if " " in text or not text:
            text = json.dumps(text)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


class ConsoleRenderer:
    """``2026-12-01T23:26:48Z info  phase_finished phase=schema seconds=0.1s files_applied=9``."""

    def __init__(self, colours: bool) -> None:
        self.colours = colours

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        event = dict(event)
        level = str(event.pop("level", "info"))
        stamp = event.pop("timestamp", None)
        name = str(event.pop("event", ""))
        message = event.pop("message", None)  # a ready human sentence (progress heartbeats)
        event.pop("run_id", None)  # every line of a run would repeat it: the first line names the run
        exc = event.pop("exception", None)
        parts = [f"{k}={_value(k, v)}" for k, v in event.items() if v is not None]
        head = f"{stamp or ''} {level:<7} "
        body = f"{name}" + (f" {message}" if message else "") + ("  " + " ".join(parts) if parts else "")
        if self.colours:
            colour = _LEVEL_COLOURS.get(level, "")
            head = f"{_DIM}{stamp or ''}{_RESET} {colour}{level:<7}{_RESET} "
            body = f"\x1b[1m{name}{_RESET}" + (f" {message}" if message else "")
            body += (
                ("  " + " ".join(f"{_KEY}{p.split('=', 1)[0]}{_RESET}={p.split('=', 1)[1]}" for p in parts))
                if parts
                else ""
            )
        return head + body + (f"\n{exc}" if exc else "")


class _BarSafeLogger:
    """Writes each line with ``tqdm.write``: progress bars are cleared first and redrawn after."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def msg(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=self._file)
        self._file.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class _BarSafeLoggerFactory:
    def __init__(self, file: Any) -> None:
        self._file = file

    def __call__(self, *_args: Any) -> _BarSafeLogger:
        return _BarSafeLogger(self._file)


def _stamp_console(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["timestamp"] = iso(datetime.now(UTC))
    return event


def configure(log_format: str = "auto", *, debug: bool = False, stream: Any = None) -> None:
    """Configure structlog once per process. Logs go to stderr so stdout stays for reports."""
    out = stream or sys.stderr
    if log_format == "auto":
        log_format = "console" if out.isatty() else "json"
    renderer: Any
    stamper: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(default=str)
        stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    else:
        renderer = ConsoleRenderer(colour_wanted(out))
        stamper = _stamp_console
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamper,
            _redact,
            structlog.processors.format_exc_info if debug else _drop_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if debug else logging.INFO),
        logger_factory=_BarSafeLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def _drop_exc_info(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("exc_info", None)
    return event


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
