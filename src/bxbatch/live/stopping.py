"""Stopping is a state: the engine parts that can stop gracefully register here, and a stop request reaches them.

Whoever owns the process's signals (the CLI, ``bxbatch.cli.signals``) calls ``request_stop`` on
the first SIGINT/SIGTERM: every registered throttle stops handing out chunks (chunks in flight
commit or roll back) and the run ends ``interrupted`` with exit code 75. With nothing
registered (DDL, index builds) the caller cancels the main task instead. Library callers that
install no handlers never see a stop request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Stoppable(Protocol):
    def request_stop(self, reason: str) -> None: ...


_registered: list[Stoppable] = []
_stop_reason: str | None = None  # set by the first signal; a throttle registered later stops at once


@contextmanager
def registered(target: Stoppable) -> Iterator[None]:
    """While the engine works, a stop request stops ``target`` gracefully instead of cancelling."""
    _registered.append(target)
    if _stop_reason is not None:
        target.request_stop(_stop_reason)
    try:
        yield
    finally:
        _registered.remove(target)


def stop_requested() -> str | None:
    return _stop_reason


def request_stop(reason: str) -> bool:
    """Stop every registered engine part; False when none is at work (the caller cancels instead)."""
    global _stop_reason
    _stop_reason = reason
    for target in list(_registered):
        target.request_stop(reason)
    return bool(_registered)


def reset() -> None:
    """A new command starts: no stop requested."""
    global _stop_reason
    _stop_reason = None
