"""The console's pieces without a server: the log line renderer, human units, live knobs on the throttle."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from bxbatch.errors import UsageError
from bxbatch.live.control import parse_knobs
from bxbatch.live.throttle import Throttle
from bxbatch.observe.log import configure, human_bytes, human_count, human_duration, iso
from bxbatch.settings import Settings


@pytest.fixture(autouse=True)
def _restore_structlog() -> Any:
    yield
    structlog.reset_defaults()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _line(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], **event: Any) -> str:
    for key in ("NO_COLOR", "TERM"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = Tty()
    configure("console", stream=out)
    structlog.get_logger().info("phase_finished", **event)
    return out.getvalue()


def test_console_lines_are_short_human_and_coloured_only_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    event = {
        "phase": "backup",
        "bytes": 67108864,
        "seconds": 125.0,
        "at": 1796298100.27,
        "signals": ["lag 12 MB > 8 MB"],
        "detail": {"a": 1},
        "rows": 412345,
    }
    coloured = _line(monkeypatch, {}, **event)
    assert "\x1b[" in coloured
    plain = _line(monkeypatch, {"NO_COLOR": "1"}, **event)
    assert "\x1b[" not in plain
    assert plain == plain.strip() + "\n" and plain.count("\n") == 1
    for shown in ("bytes=64.0 MiB", "seconds=2m05s", "at=2026-", 'signals=["lag 12 MB > 8 MB"]', "rows=412,345"):
        assert shown in plain, (shown, plain)
    assert "{'" not in plain and "1796298100" not in plain  # no Python repr, no epoch
    assert _line(monkeypatch, {"TERM": "dumb"}, **event).count("\x1b[") == 0


def test_human_units() -> None:
    assert human_bytes(4487614) == "4.3 MiB" and human_bytes(512) == "512 B"
    assert human_duration(0.309) == "309 ms" and human_duration(12.34) == "12.3s"
    assert human_duration(130) == "2m10s" and human_duration(7500) == "2h05m" and human_duration(None) == "-"
    assert human_count(412_000) == "412k" and human_count(3000) == "3k" and human_count(1_500_000) == "1.5M"
    assert iso(datetime(2026, 12, 1, 23, 26, 48, 123, tzinfo=UTC)) == "2026-12-01T23:26:48Z"


def test_knobs_are_validated_against_the_run_never_clamped() -> None:
    run = {"concurrency": 4, "throttle": True, "min_chunk_rows": 100, "max_chunk_rows": 100_000}
    assert parse_knobs(["concurrency=2", "throttle=off", "rate=500", "chunk-ms=50"], run) == {
        "concurrency": 2,
        "throttle": False,
        "max_rows_per_second": 500.0,
        "target_chunk_ms": 50,
    }
    for bad, words in (
        ("concurrency=99", "more than the 4 workers"),
        ("concurrency=0", "below its minimum"),
        ("critical_factor=0.5", "below its minimum"),
        ("bogus=1", "cannot set"),
        ("concurrency", "cannot set"),
        ("throttle=maybe", "not a valid bool"),
        ("target_chunk_ms=fast", "not a valid int"),
    ):
        with pytest.raises(UsageError, match=words):
            parse_knobs([bad], run)
    with pytest.raises(UsageError, match="above max_chunk_rows"):
        parse_knobs(["min_chunk_rows=500"], run, {"max_chunk_rows": 200})  # an earlier `set` counts
    with pytest.raises(UsageError, match="--no-throttle"):
        parse_knobs(["throttle=on"], {**run, "throttle": False})


def test_knobs_apply_to_the_throttle_and_the_rate_is_shared_by_the_run() -> None:
    throttle = Throttle(Settings(concurrency=4, max_rows_per_second=1000))
    throttle.apply_knobs({"concurrency": 2, "max_rows_per_second": 600, "target_chunk_ms": 50}, "set by ops")
    assert throttle.max_concurrency == 2 and throttle.settings.target_chunk_ms == 50
    assert throttle.state()["rate_limit"] == 600 and throttle._rate == 600  # this process's share
    throttle.set_processes(3)  # two joiners: each process takes a third of the run's limit
    assert throttle._rate == 200 and throttle.state()["rate_limit"] == 600
    assert throttle.wait_reason(3) == "held (concurrency 2)"
    assert throttle.apply_knobs({"concurrency": 2}, "again") is None  # unchanged: no decision
    throttle.apply_knobs({"throttle": False}, "set")
    assert throttle.observe("health", []) is None and not throttle.enabled
